"""Disk shapes that a plain vmdk -> qcow2/zvol conversion cannot carry over."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.models import Severity, SourceVM


def _no_disks(vm: SourceVM) -> Iterable[Outcome]:
    yield fail(vm.name, "the VM has no virtual disks", disks=0)


@check(
    id="VM-DISK-INDEPENDENT", severity=Severity.WARNING, os="vm",
    title="No independent disks",
    rationale="Independent disks are left out of snapshots (so out of pre-cutover snapshots and "
              "backups); independent-nonpersistent disks throw away every write at power-off, "
              "so what you convert may not be what the guest saw.",
    remediation="Confirm the disk's role; switch it to 'dependent' in vSphere or plan to carry it "
                "over separately.",
)
def independent_disks(vm: SourceVM) -> Iterable[Outcome]:
    for d in vm.disks:
        if d.independent:
            yield fail(d.label, f"{d.label} is {d.disk_mode}", disk_mode=d.disk_mode, path=d.datastore_path)
        else:
            yield ok(d.label, f"{d.label} is {d.disk_mode}")


@check(
    id="VM-DISK-RDM", severity=Severity.BLOCKER, os="vm",
    title="No raw device mappings (RDM)",
    rationale="An RDM points at a SAN LUN, not a vmdk: there is no flat extent to convert. "
              "Physical-mode RDMs also pass SCSI commands straight to the array.",
    remediation="Present the LUN to the Proxmox nodes and pass it through, or migrate the RDM to a "
                "virtual disk (Storage vMotion with format change) first.",
)
def rdm_disks(vm: SourceVM) -> Iterable[Outcome]:
    for d in vm.disks:
        if d.rdm_mode:
            yield fail(d.label, f"{d.label} is an RDM ({d.rdm_mode})", rdm_mode=d.rdm_mode, path=d.datastore_path)
        else:
            yield ok(d.label, f"{d.label} is a virtual disk")


@check(
    id="VM-DISK-SHARED", severity=Severity.BLOCKER, os="vm",
    title="No shared or multi-writer disks, no shared SCSI bus",
    rationale="Multi-writer disks and shared SCSI buses belong to clusters (Oracle RAC, WSFC): "
              "the other node keeps writing while you convert, and Proxmox needs a different "
              "shared-storage design.",
    remediation="Migrate the cluster as a unit with a planned outage and a shared-storage design "
                "on Proxmox; do not convert one node's view of a shared disk.",
)
def shared_disks(vm: SourceVM) -> Iterable[Outcome]:
    shared_buses = {c.key: c for c in vm.controllers if c.sharing not in ("noSharing", "", None)}
    for c in shared_buses.values():
        yield fail(c.label, f"controller {c.label} uses bus sharing {c.sharing}", sharing=c.sharing)
    for d in vm.disks:
        if d.sharing not in ("sharingNone", "", None):
            yield fail(d.label, f"{d.label} has sharing {d.sharing}", sharing=d.sharing)
        elif d.controller_key not in shared_buses:
            yield ok(d.label, f"{d.label} is not shared")


@check(
    id="VM-DISK-CAPACITY", severity=Severity.BLOCKER, os="vm",
    title="Every disk reports a valid capacity",
    rationale="A disk of size zero or unknown cannot be given a target of the right size; it "
              "usually means an inaccessible backing file or a broken descriptor.",
    remediation="Check the disk's backing file on the datastore (browse it, re-register the VM) "
                "and fix the descriptor before converting.",
)
def disk_capacity(vm: SourceVM) -> Iterable[Outcome]:
    if not vm.disks and not vm.extra.get("config_unavailable"):
        yield from _no_disks(vm)
    if vm.extra.get("config_unavailable"):
        yield fail(vm.name, "vSphere returned no configuration for this VM (inaccessible or orphaned)")
    for d in vm.disks:
        if not isinstance(d.capacity_bytes, int) or d.capacity_bytes <= 0:
            yield fail(d.label, f"{d.label} capacity is {d.capacity_bytes!r}", capacity_bytes=d.capacity_bytes)
        elif d.capacity_bytes % 512:
            yield fail(d.label, f"{d.label} capacity {d.capacity_bytes} is not a multiple of 512 bytes",
                       capacity_bytes=d.capacity_bytes)
        else:
            yield ok(d.label, f"{d.label} is {d.capacity_bytes} bytes")


@check(
    id="VM-BOOT-DISK-BUS", severity=Severity.WARNING, os="vm",
    title="The boot disk sits on a SCSI or SATA controller",
    rationale="The controller-coexistence preparation assumes a SCSI/SATA boot disk. An NVMe boot "
              "disk needs the guest's NVMe path mapped to VirtIO differently, and an IDE boot disk "
              "often means an old guest without VirtIO-capable drivers.",
    remediation="Plan the target bus explicitly (finalize --boot-bus), or move the boot disk to a "
                "SCSI controller in vSphere before preparing the guest.",
)
def boot_disk_bus(vm: SourceVM) -> Iterable[Outcome]:
    boot = vm.boot_disk()
    if boot is None:
        return
    ctrl = vm.controller(boot.controller_key)
    kind = ctrl.kind if ctrl else "unknown"
    if kind in ("nvme", "ide", "unknown"):
        yield fail(boot.label, f"boot disk {boot.label} is on {kind}", controller=kind)
    else:
        yield ok(boot.label, f"boot disk {boot.label} is on {kind}", controller=kind)
