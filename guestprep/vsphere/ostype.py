"""vSphere guestId -> Proxmox ``ostype`` and OS family; a suggested Proxmox VM name (rules: target_policy).

Pure data and small functions, shared by the VM checks, the inventory writer and the
finalizer. Proxmox ostypes (qemu-server): other wxp w2k w2k3 w2k8 wvista win7 win8
win10 win11 l24 l26 solaris.
"""

from __future__ import annotations

from guestprep.ostype import lookup
from guestprep.target_policy import proxmox_name

def proxmox_ostype(guest_id: str) -> str | None:
    """The Proxmox ostype for a vSphere guestId (the shared data table), or None when the OS is unknown."""
    found = lookup(guest_id)
    return found.ostype if found else None


def os_family(guest_id: str, full_name: str = "") -> str | None:
    """'windows' | 'linux' | None (unknown: e.g. otherGuest, freebsd)."""
    found = lookup(guest_id)   # the shared table already says the family
    if found and found.family in ("windows", "linux"):
        return found.family
    name = (full_name or "").lower()
    if "windows" in name:
        return "windows"
    if "linux" in name:
        return "linux"
    return None


def suggest_proxmox_name(name: str) -> str:
    """A dns-name close to ``name`` (the hand-off's sanitiser); "vm" when nothing usable is left."""
    return proxmox_name(name) or "vm"
