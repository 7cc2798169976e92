"""Typed Linux facts, parsed from the collector's JSON (guest_scripts/linux/collect.sh).

Every field that the collector could not determine is ``None`` and has a reason in
``LinuxFacts.unknown`` (field name -> reason). Checks treat ``None`` as "cannot
tell", never as "fine".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from guestprep.facts.efi import EfiFacts  # noqa: F401  (resolvable for get_type_hints)

LINUX_FACTS_SCHEMA = "guestprep.linux.facts/1"


@dataclass
class Kernel:
    version: str                      # "6.1.0-18-amd64"
    running: bool = False
    initramfs: str | None = None      # "/boot/initrd.img-6.1.0-18-amd64"
    initramfs_size: int | None = None
    initramfs_modules: set[str] | None = None  # module names found in the image; None = could not list
    builtin_modules: set[str] = field(default_factory=set)  # from modules.builtin
    available_modules: set[str] = field(default_factory=set)  # virtio modules present under /lib/modules/<v>
    config_virtio: dict[str, str] = field(default_factory=dict)  # CONFIG_VIRTIO_*=y/m from /boot/config-<v>


@dataclass
class FstabEntry:
    spec: str
    mountpoint: str
    fstype: str
    options: str = ""
    source: str = "/etc/fstab"


@dataclass
class CrypttabEntry:
    name: str
    device: str
    keyfile: str = ""
    options: str = ""


@dataclass
class Partition:
    name: str                  # "sda1"
    start_sector: int | None   # in 512-byte units (sysfs 'start')
    size_sectors: int | None
    fstype: str | None = None
    uuid: str | None = None
    partuuid: str | None = None
    mountpoint: str | None = None


@dataclass
class BlockDevice:
    name: str                      # "sda"
    size_sectors: int | None
    logical_sector_size: int | None
    physical_sector_size: int | None
    rotational: bool | None = None
    model: str | None = None
    vendor: str | None = None
    driver: str | None = None      # vmw_pvscsi, mptspi, virtio_scsi, ahci ...
    partitions: list[Partition] = field(default_factory=list)


@dataclass
class NetConfig:
    """One network configuration file and the interface names / MACs it binds to."""

    path: str
    kind: str                      # netplan | networkmanager | ifcfg | ifupdown | networkd
    interfaces: list[str] = field(default_factory=list)   # names the config is bound to
    macs: list[str] = field(default_factory=list)         # MACs it matches (bound by MAC: survives)
    static: bool = False


@dataclass
class NetInterface:
    name: str
    mac: str | None
    driver: str | None = None      # vmxnet3, e1000, virtio_net
    addresses: list[str] = field(default_factory=list)
    altnames: list[str] = field(default_factory=list)


@dataclass
class Mount:
    path: str
    device: str
    fstype: str
    free_bytes: int | None
    total_bytes: int | None


@dataclass
class LinuxFacts:
    hostname: str
    distro_id: str                 # debian, ubuntu, rhel, rocky, sles, arch ...
    distro_like: list[str]
    distro_version: str
    distro_name: str
    family: str                    # debian | rhel | suse | arch | other
    arch: str
    running_kernel: str
    kernels: list[Kernel]
    initramfs_generator: str | None   # dracut | initramfs-tools | mkinitcpio | mkinitrd | None
    boot_mode: str                    # uefi | bios
    secure_boot: bool | None
    bootloader: str | None            # grub2 | grub | systemd-boot | extlinux | None
    bootloader_config: str | None     # /boot/grub/grub.cfg ...
    cmdline: str
    cmdline_root: str | None
    cmdline_resume: str | None
    default_grub_cmdline: str | None  # GRUB_CMDLINE_LINUX(+_DEFAULT) from /etc/default/grub
    fstab: list[FstabEntry]
    crypttab: list[CrypttabEntry]
    block_devices: list[BlockDevice]
    mounts: list[Mount]
    root_fstype: str | None
    lvm_devices_file: str | None      # path when /etc/lvm/devices/system.devices exists
    lvm_devices_entries: list[str] | None
    lvm_use_devicesfile: bool | None
    lvm_filter: str | None
    net_configs: list[NetConfig]
    interfaces: list[NetInterface]
    qemu_guest_agent: dict[str, Any]  # {"installed": bool, "enabled": bool|None, "active": bool|None}
    vmware_tools: dict[str, Any]      # {"open_vm_tools": bool, "vmware_tools": bool, "version": str|None}
    package_manager: str | None       # apt | dnf | yum | zypper | pacman | apk | None
    init_system: str | None           # systemd | sysvinit | openrc | None
    virtualization: str | None        # vmware | kvm | none ...
    is_root: bool
    sudo: str | None                  # "root" | "nopasswd" | "password" | "no" | None
    nic_pins: dict[str, str] = field(default_factory=dict)  # interface name -> MAC it is pinned to (.link/udev)
    # root=/resume= values in the bootloader config (what the next boot uses); None when unreadable
    bootloader_args: list[str] | None = None
    guestprep_units: dict[str, str] = field(default_factory=dict)  # /etc/systemd/system/guestprep-*.service -> content
    unknown: dict[str, str] = field(default_factory=dict)  # field -> why it is unknown
    raw_schema: str = LINUX_FACTS_SCHEMA
    efi: "EfiFacts | None" = None     # ESP, loaders, NVRAM entries (None: older collector without "efi")

    def mount(self, path: str) -> Mount | None:
        return next((m for m in self.mounts if m.path == path), None)
