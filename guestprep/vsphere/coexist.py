"""The coexistence disk (field guide): a small thin disk on a new controller whose type
differs from the boot disk's, so the guest loads and registers a second storage driver
while it still runs on VMware. Plan from facts (pure), apply through ReconfigVM_Task,
verify by re-reading the VM, detach by removing exactly the disk we created.

The disk is recognised by its file name marker, so a second apply adds nothing and
detach never touches a disk guestprep did not create.
"""

from __future__ import annotations

import re
from typing import Any

from pyVmomi import vim

from guestprep.errors import ConfigError, OperationError
from guestprep.models import Change, Plan, SourceVM
from guestprep.operations.base import Applied
from guestprep.vsphere.actions import run_task
from guestprep.vsphere.client import TRANSPORT_ERRORS, Session, translate

MARKER = "guestprep-coexist"
DEFAULT_SIZE = 1 << 30
MAX_SIZE = 16 << 30            # detach refuses anything bigger: it cannot be our dummy disk
OPERATION = "vm.coexistence_disk"
DETACH = "vm.coexistence_disk_detach"

SCSI_KINDS = {"lsilogic", "lsisas", "pvscsi", "buslogic"}
_FAMILY = {"lsilogic": "scsi", "lsisas": "scsi", "pvscsi": "scsi", "buslogic": "scsi",
           "sata": "sata", "nvme": "nvme", "ide": "ide"}
_MAX_BUS = {"scsi": 4, "sata": 4, "nvme": 4}
CONTROLLER_CLASSES = {
    "lsisas": vim.vm.device.VirtualLsiLogicSASController,
    "pvscsi": vim.vm.device.ParaVirtualSCSIController,
    "lsilogic": vim.vm.device.VirtualLsiLogicController,
    "sata": vim.vm.device.VirtualAHCIController,
    "nvme": vim.vm.device.VirtualNVMEController,
}


def is_marker_file(path: str) -> bool:
    return MARKER in (path or "").rsplit("/", 1)[-1]


def default_controller(boot_kind: str | None) -> str:
    # SCSI controllers hot-add on a running VM; pick the other common SCSI type
    return "lsisas" if boot_kind == "pvscsi" else "pvscsi"


def _disk_file(vm: SourceVM) -> str:
    boot = vm.boot_disk()
    if boot is None or not boot.datastore_path:
        raise ConfigError("the VM has no disk with a datastore path to place the coexistence disk next to",
                          where=vm.name)
    m = re.fullmatch(r"\[([^\]]+)\]\s*(.*)", boot.datastore_path)
    if not m:
        raise ConfigError(f"unexpected datastore path {boot.datastore_path!r}", where=vm.name)
    ds, rel = m.group(1), m.group(2)
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


def _devices(vm: Any, what: str) -> list[Any]:
    try:
        return list(vm.config.hardware.device)
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, what) from None


def _marker_disks(devices: list[Any]) -> list[Any]:
    return [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
            and is_marker_file(getattr(d.backing, "fileName", ""))]


