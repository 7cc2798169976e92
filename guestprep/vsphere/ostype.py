"""vSphere guestId -> Proxmox ``ostype`` and OS family, and Proxmox VM-name rules.

Pure data and small functions, shared by the VM checks, the inventory writer and the
finalizer. Proxmox ostypes (qemu-server): other wxp w2k w2k3 w2k8 wvista win7 win8
win10 win11 l24 l26 solaris.
"""

from __future__ import annotations

import re

# (guestId prefix, ostype); first match wins, so specific prefixes come first
_WINDOWS: list[tuple[str, str]] = [
    ("windows2022srv", "win11"), ("windows2019srvNext", "win11"), ("windows11", "win11"),
    ("windows12", "win11"), ("windows2019srv", "win10"), ("windows9", "win10"),
    ("windows8", "win8"), ("windows7", "win7"), ("winLonghorn", "w2k8"), ("winVista", "wvista"),
    ("winNet", "w2k3"), ("winXP", "wxp"), ("win2000", "w2k"),
]
_LINUX_MARKERS = ("linux", "rhel", "centos", "debian", "ubuntu", "sles", "suse", "fedora", "oracle",
                  "photon", "rocky", "alma", "amazon", "coreos", "asianux", "mandriva", "opensuse",
                  "crxpod", "crxsys", "miracle", "turbo", "redhat", "mandrake")
_OTHER = ("freebsd", "netware", "openServer", "unixWare", "eComStation", "os2", "dos", "win31",
          "win95", "win98", "winMe", "winNT", "darwin", "vmkernel")

PROXMOX_OSTYPES = ("other", "wxp", "w2k", "w2k3", "w2k8", "wvista", "win7", "win8", "win10", "win11",
                   "l24", "l26", "solaris")


def proxmox_ostype(guest_id: str) -> str | None:
    """The Proxmox ostype for a vSphere guestId, or None when we do not know the OS."""
    gid = guest_id or ""
    low = gid.lower()
    for prefix, ostype in _WINDOWS:
        if gid.startswith(prefix):
            return ostype
    if low.startswith("solaris"):
        return "solaris"
    if any(m in low for m in _LINUX_MARKERS):
        # the 2.4-era ids end without a version digit >= 4 (e.g. rhel3Guest, sles64Guest is 2.6)
        if gid.startswith("other24xLinux") or re.match(r"^(rhel[23]|redhat|suse|turboLinux|mandrake)(_64)?Guest$", gid):
            return "l24"
        return "l26"
    if any(gid.startswith(p) for p in _OTHER):
        return "other"
    return None


def os_family(guest_id: str, full_name: str = "") -> str | None:
    """'windows' | 'linux' | None (unknown: e.g. otherGuest, freebsd)."""
    ostype = proxmox_ostype(guest_id)
    if ostype and (ostype.startswith("win") or ostype.startswith("w2k") or ostype in ("wxp", "wvista")):
        return "windows"
    if ostype in ("l24", "l26"):
        return "linux"
    name = (full_name or "").lower()
    if "windows" in name:
        return "windows"
    if "linux" in name:
        return "linux"
    return None


_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
PVE_NAME_RE = re.compile(rf"^(?:{_DNS_LABEL}\.)*{_DNS_LABEL}$")


def valid_proxmox_name(name: str) -> bool:
    """Proxmox ``name`` has format dns-name: dot-separated labels of letters, digits, hyphens."""
    return bool(PVE_NAME_RE.match(name or "")) and all(len(p) <= 63 for p in name.split(".")) and len(name) <= 253


def suggest_proxmox_name(name: str) -> str:
    """A dns-name close to ``name``: other characters become hyphens."""
    s = re.sub(r"[^a-zA-Z0-9.-]+", "-", name or "")
    s = re.sub(r"-{2,}", "-", s)
    labels = [p.strip("-")[:63].strip("-") for p in s.split(".")]
    labels = [p for p in labels if p]
    return ".".join(labels) or "vm"
