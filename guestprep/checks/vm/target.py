"""What the Proxmox target will make of a source VM, shared by the VM checks and the finalizer so
both say the same thing: the guest's ostype (guestId, else the OS VMware Tools reports) and how
many disks the target bus can take."""

from __future__ import annotations

import re

from guestprep.models import SourceVM, VMDisk
from guestprep.ostype import OsType, lookup

# Where the VMware readiness rules the VM checks are compared with live (docs/vsphere.md has the table)
FORKLIFT_RULES = "https://github.com/kubev2v/forklift/blob/main/validation/policies/io/konveyor/forklift/vmware/"

# Drive slots per bus in the Proxmox VE API schema (pve-docs api-viewer/apidata.js, POST
# /nodes/{node}/qemu: scsi[n] "n is 0 to 30", sata[n] 0 to 5, ide[n] 0 to 3, virtio[n] 0 to 15).
PROXMOX_DISK_SLOTS = {"scsi": 31, "sata": 6, "ide": 4, "virtio": 16}
# The finalizer puts every carried disk on VirtIO SCSI single (scsi0..); the Windows sata-first
# route boots the system disk from sata0 and adds one small VirtIO disk on the next SCSI slot.
TARGET_BUS = "scsi"

# The drive serial rule lives with the target policy: the hand-off (bundled in the stdlib-only
# guestprep-host zipapp) applies it too.
from guestprep.target_policy import PVE_SERIAL_MAX, carried_serial  # noqa: F401

# VMware Tools full names ("Red Hat Enterprise Linux 9 (64-bit)") -> a guestId the shared table knows.
# Most specific first: "Windows Server 2022" must not match the "2" of another rule.
_WINDOWS_NAMES = [
    (r"2025", "windows2025srv"), (r"2022", "windows2022srvNext"), (r"\b11\b", "windows11"),
    (r"2019", "windows2019srv"), (r"2016|\b10\b", "windows9"), (r"2012|\b8(\.1)?\b", "windows8"),
    (r"2008 r2|\b7\b", "windows7"), (r"2008", "winLonghorn"), (r"vista", "winVista"),
    (r"2003", "winNet"), (r"\bxp\b", "winXP"), (r"2000|\bnt\b", "win2000"),
]
_LINUX_WORDS = ("linux", "red hat", "centos", "debian", "ubuntu", "suse", "fedora", "rocky", "alma",
                "photon", "oracle", "amazon", "coreos", "mandriva")


def _guest_id_for_name(full_name: str) -> str | None:
    name = (full_name or "").lower()
    if "windows" in name:
        return next((gid for pattern, gid in _WINDOWS_NAMES if re.search(pattern, name)), None)
    if "2.4" in name and "linux" in name:
        return "other24xLinux"
    if any(w in name for w in _LINUX_WORDS):
        return "otherLinux64"
    for word, gid in (("solaris", "solaris11_64"), ("freebsd", "freebsd64")):
        if word in name:
            return gid
    return None


def generic_guest_id(guest_id: str) -> bool:
    """Empty, or one of VMware's catch-alls (otherGuest, otherGuest64, other3xLinux64Guest...)."""
    g = (guest_id or "").strip().lower()
    return not g or g.startswith("other")


def resolve_ostype(vm: SourceVM) -> tuple[OsType | None, str]:
    """(the OS entry, where it came from): the configured guestId unless it is empty or generic
    and VMware Tools names the OS (as Forklift does: kubev2v/forklift vm_os.rego prefers
    guestNameFromVmwareTools)."""
    tools = vm.tools_guest_full_name
    from_tools = lookup(_guest_id_for_name(tools) or "") if tools else None
    if from_tools is not None and generic_guest_id(vm.guest_id):
        return from_tools, f"VMware Tools reports {tools!r}"
    found = lookup(vm.guest_id)
    if found is not None:
        return found, f"guestId {vm.guest_id}"
    if from_tools is not None:
        return from_tools, f"VMware Tools reports {tools!r}"
    return None, ""


def carried_disks(vm: SourceVM) -> list[VMDisk]:
    """The disks the finalizer attaches: independent disks and RDMs are left to be moved separately."""
    return [d for d in vm.disks if not d.independent and not d.rdm_mode]


def scsi_slots_for(vm: SourceVM) -> int:
    """SCSI slots the carried disks may use: one fewer for a Windows guest, whose automatic route
    (sata-first) needs a slot for the VirtIO disk that makes Windows bind vioscsi."""
    found, _ = resolve_ostype(vm)
    windows = found is not None and found.family == "windows"
    return PROXMOX_DISK_SLOTS[TARGET_BUS] - (1 if windows else 0)
