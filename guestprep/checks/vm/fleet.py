"""What only the whole fleet shows (preflight calls :func:`fleet_findings` once it has every VM's
facts): MAC addresses must be unique, within one VM (a check) and across the fleet; and a disk file
two VMs reference is shared, whatever its sharing flag says (Forklift derives sharing the same way:
kubev2v/forklift validation/policies/io/konveyor/forklift/vmware/shared_disk.rego)."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check, get
from guestprep.models import Finding, Severity, SourceVM, Status

CHECK_ID = "VM-MAC-COLLISION"
SHARED_DISK_ID = "VM-DISK-SHARED"
_MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _norm(mac: str) -> str:
    return (mac or "").strip().lower().replace("-", ":")


@check(
    id=CHECK_ID, severity=Severity.BLOCKER, os="vm",
    title="Every NIC has a valid MAC address no other NIC uses",
    rationale="Proxmox copies the MAC when licences are bound to it; two NICs with one MAC on the "
              "same network break ARP for both guests, and a malformed MAC is refused.",
    remediation="Give the duplicate NIC a new MAC in vSphere (or plan a new one in finalize) and "
                "update any licence bound to it.",
)
def mac_unique_in_vm(vm: SourceVM) -> Iterable[Outcome]:
    seen: dict[str, str] = {}
    for nic in vm.nics:
        mac = _norm(nic.mac)
        if not _MAC_RE.match(mac):
            yield fail(nic.label, f"{nic.label} has an invalid MAC {nic.mac!r}", mac=nic.mac)
        elif mac in seen:
            yield fail(mac, f"{nic.label} and {seen[mac]} share MAC {mac}", nics=[seen[mac], nic.label])
        else:
            seen[mac] = nic.label
            yield ok(mac, f"{nic.label} {mac}")


def fleet_findings(vms: list[SourceVM]) -> list[Finding]:
    """MAC collisions (a failure per VM and MAC, a pass per VM without) and disk files shared
    between VMs (a failure per VM and file; the per-VM check already passes the others)."""
    return mac_findings(vms) + shared_disk_findings(vms)


def shared_disk_findings(vms: list[SourceVM]) -> list[Finding]:
    """One failure per (VM, disk) whose datastore file another VM of the fleet also references."""
    users: dict[str, list[tuple[int, str, str]]] = defaultdict(list)
    for i, vm in enumerate(vms):
        for d in vm.disks:
            path = (d.datastore_path or "").strip()
            if path:
                users[path].append((i, vm.name, d.label))
    meta = get(SHARED_DISK_ID).meta
    findings: list[Finding] = []
    for i, vm in enumerate(vms):
        for d in vm.disks:
            path = (d.datastore_path or "").strip()
            others = [f"{name}/{label}" for j, name, label in users.get(path, []) if j != i]
            if others:
                findings.append(Finding(
                    guest=vm.name, check_id=SHARED_DISK_ID, severity=meta.severity, status=Status.FAIL,
                    title=meta.title, message=f"{d.label} ({path}) is also a disk of {', '.join(others)} "
                    f"(sharing flag {d.sharing})", resource=d.label,
                    evidence={"path": path, "also_on": others, "sharing": d.sharing, "scope": "fleet"},
                    remediation=meta.remediation, fixed_by=meta.fixed_by))
    return findings


def mac_findings(vms: list[SourceVM]) -> list[Finding]:
    """One finding per (VM, colliding MAC), and a pass for every VM without collisions."""
    owners: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for vm in vms:
        for nic in vm.nics:
            mac = _norm(nic.mac)
            if _MAC_RE.match(mac):
                owners[mac].append((vm.name, nic.label))
    meta = get(CHECK_ID).meta
    findings: list[Finding] = []
    for vm in vms:
        collisions = []
        for mac in sorted({_norm(n.mac) for n in vm.nics}):
            others = [f"{name}/{label}" for name, label in owners.get(mac, []) if name != vm.name]
            if others:
                collisions.append((mac, others))
        for mac, others in collisions:
            findings.append(Finding(
                guest=vm.name, check_id=CHECK_ID, severity=meta.severity, status=Status.FAIL,
                title=meta.title, message=f"MAC {mac} is also used by {', '.join(others)}",
                resource=mac, evidence={"mac": mac, "also_on": others, "scope": "fleet"},
                remediation=meta.remediation, fixed_by=meta.fixed_by))
        if not collisions:
            findings.append(Finding(
                guest=vm.name, check_id=CHECK_ID, severity=meta.severity, status=Status.PASS,
                title=meta.title, message="no MAC shared with another VM in the fleet",
                resource=vm.name, evidence={"scope": "fleet"}))
    return findings
