"""Disk shapes that a plain vmdk -> qcow2/zvol conversion cannot carry over."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.checks.vm.target import (FORKLIFT_RULES, PROXMOX_DISK_SLOTS, PVE_SERIAL_MAX, TARGET_BUS, carried_disks,
                                        carried_serial, scsi_slots_for)
from guestprep.models import Severity, SourceVM, parse_datastore_path


def _no_disks(vm: SourceVM) -> Iterable[Outcome]:
    yield fail(vm.name, "the VM has no virtual disks", disks=0)


@check(
    id="VM-DISK-INDEPENDENT", severity=Severity.WARNING, os="vm",
    title="No independent disks and no legacy non-persistent disk modes",
    rationale="Independent disks are left out of snapshots (so out of pre-cutover snapshots and "
              "backups); independent-nonpersistent disks throw away every write at power-off, "
              "so what you convert may not be what the guest saw. The legacy modes do the same: "
              "nonpersistent discards writes at power-off, undoable and append keep them in a redo "
              "log beside the base disk.",
    remediation="Confirm the disk's role; switch it to 'dependent' (persistent) in vSphere or plan to "
                "carry it over separately.",
    references=(FORKLIFT_RULES + "disk_mode.rego",),
)
def independent_disks(vm: SourceVM) -> Iterable[Outcome]:
    for d in vm.disks:
        if d.independent:
            yield fail(d.label, f"{d.label} is {d.disk_mode}: left out of snapshots and not carried by finalize",
                       disk_mode=d.disk_mode, path=d.datastore_path)
        elif d.legacy_mode:
            yield fail(d.label, f"{d.label} uses the legacy disk mode {d.disk_mode}: the guest's writes "
                       f"{'are discarded at power-off' if d.disk_mode == 'nonpersistent' else 'sit in a redo log'}, "
                       "the base disk is not what the guest saw", disk_mode=d.disk_mode, path=d.datastore_path)
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
              "shared-storage design. A disk file another VM of the fleet also uses is shared too, "
              "whatever its sharing flag says (preflight compares the whole fleet).",
    remediation="Migrate the cluster as a unit with a planned outage and a shared-storage design "
                "on Proxmox; do not convert one node's view of a shared disk.",
    references=(FORKLIFT_RULES + "shared_disk.rego", FORKLIFT_RULES + "shareable_disk.rego"),
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


@check(
    id="VM-DISK-DATASTORE", severity=Severity.BLOCKER, os="vm",
    title="Every disk is a file on a datastore",
    rationale="The copy reads each disk as a file on a datastore ([datastore] path.vmdk). A disk whose "
              "backing names no datastore file (a host device, a broken backing) has nothing to copy.",
    remediation="Move the disk to a datastore (Storage vMotion) or remove it from the VM before migrating.",
    references=(FORKLIFT_RULES + "datastore.rego",),
)
def disk_on_datastore(vm: SourceVM) -> Iterable[Outcome]:
    for d in vm.disks:
        path = d.datastore_path or ""
        # a .vmx read from disk names plain files; vSphere names "[datastore] dir/file.vmdk"
        on_file = bool(path.strip()) if vm.source == "vmx" else parse_datastore_path(path) is not None
        if on_file:
            yield ok(d.label, f"{d.label} is {path}")
        else:
            yield fail(d.label, f"{d.label} has no datastore file (backing file {path!r})", path=path)


@check(
    id="VM-DISK-COUNT", severity=Severity.BLOCKER, os="vm",
    title="The Proxmox target bus has a slot for every disk",
    rationale="finalize attaches every carried disk to VirtIO SCSI single: Proxmox has 31 SCSI slots "
              "(scsi0-scsi30; sata0-5, ide0-3 and virtio0-15 are smaller still). The Windows sata-first "
              "route needs one more SCSI slot for the VirtIO disk that makes Windows bind vioscsi.",
    remediation="Consolidate disks in the guest (LVM, dynamic disks) or move some to a separate data "
                "migration; independent disks and RDMs are not attached and do not count.",
    references=(FORKLIFT_RULES + "disk_count.rego",),
)
def disk_count(vm: SourceVM) -> Iterable[Outcome]:
    carried = carried_disks(vm)
    limit = scsi_slots_for(vm)
    bus = f"{TARGET_BUS}0-{TARGET_BUS}{limit - 1}"
    evidence = {"disks": len(carried), "slots": limit, "bus": TARGET_BUS, "bus_slots": PROXMOX_DISK_SLOTS}
    if len(carried) > limit:
        why = (" (a Windows guest keeps one slot for the sata-first VirtIO disk; 31 fit only a proven direct boot)"
               if limit < PROXMOX_DISK_SLOTS[TARGET_BUS] else "")
        yield fail(vm.name, f"{len(carried)} disks to attach, the target has {limit} slots ({bus}){why}", **evidence)
    else:
        yield ok(vm.name, f"{len(carried)} disk(s) fit {bus}", **evidence)


@check(
    id="VM-DISK-SERIAL", severity=Severity.INFO, os="vm",
    title="Disk serial numbers (disk.EnableUUID) noted: what finalize carries to Proxmox",
    rationale="With disk.EnableUUID=TRUE the guest reads each SCSI disk's uuid as its serial number, and "
              "udev names /dev/disk/by-id/*<serial> after it; fstab, LVM filters or databases that use "
              "those names need the same serial on Proxmox. Proxmox takes a serial of at most 20 bytes, "
              "VMware's are 32 hex digits: finalize sets serial= to the first 20.",
    remediation="Nothing blocks the move. Where the guest refers to disks by the full VMware serial "
                "(by-id names, udev rules), switch those references to filesystem UUIDs or labels before "
                "the cutover.",
    references=(FORKLIFT_RULES + "disk_serial_numbers.rego",),
)
def disk_serial(vm: SourceVM) -> Iterable[Outcome]:
    if not vm.disk_enable_uuid:
        yield ok(vm.name, "disk.EnableUUID is off: the guest reads no disk serials, none is carried",
                 disk_enable_uuid=False)
        return
    serials = [d for d in vm.disks if d.serial]
    for d in serials:
        carried = carried_serial(d.serial or "")
        cut = f" (VMware's {len(d.serial or '')} digits cut to {PVE_SERIAL_MAX})" if carried != d.serial else ""
        yield fail(d.label, f"{d.label} serial {d.serial}: finalize sets serial={carried}{cut}",
                   serial=d.serial, carried=carried)
    if not serials:
        yield ok(vm.name, "disk.EnableUUID is on, but no SCSI disk reports a serial", disk_enable_uuid=True)
