"""vSphere guestId -> Proxmox ``ostype`` and OS family, and Proxmox VM-name rules.

Pure data and small functions, shared by the VM checks, the inventory writer and the
finalizer. Proxmox ostypes (qemu-server): other wxp w2k w2k3 w2k8 wvista win7 win8
win10 win11 l24 l26 solaris.
"""

from __future__ import annotations

import re

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


_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
PVE_NAME_RE = re.compile(rf"(?:{_DNS_LABEL}\.)*{_DNS_LABEL}")


def valid_proxmox_name(name: str) -> bool:
    """Proxmox ``name`` has format dns-name: dot-separated labels of letters, digits, hyphens."""
    return bool(PVE_NAME_RE.fullmatch(name or "")) and all(len(p) <= 63 for p in name.split(".")) and len(name) <= 253


def suggest_proxmox_name(name: str) -> str:
    """A dns-name close to ``name`` (the hand-off's sanitiser); "vm" when nothing usable is left."""
    return proxmox_name(name) or "vm"
