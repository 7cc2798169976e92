"""Operations: plan -> apply -> verify (pyinfra style).

An operation reads facts and returns a :class:`~guestprep.models.Plan` (data: what
would change, with diffs). ``prepare`` without ``--apply`` prints plans and changes
nothing. ``apply`` executes a plan through a connector, backing up every file it
touches and journaling each step on the guest; ``verify`` re-gathers facts and
re-runs the check the operation fixes. A second apply of a converged guest plans
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from guestprep.errors import GuestprepError
from guestprep.models import Plan


class OperationRegistryError(Exception):
    pass


@dataclass
class Applied:
    operation: str
    guest: str
    ok: bool
    steps: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "guest": self.guest, "ok": self.ok,
                "steps": self.steps, "message": self.message}


class Operation(Protocol):
    """What ``prepare`` drives, per OS. Register instances with :func:`operation`.

    ``plan`` is pure (facts -> Plan). ``apply`` executes exactly the plan through the
    connector, backing up each file it changes and journaling each step on the guest
    (Linux: /var/lib/guestprep/journal.json; Windows: C:\\ProgramData\\guestprep\\journal.json).
    Verification is generic: the engine re-collects facts and re-runs the checks in
    ``fixes``; they must now pass.
    """

    id: str          # "linux.initramfs_virtio"
    os: str          # linux | windows | vm
    title: str
    fixes: tuple[str, ...]  # check ids it turns from fail to pass

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan: ...

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied: ...


class GuestOperation:
    """The shared part of the Linux and Windows operations: ``apply`` refuses another operation's
    plan and hands the plan to the OS's executor (``execute``); subclasses write ``plan``."""

    os = ""
    order = 100
    id = ""
    title = ""
    fixes: tuple[str, ...] = ()

    def execute(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        raise NotImplementedError

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        if plan.operation != self.id:
            raise GuestprepError(f"plan for {plan.operation} given to {self.id}")
        return self.execute(conn, plan, options)


_OPERATIONS: dict[str, Any] = {}


def operation(cls_or_obj: Any) -> Any:
    """Register an operation class/object under its ``id``; duplicates are refused."""
    op_id = getattr(cls_or_obj, "id", None)
    if not op_id:
        raise OperationRegistryError(f"{cls_or_obj!r} has no id")
    if op_id in _OPERATIONS and _OPERATIONS[op_id] is not cls_or_obj:
        raise OperationRegistryError(f"duplicate operation id {op_id!r}")
    _OPERATIONS[op_id] = cls_or_obj
    return cls_or_obj


def load_all() -> dict[str, Any]:
    import importlib
    import pkgutil

    for pkg_name in ("guestprep.operations.linux", "guestprep.operations.windows", "guestprep.operations.vm"):
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg_name}.{mod.name}")
    return dict(_OPERATIONS)


def registered() -> dict[str, Any]:
    return load_all()

