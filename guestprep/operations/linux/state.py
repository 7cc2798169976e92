"""Guest state that plans need beyond the collector's typed facts (raw file text, writability).

Read in one round trip by ``read_state.sh``; passed to plans as ``options["state"]``
so plans stay pure functions of (facts, state) and tests give both as data.
"""

from __future__ import annotations

from typing import Any

from guestprep.operations.linux.steps import read_state

DRACUT_DROPIN = "/etc/dracut.conf.d/90-guestprep-virtio.conf"
MKINITCPIO_DROPIN = "/etc/mkinitcpio.conf.d/90-guestprep-virtio.conf"
VMTOOLS_UNIT = "/etc/systemd/system/guestprep-remove-vmware-tools.service"
VMTOOLS_SCRIPT = "/usr/local/libexec/guestprep/remove-vmware-tools.sh"
LVM_UNIT = "/etc/systemd/system/guestprep-lvm-reimport.service"
LVM_SCRIPT = "/usr/local/libexec/guestprep/lvm-reimport.sh"
LVM_DEVICES = "/etc/lvm/devices/system.devices"
UDEV_RULES = "/etc/udev/rules.d/70-guestprep-net-names.rules"

FILES = (
    "/etc/fstab", "/etc/crypttab", "/etc/default/grub", "/etc/initramfs-tools/modules", "/etc/mkinitcpio.conf",
    DRACUT_DROPIN, MKINITCPIO_DROPIN, VMTOOLS_UNIT, LVM_UNIT, LVM_DEVICES, UDEV_RULES,
)
DIRS = ("/boot", "/etc", "/var/lib", "/etc/mkinitcpio.conf.d")


def collect(conn: Any, options: dict[str, Any]) -> dict[str, Any]:
    return read_state(conn, [*FILES, *DIRS], options)


def text(state: dict[str, Any], path: str) -> str | None:
    return state.get(path)


def writable(state: dict[str, Any], path: str) -> bool | None:
    return state.get(f"dir:{path}")
