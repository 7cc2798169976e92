"""The coexistence disk on vSphere (client calls only): add a small thin disk on a new controller
through ReconfigVM_Task and verify it by re-reading the VM; remove exactly the disk guestprep
created. Planning (which controller, which file) is guestprep.operations.vm.coexistence's.

The disk is recognised by its file name marker, so a second apply adds nothing and
detach never touches a disk guestprep did not create.
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim

from guestprep.errors import OperationError
from guestprep.models import Plan
from guestprep.vsphere.actions import run_task
from guestprep.vsphere.client import TRANSPORT_ERRORS, Session, translate

MARKER = "guestprep-coexist"
MAX_SIZE = 16 << 30            # detach refuses anything bigger: it cannot be our dummy disk
CONTROLLER_CLASSES = {
    "lsisas": vim.vm.device.VirtualLsiLogicSASController,
    "pvscsi": vim.vm.device.ParaVirtualSCSIController,
    "lsilogic": vim.vm.device.VirtualLsiLogicController,
    "sata": vim.vm.device.VirtualAHCIController,
    "nvme": vim.vm.device.VirtualNVMEController,
}

# What an apply did: the steps (for the journal) and one line for the operator.
Done = tuple[list[dict[str, Any]], str]


def is_marker_file(path: str) -> bool:
    return MARKER in (path or "").rsplit("/", 1)[-1]


def _devices(vm: Any, what: str) -> list[Any]:
    try:
        return list(vm.config.hardware.device)
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, what) from None


def _marker_disks(devices: list[Any]) -> list[Any]:
    return [d for d in devices if isinstance(d, vim.vm.device.VirtualDisk)
            and is_marker_file(getattr(d.backing, "fileName", ""))]


def apply_attach(session: Session, vm: Any, plan: Plan) -> Done:
    what = f"{plan.guest}: attach coexistence disk"
    devices = _devices(vm, what)
    already = _marker_disks(devices)
    if plan.empty or already:
        disk = already[0] if already else None
        return [{"action": "none", "file": getattr(disk.backing, "fileName", None) if disk else None}], \
            "coexistence disk already attached"
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
    return [
        {"action": "add_controller", "kind": kind, "bus_number": bus, "key": owner.key},
        {"action": "add_disk", "file": d.backing.fileName, "key": d.key, "capacity_bytes": size},
    ], "coexistence disk attached and verified"


def apply_detach(session: Session, vm: Any, plan: Plan) -> Done:
    what = f"{plan.guest}: detach coexistence disk"
    devices = _devices(vm, what)
    disks = _marker_disks(devices)
    if not disks:
        return [{"action": "none"}], "no coexistence disk attached"
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
    return steps, "coexistence disk detached and its file deleted"
