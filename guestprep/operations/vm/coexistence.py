"""The coexistence disk (field guide) as plan/apply operations on the VM: a small thin disk on a
new controller whose type differs from the boot disk's, so the guest loads and registers a
second storage driver while it still runs on VMware. Plans are pure (from the SourceVM);
apply goes through the vSphere adapter (guestprep.vsphere.coexist), which verifies by
re-reading the VM. ``conn`` is a vSphere Session, ``facts`` a SourceVM.
"""

from __future__ import annotations

import re
from typing import Any

from guestprep.errors import ConfigError, OperationError
from guestprep.models import Change, Plan, SourceVM, parse_datastore_path
from guestprep.operations.base import Applied, operation
from guestprep.operations.vm.target import vm_object
from guestprep.vsphere import coexist
from guestprep.vsphere.coexist import CONTROLLER_CLASSES, MARKER, MAX_SIZE, is_marker_file

DEFAULT_SIZE = 1 << 30
OPERATION = "vm.coexistence_disk"
DETACH = "vm.coexistence_disk_detach"

_FAMILY = {"lsilogic": "scsi", "lsisas": "scsi", "pvscsi": "scsi", "buslogic": "scsi",
           "sata": "sata", "nvme": "nvme", "ide": "ide"}
_MAX_BUS = {"scsi": 4, "sata": 4, "nvme": 4}


def default_controller(boot_kind: str | None) -> str:
    # SCSI controllers hot-add on a running VM; pick the other common SCSI type
    return "lsisas" if boot_kind == "pvscsi" else "pvscsi"


def _disk_file(vm: SourceVM) -> str:
    boot = vm.boot_disk()
    if boot is None or not boot.datastore_path:
        raise ConfigError("the VM has no disk with a datastore path to place the coexistence disk next to",
                          where=vm.name)
    parsed = parse_datastore_path(boot.datastore_path)
    if parsed is None:
        raise ConfigError(f"unexpected datastore path {boot.datastore_path!r}", where=vm.name)
    ds, rel = parsed
    folder = rel.rsplit("/", 1)[0] + "/" if "/" in rel else ""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", vm.name)[:60]
    return f"[{ds}] {folder}{safe}-{MARKER}.vmdk"


def plan_attach(vm: SourceVM, *, controller: str | None = None, size_bytes: int = DEFAULT_SIZE) -> Plan:
    plan = Plan(operation=OPERATION, guest=vm.name, verify=None)
    existing = [d for d in vm.disks if is_marker_file(d.datastore_path)]
    if existing:
        d = existing[0]
        ctrl = vm.controller(d.controller_key)
        plan.reason = f"already attached: {d.datastore_path} on {ctrl.label if ctrl else d.controller_key}"
        return plan
    if size_bytes <= 0 or size_bytes % (1 << 20) or size_bytes > MAX_SIZE:
        raise ConfigError(f"size must be a whole number of MiB between 1 MiB and {MAX_SIZE >> 30} GiB",
                          where="--size")
    boot = vm.boot_disk()
    boot_ctrl = vm.controller(boot.controller_key) if boot else None
    boot_kind = boot_ctrl.kind if boot_ctrl else None
    kind = controller or default_controller(boot_kind)
    if kind not in CONTROLLER_CLASSES:
        raise ConfigError(f"unknown controller type {kind!r} (one of {', '.join(sorted(CONTROLLER_CLASSES))})",
                          where="--controller")
    if kind == boot_kind:
        raise ConfigError(f"the boot disk is already on {kind}: the coexistence disk needs a different type",
                          where="--controller")
    family = _FAMILY[kind]
    used = {c.bus_number for c in vm.controllers if _FAMILY.get(c.kind) == family}
    free = [b for b in range(_MAX_BUS[family]) if b not in used]
    if not free:
        raise OperationError(f"no free {family} bus number (all {_MAX_BUS[family]} in use)", where=vm.name)
    bus = free[0]
    path = _disk_file(vm)
    if vm.power_state == "poweredOn" and kind in ("sata", "nvme"):
        plan.warnings.append(f"vSphere may refuse to hot-add a {kind} controller to a running VM; "
                             "power it off first or use a SCSI type")
    plan.changes = [
        Change("add_controller", vm.moref or vm.name, {"kind": kind, "bus_number": bus},
               diff=f"+ {kind} controller (bus {bus})"),
        Change("add_disk", path, {"capacity_bytes": size_bytes, "thin": True, "unit_number": 0,
                                  "controller": "new", "disk_mode": "persistent"},
               diff=f"+ thin disk {size_bytes >> 20} MiB {path} on the new {kind} controller"),
    ]
    plan.reason = (f"boot disk on {boot_kind or 'unknown'}: add a {kind} controller with a "
                   f"{size_bytes >> 20} MiB thin disk")
    return plan


def plan_detach(vm: SourceVM) -> Plan:
    plan = Plan(operation=DETACH, guest=vm.name)
    disks = [d for d in vm.disks if is_marker_file(d.datastore_path)]
    if not disks:
        plan.reason = "no coexistence disk attached"
        return plan
    for d in disks:
        if d.capacity_bytes > MAX_SIZE:
            raise OperationError(f"{d.datastore_path} is {d.capacity_bytes} bytes: too big to be a "
                                 "coexistence disk; refusing to delete it", where=vm.name)
        plan.changes.append(Change("remove_disk", d.datastore_path, {"key": d.key, "delete_file": True},
                                   diff=f"- disk {d.datastore_path} (file deleted)"))
        others = [x for x in vm.disks if x.controller_key == d.controller_key and x.key != d.key]
        others += [c for c in vm.cdroms if c.get("controller_key") == d.controller_key]
        ctrl = vm.controller(d.controller_key)
        if ctrl and not others:
            plan.changes.append(Change("remove_controller", ctrl.label, {"key": ctrl.key, "kind": ctrl.kind},
                                       diff=f"- {ctrl.kind} controller {ctrl.label}"))
    plan.reason = "remove the coexistence disk, delete its file, and remove its controller if now empty"
    return plan



class CoexistenceDisk:
    id = OPERATION
    os = "vm"
    title = "Attach a small thin disk on a second controller type (controller coexistence)"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        return plan_attach(facts, controller=options.get("controller"),
                           size_bytes=int(options.get("size_bytes") or DEFAULT_SIZE))

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        steps, message = coexist.apply_attach(conn, vm_object(conn, plan, options), plan)
        return Applied(OPERATION, plan.guest, True, steps, message)


class CoexistenceDiskDetach:
    id = DETACH
    os = "vm"
    title = "Detach the coexistence disk and delete its file"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        return plan_detach(facts)

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        steps, message = coexist.apply_detach(conn, vm_object(conn, plan, options), plan)
        return Applied(DETACH, plan.guest, True, steps, message)


operation(CoexistenceDisk())
operation(CoexistenceDiskDetach())
