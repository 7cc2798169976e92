"""Act on one VM through the vSphere API: find it, run a task and wait, reconfigure,
power, snapshot. Every failure becomes an operator message naming the VM and the task.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from pyVmomi import vim, vmodl

from guestprep.errors import ConfigError, OperationError
from guestprep.vsphere.client import TRANSPORT_ERRORS, Session, translate


class TaskFailed(OperationError):
    """A vSphere task ended in error; the message carries vSphere's own fault text."""


def find_vm(session: Session, ident: str) -> Any:
    """A VM by moref (``vm-42``), BIOS/instance UUID, or exact name (must be unique)."""
    where = f"vsphere {session.host}"
    try:
        content = session.si.RetrieveContent()
        if ident.startswith("vm-"):
            vm = vim.VirtualMachine(ident, session.si._stub)
            try:
                _ = vm.name  # confirm it exists
                return vm
            except vmodl.fault.ManagedObjectNotFound:
                raise ConfigError(f"no VM with moref {ident!r}", where=where) from None
        idx = content.searchIndex
        for instance in (False, True):
            vm = idx.FindByUuid(None, ident, True, instance)
            if vm is not None:
                return vm
        view = content.viewManager.CreateContainerView(content.rootFolder, [vim.VirtualMachine], True)
        try:
            pc = content.propertyCollector
            PC = vmodl.query.PropertyCollector
            spec = PC.FilterSpec(
                objectSet=[PC.ObjectSpec(obj=view, skip=True, selectSet=[
                    PC.TraversalSpec(name="v", path="view", skip=False, type=vim.view.ContainerView)])],
                propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["name"])])
            matches = [o.obj for o in pc.RetrieveContents([spec])
                       if o.propSet and o.propSet[0].val == ident]
        finally:
            view.DestroyView()
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, where) from None
    if not matches:
        raise ConfigError(f"no VM named {ident!r} (give a name, moref vm-N, or UUID)", where=where)
    if len(matches) > 1:
        refs = ", ".join(m._moId for m in matches)
        raise ConfigError(f"{len(matches)} VMs are named {ident!r} ({refs}): use the moref", where=where)
    return matches[0]


def wait_for_task(task: Any, what: str, *, timeout: float = 600, poll: float = 0.2) -> Any:
    """Wait for a task; return its result or raise TaskFailed with vSphere's message."""
    deadline = time.monotonic() + timeout
    while True:
        info = task.info
        if info.state == vim.TaskInfo.State.success:
            return info.result
        if info.state == vim.TaskInfo.State.error:
            fault = info.error
            msg = getattr(fault, "msg", None) or type(fault).__name__.rsplit(".", 1)[-1]
            detail = _fault_detail(fault)
            raise TaskFailed(f"{msg}{detail}", where=what)
        if time.monotonic() > deadline:
            raise TaskFailed(f"task still {info.state} after {timeout:g}s (it may still finish in vSphere)",
                             where=what)
        time.sleep(poll)


def _fault_detail(fault: Any) -> str:
    name = type(fault).__name__.rsplit(".", 1)[-1]
    extra = []
    for attr in ("file", "property", "deviceIndex", "invalidProperty"):
        val = getattr(fault, attr, None)
        if val not in (None, ""):
            extra.append(f"{attr}={val}")
    return f" ({name}{': ' + ', '.join(extra) if extra else ''})"


def run_task(session: Session, what: str, start: Callable[[], Any], *, timeout: float = 600) -> Any:
    """Start a task with ``start()`` and wait; transport and API faults become clear errors."""
    try:
        task = start()
        return wait_for_task(task, what, timeout=timeout)
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, what) from None
    except vmodl.MethodFault as exc:
        raise TaskFailed(f"vSphere refused: {exc.msg or type(exc).__name__}{_fault_detail(exc)}",
                         where=what) from None


def power_state(vm: Any) -> str:
    return str(vm.runtime.powerState)


def shutdown_guest(session: Session, vm: Any, *, timeout: float = 300, hard: bool = False,
                   poll: float = 1.0) -> dict[str, Any]:
    """Graceful guest shutdown via Tools; hard power-off only if ``hard`` and the guest ignores us."""
    what = f"{vm.name}: shutdown"
    if power_state(vm) == "poweredOff":
        return {"action": "none", "reason": "already powered off"}
    try:
        tools = vm.guest.toolsRunningStatus
        if tools == "guestToolsRunning":
            vm.ShutdownGuest()
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if power_state(vm) == "poweredOff":
                    return {"action": "guest-shutdown", "reason": "guest shut down"}
                time.sleep(poll)
            if not hard:
                raise OperationError(f"guest did not power off within {timeout:g}s; VM left running "
                                     "(use --hard to power it off)", where=what)
        elif not hard:
            raise OperationError(f"VMware Tools is not running ({tools}): a graceful shutdown is "
                                 "impossible; VM left running (use --hard to power it off)", where=what)
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, what) from None
    except vmodl.MethodFault as exc:
        if not hard:
            raise OperationError(f"guest shutdown refused: {exc.msg or type(exc).__name__}", where=what) from None
    run_task(session, f"{vm.name}: power off", vm.PowerOffVM_Task)
    return {"action": "power-off", "reason": "hard power-off (explicit --hard)"}


def power_on(session: Session, vm: Any) -> dict[str, Any]:
    if power_state(vm) == "poweredOn":
        return {"action": "none", "reason": "already powered on"}
    run_task(session, f"{vm.name}: power on", vm.PowerOnVM_Task)
    return {"action": "power-on", "reason": "powered on"}


def snapshot(session: Session, vm: Any, name: str, *, quiesce: bool = True, memory: bool = False,
             description: str = "guestprep pre-cutover snapshot") -> dict[str, Any]:
    """Create a snapshot (quiesced through Tools when the VM runs)."""
    if not name.strip():
        raise ConfigError("snapshot name is empty", where="--name")
    running = power_state(vm) == "poweredOn"
    ref = run_task(session, f"{vm.name}: snapshot {name!r}",
                   lambda: vm.CreateSnapshot_Task(name=name, description=description,
                                                  memory=memory and running, quiesce=quiesce and running))
    return {"action": "snapshot", "snapshot": getattr(ref, "_moId", None), "name": name,
            "quiesced": bool(quiesce and running)}
