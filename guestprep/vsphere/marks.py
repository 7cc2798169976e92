"""The cutover mark on a source VM: a line in its annotation ("Notes") and a custom field, both
saying it was migrated and must not be powered on. Client calls only; the operations that
plan and journal them are guestprep/operations/vm/mark.py.

The annotation line starts with :data:`PREFIX`, so removing it leaves the operator's own notes
as they were. Unmarking replaces the line with a dated ``guestprep-cutover-undone:`` line and the
field with "rolled back ...": the trail stays visible, and an annotation is never set to "" (which
some servers, e.g. the govmomi simulator, take as "unchanged").
"""

from __future__ import annotations

from typing import Any

from pyVmomi import vim, vmodl

from guestprep.errors import OperationError
from guestprep.vsphere.actions import run_task
from guestprep.vsphere.client import TRANSPORT_ERRORS, Session, translate

PREFIX = "guestprep-cutover:"
UNDONE = "guestprep-cutover-undone:"
MARKED = "migrated"      # a field value that starts with this is a live mark
FIELD = "guestprep.cutover"


def current(vm: Any) -> str | None:
    """The mark line in the annotation, or None."""
    for line in (vm.config.annotation or "").splitlines():
        if line.startswith(PREFIX):
            return line
    return None


def _field_key(session: Session, create: bool) -> int | None:
    cfm = session.content.customFieldsManager
    for f in cfm.field or []:
        if f.name == FIELD:
            return f.key
    if not create:
        return None
    try:
        return cfm.AddCustomFieldDef(name=FIELD, moType=vim.VirtualMachine).key
    except vim.fault.DuplicateName:
        # another VM of the wave (a parallel run) defined it between our read and our add
        return next(f.key for f in cfm.field or [] if f.name == FIELD)


def field_value(session: Session, vm: Any) -> str | None:
    key = _field_key(session, create=False)
    if key is None:
        return None
    values = [v.value or "" for v in vm.customValue or [] if v.key == key]
    # the last one counts: a server may list an entity's value once per SetField
    return values[-1] if values and values[-1].startswith(MARKED) else None


def _set_annotation(session: Session, vm: Any, text: str, what: str) -> None:
    run_task(session, what, lambda: vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(annotation=text)))


def mark(session: Session, vm: Any, text: str) -> dict[str, Any]:
    """Add the mark line (replacing an older one) and set the custom field."""
    what = f"{vm.name}: mark as migrated"
    if not text.startswith(PREFIX) or "\n" in text:
        raise OperationError(f"a mark is one line starting with {PREFIX!r}", where=what)
    try:
        lines = [ln for ln in (vm.config.annotation or "").splitlines() if not ln.startswith(PREFIX)]
        _set_annotation(session, vm, "\n".join([text] + lines), what)
        session.content.customFieldsManager.SetField(entity=vm, key=_field_key(session, create=True),
                                                     value=text[len(PREFIX):].strip())
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, what) from None
    except vmodl.MethodFault as exc:
        raise OperationError(f"vSphere refused: {exc.msg or type(exc).__name__}", where=what) from None
    return {"action": "mark", "annotation": text, "field": FIELD}


def unmark(session: Session, vm: Any, when: str) -> dict[str, Any]:
    """Replace the mark line and the field value by a dated 'rolled back' note; other notes stay."""
    what = f"{vm.name}: remove the migrated mark"
    try:
        lines = (vm.config.annotation or "").splitlines()
        kept = [ln for ln in lines if not ln.startswith((PREFIX, UNDONE))]
        if kept != lines:
            _set_annotation(session, vm, "\n".join([f"{UNDONE} rolled back {when}; this VM is the live one"] + kept),
                            what)
        key = _field_key(session, create=False)
        if key is not None and field_value(session, vm):
            session.content.customFieldsManager.SetField(entity=vm, key=key, value=f"rolled back {when}")
    except TRANSPORT_ERRORS as exc:
        raise translate(exc, what) from None
    except vmodl.MethodFault as exc:
        raise OperationError(f"vSphere refused: {exc.msg or type(exc).__name__}", where=what) from None
    return {"action": "unmark"}


def tools_running(vm: Any) -> bool:
    return str(vm.guest.toolsRunningStatus) == "guestToolsRunning"
