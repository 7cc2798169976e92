"""Can the guest's kernels and initramfs images reach a VirtIO root disk?"""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, error, fail, ok
from guestprep.checks.registry import check
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Severity, Status

# The root disk on Proxmox sits behind virtio-scsi (or virtio-blk); both need virtio_pci.
NEEDED_IN_INITRAMFS = {"virtio_scsi", "virtio_pci"}
CONFIG_FOR = {
    "virtio_scsi": "CONFIG_SCSI_VIRTIO",
    "virtio_blk": "CONFIG_VIRTIO_BLK",
    "virtio_pci": "CONFIG_VIRTIO_PCI",
    "virtio_net": "CONFIG_VIRTIO_NET",
}


def _builtin(k, module: str) -> bool:
    return module in k.builtin_modules or k.config_virtio.get(CONFIG_FOR.get(module, "")) == "y"


def cannot_tell(message: str, resource: str = "", **evidence) -> Outcome:
    """The facts cannot decide this check: status unknown (not a blocker, not a pass)."""
    return Outcome(Status.UNKNOWN, f"cannot tell: {message}", resource, evidence)


@check(
    id="LNX-INITRAMFS-VIRTIO", severity=Severity.BLOCKER, os="linux", phase="any",
    title="Every installed kernel's initramfs can reach a VirtIO root disk",
    rationale="A host-only initramfs built on VMware carries vmw_pvscsi/mptspi but no virtio_scsi: the first "
              "boot on Proxmox stops in the initramfs emergency shell (root not found).",
    remediation="Run `guestprep prepare --apply`: it adds virtio_scsi/virtio_blk/virtio_pci to the generator's "
                "configuration and rebuilds (and verifies) the initramfs of every installed kernel.",
    fixed_by="linux.initramfs_virtio",
    references=("https://pve.proxmox.com/wiki/Migrate_to_Proxmox_VE",
                "https://man7.org/linux/man-pages/man5/dracut.conf.5.html"),
)
def initramfs_has_virtio(facts: LinuxFacts) -> Iterable[Outcome]:
    if not facts.kernels:
        yield cannot_tell(facts.unknown.get("kernels", "no installed kernel found"))
        return
    for k in facts.kernels:
        needed = {m for m in NEEDED_IN_INITRAMFS if not _builtin(k, m)}
        if not needed:
            yield ok(k.version, "virtio_scsi and virtio_pci are built into the kernel")
            continue
        if not k.initramfs:
            yield fail(k.version, f"no initramfs image for this kernel, and {sorted(needed)} are modules",
                       needed=sorted(needed))
            continue
        if k.initramfs_modules is None:
            yield cannot_tell(f"cannot list {k.initramfs} (no lsinitrd/lsinitramfs/lsinitcpio, or not readable: "
                              "run the collector with sudo)", k.version, initramfs=k.initramfs)
            continue
        missing = sorted(needed - k.initramfs_modules)
        storage = sorted(m for m in k.initramfs_modules if m in {"vmw_pvscsi", "mptspi", "mptsas", "mpt3sas", "ahci", "ata_piix"})
        if missing:
            yield fail(k.version, f"{k.initramfs} lacks {', '.join(missing)}", missing=missing,
                       initramfs=k.initramfs, storage_drivers_present=storage)
        else:
            yield ok(k.version, f"{k.initramfs} contains {', '.join(sorted(needed))}")


@check(
    id="LNX-KERNEL-VIRTIO", severity=Severity.BLOCKER, os="linux", phase="any",
    title="Installed kernels support VirtIO (SCSI, block, PCI, network)",
    rationale="A kernel built without VirtIO drivers (neither built in nor shipped as modules) cannot see the "
                "disk or NIC on Proxmox; no initramfs change can fix that.",
    remediation="Install the distribution's standard kernel package (it ships virtio drivers) and boot it once "
                "before the cutover; remove custom kernels without CONFIG_VIRTIO_PCI/CONFIG_SCSI_VIRTIO.",
)
def kernel_supports_virtio(facts: LinuxFacts) -> Iterable[Outcome]:
    if not facts.kernels:
        yield cannot_tell(facts.unknown.get("kernels", "no installed kernel found"))
        return
    for k in facts.kernels:
        have = {m for m in CONFIG_FOR if _builtin(k, m) or m in k.available_modules
                or k.config_virtio.get(CONFIG_FOR[m]) == "m"}
        missing = sorted({"virtio_scsi", "virtio_pci", "virtio_net"} - have)
        if "virtio_scsi" not in have and "virtio_blk" in have:
            missing = [m for m in missing if m != "virtio_scsi"]
        if missing:
            yield fail(k.version, f"kernel {k.version} has no {', '.join(missing)} (not built in, no module)",
                       missing=missing)
        else:
            yield ok(k.version, "VirtIO drivers available")


@check(
    id="LNX-UEFI", severity=Severity.INFO, os="linux", phase="pre",
    title="UEFI guest: the Proxmox VM needs OVMF and an EFI disk",
    rationale="A firmware mismatch is the most common reason a moved VM does not boot: a UEFI guest "
              "created with SeaBIOS finds no bootable disk.",
    references=("https://pve.proxmox.com/pve-docs/chapter-qm.html#qm_bios_and_uefi",),
    remediation="Create the VM with bios=ovmf and an efidisk0 (guestprep finalize does this from the hand-off).",
)
def uefi_boot(facts: LinuxFacts) -> Iterable[Outcome]:
    if facts.boot_mode == "uefi":
        sb = {True: "on", False: "off", None: "unknown"}[facts.secure_boot]
        yield fail("firmware", f"guest boots via UEFI (Secure Boot {sb})", boot_mode="uefi", secure_boot=facts.secure_boot)
    else:
        yield ok("firmware", "guest boots via BIOS", boot_mode=facts.boot_mode)