def apply_attach(session: Session, vm: Any, plan: Plan) -> Applied:
    what = f"{plan.guest}: attach coexistence disk"
    devices = _devices(vm, what)
    already = _marker_disks(devices)
    if plan.empty or already:
        disk = already[0] if already else None
        return Applied(OPERATION, plan.guest, True, [{"action": "none", "file": getattr(
            disk.backing, "fileName", None) if disk else None}], "coexistence disk already attached")
    ctrl_change = next(c for c in plan.changes if c.kind == "add_controller")
    disk_change = next(c for c in plan.changes if c.kind == "add_disk")
    kind, bus = ctrl_change.detail["kind"], ctrl_change.detail["bus_number"]

    ctrl = CONTROLLER_CLASSES[kind]()
    ctrl.key = -101  # temporary key: vSphere assigns the real one, the disk refers to it
    ctrl.busNumber = bus
    if isinstance(ctrl, vim.vm.device.VirtualSCSIController):
        ctrl.sharedBus = vim.vm.device.VirtualSCSIController.Sharing.noSharing
    disk = vim.vm.device.VirtualDisk()
    disk.key = -102
    disk.controllerKey = ctrl.key
    disk.unitNumber = disk_change.detail["unit_number"]
    disk.capacityInKB = disk_change.detail["capacity_bytes"] // 1024
    disk.capacityInBytes = disk_change.detail["capacity_bytes"]
    backing = vim.vm.device.VirtualDisk.FlatVer2BackingInfo()
    backing.fileName = disk_change.target
    backing.diskMode = "persistent"
    backing.thinProvisioned = True
    disk.backing = backing
    Op = vim.vm.device.VirtualDeviceSpec.Operation
    spec = vim.vm.ConfigSpec(deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation=Op.add, device=ctrl),
        vim.vm.device.VirtualDeviceSpec(operation=Op.add, device=disk,
                                        fileOperation=vim.vm.device.VirtualDeviceSpec.FileOperation.create),
    ])
    run_task(session, what, lambda: vm.ReconfigVM_Task(spec=spec))

    # verify: the disk is there, on a new controller of the planned type, with the planned size
    after = _devices(vm, what)
    found = _marker_disks(after)
    if not found:
        raise OperationError("reconfigure succeeded but the coexistence disk is not on the VM", where=what)
    d = found[0]
    owner = next((c for c in after if c.key == d.controllerKey), None)
    if not isinstance(owner, CONTROLLER_CLASSES[kind]):
        raise OperationError(f"coexistence disk sits on {type(owner).__name__}, expected {kind}", where=what)
    size = d.capacityInBytes or d.capacityInKB * 1024
    if size != disk_change.detail["capacity_bytes"]:
        raise OperationError(f"coexistence disk has {size} bytes, planned {disk_change.detail['capacity_bytes']}",
                             where=what)
    return Applied(OPERATION, plan.guest, True, [
        {"action": "add_controller", "kind": kind, "bus_number": bus, "key": owner.key},
        {"action": "add_disk", "file": d.backing.fileName, "key": d.key, "capacity_bytes": size},
    ], "coexistence disk attached and verified")


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


def apply_detach(session: Session, vm: Any, plan: Plan) -> Applied:
    what = f"{plan.guest}: detach coexistence disk"
    devices = _devices(vm, what)
    disks = _marker_disks(devices)
    if not disks:
        return Applied(DETACH, plan.guest, True, [{"action": "none"}], "no coexistence disk attached")
    Op = vim.vm.device.VirtualDeviceSpec.Operation
    changes, steps = [], []
    for d in disks:
        size = d.capacityInBytes or d.capacityInKB * 1024
        if size > MAX_SIZE:
            raise OperationError(f"{d.backing.fileName} is {size} bytes: refusing to delete it", where=what)
        changes.append(vim.vm.device.VirtualDeviceSpec(
            operation=Op.remove, device=d, fileOperation=vim.vm.device.VirtualDeviceSpec.FileOperation.destroy))
        steps.append({"action": "remove_disk", "file": d.backing.fileName, "key": d.key})
        ctrl = next((c for c in devices if c.key == d.controllerKey), None)
        users = [x for x in devices if getattr(x, "controllerKey", None) == d.controllerKey and x.key != d.key]
        if ctrl is not None and not users:
            changes.append(vim.vm.device.VirtualDeviceSpec(operation=Op.remove, device=ctrl))
            steps.append({"action": "remove_controller", "key": ctrl.key})
    run_task(session, what, lambda: vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=changes)))
    if _marker_disks(_devices(vm, what)):
        raise OperationError("reconfigure succeeded but the coexistence disk is still attached", where=what)
    return Applied(DETACH, plan.guest, True, steps, "coexistence disk detached and its file deleted")
