"""The one plan/apply engine: facts -> plans -> (apply -> journal -> re-collect -> verify).

For guests (``prepare_guest``: every operation of the guest's OS, errors reported per
operation so a fleet run goes on) and for one operation on one target (``run_one``: the
``vm`` commands, errors raised). OS-neutral: an OS package ``guestprep.operations.<os>``
(linux, windows, vm) provides the registered operations and, optionally,
``state.collect(conn, options)`` (extra raw state plans need), ``journal.record(conn, plan,
applied, options)`` (called after every apply: the controller-side record of VM changes;
guest operations journal on the guest themselves) and ``journal.rollback(conn, options)``.
Verification re-collects the facts and evaluates the checks each operation ``fixes``; an
operation may add ``verify_state``.
"""

from __future__ import annotations

import importlib
import importlib.util
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from guestprep.checks import registry as checks
from guestprep.errors import GuestprepError, OperationError
from guestprep.facts import collect as collect_facts, os_of
from guestprep.models import Guest, Plan, Status
from guestprep.operations import base
from guestprep.operations.base import Applied


@dataclass
class OpResult:
    operation: str
    title: str
    plan: Plan | None = None
    applied: dict[str, Any] | None = None
    verified: bool | None = None
    problems: list[str] = field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"operation": self.operation, "title": self.title,
                "plan": self.plan.to_dict() if self.plan else None, "applied": self.applied,
                "verified": self.verified, "problems": self.problems, "error": self.error}


@dataclass
class GuestResult:
    guest: str
    os: str
    ops: list[OpResult] = field(default_factory=list)
    error: str | None = None
    error_code: int = 0
    run_id: str = ""
    seconds: float = 0.0
    interrupted: bool = False   # Ctrl-C: operations after the one in progress were not applied, nor verified

    @property
    def changes(self) -> int:
        return sum(len(o.plan.changes) for o in self.ops if o.plan)

    @property
    def failed(self) -> bool:
        return bool(self.error) or any(o.error or o.verified is False for o in self.ops)

    def to_dict(self) -> dict[str, Any]:
        return {"guest": self.guest, "os": self.os, "run_id": self.run_id, "error": self.error,
                "changes": self.changes, "seconds": round(self.seconds, 2), "interrupted": self.interrupted,
                "ops": [o.to_dict() for o in self.ops]}


def operations_for(os: str) -> list[Any]:
    ops = [o() if isinstance(o, type) else o for o in base.registered().values()]
    ops = [o for o in ops if o.os == os]
    return sorted(ops, key=lambda o: (getattr(o, "order", 100), o.id))


def _os_module(os: str, name: str):
    """The OS's ``journal`` or ``state`` module; None where that OS has none (vm has no state).
    An import error inside a module that exists is raised, not taken for "has none"."""
    qualified = f"guestprep.operations.{os}.{name}"
    if importlib.util.find_spec(qualified) is None:
        return None
    return importlib.import_module(qualified)


def _apply(op: Any, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
    """Apply one plan and hand the result to the OS's journal (when it keeps one on this side)."""
    applied = op.apply(conn, plan, options)
    journal = _os_module(op.os, "journal")
    if journal is not None and hasattr(journal, "record"):
        journal.record(conn, plan, applied, options)
    return applied


def read_state(conn: Any, os: str, options: dict[str, Any]) -> dict[str, Any]:
    mod = _os_module(os, "state")
    return mod.collect(conn, options) if mod and hasattr(mod, "collect") else {}


def plan_guest(facts: Any, guest: str, os: str, options: dict[str, Any]) -> list[OpResult]:
    """Pure: every operation's plan for these facts (a planning error is reported, not raised)."""
    results = []
    for op in operations_for(os):
        r = OpResult(op.id, op.title)
        try:
            r.plan = op.plan(facts, guest, options)
        except GuestprepError as exc:
            r.error = str(exc)
        except Exception as exc:  # a bug in one operation must not take the other plans down
            r.error = f"internal error while planning: {type(exc).__name__}: {exc}"
        results.append(r)
    return results


def verify(op: Any, facts: Any, guest: str, state: dict[str, Any]) -> list[str]:
    problems = []
    for check_id in getattr(op, "fixes", ()):
        for f in checks.get(check_id).evaluate(facts, guest):
            if f.status not in (Status.PASS, Status.SKIPPED):
                problems.append(f"{check_id} {f.status.value}: {f.resource + ': ' if f.resource else ''}{f.message}")
    if hasattr(op, "verify_state"):
        problems += op.verify_state(facts, state)
    return problems


def prepare_guest(guest: Guest, options: dict[str, Any], connect: Callable[[Guest], Any],
                  apply: bool = False, stop: Callable[[], bool] | None = None) -> GuestResult:
    """``stop`` is asked before each operation is applied: once it says yes, the remaining
    operations are left alone (the guest journal holds what ran, so rollback works)."""
    os = os_of(guest)
    started = time.monotonic()
    res = GuestResult(guest.name, os, run_id=options.get("run_id") or time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6])
    opts = {**options, "run_id": res.run_id, "guest": guest.name, "sudo": guest.credentials.sudo}
    conn = None
    try:
        conn = connect(guest)
        timeout = opts.get("timeout", 300.0)
        facts = collect_facts(conn, os, timeout=timeout, sudo=opts["sudo"])
        opts["state"] = read_state(conn, os, opts)
        res.ops = plan_guest(facts, guest.name, os, opts)
        if not apply:
            return res
        by_id = {o.id: o for o in operations_for(os)}
        touched = []
        for r in res.ops:
            if r.error or not r.plan or r.plan.empty:
                continue
            if stop is not None and stop():
                res.interrupted = True
                break
            try:
                r.applied = _apply(by_id[r.operation], conn, r.plan, opts).to_dict()
                touched.append(r)
            except GuestprepError as exc:
                r.error = str(exc)
            except Exception as exc:  # a lost connection or a bug: what this op did is unknown, so go no further
                r.error = f"unexpected error while applying: {type(exc).__name__}: {exc}"
                res.error = "apply stopped; the guest journal records every step that ran (guestprep rollback)"
                res.error_code = 1
                break
        if touched and not res.interrupted and not res.error:
            facts = collect_facts(conn, os, timeout=timeout, sudo=opts["sudo"])
            state = read_state(conn, os, opts)
            for r in touched:
                r.problems = verify(by_id[r.operation], facts, guest.name, state)
                r.verified = not r.problems
    except GuestprepError as exc:
        res.error = str(exc)
        res.error_code = exc.exit_code
    finally:
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass
        res.seconds = time.monotonic() - started
    return res


def run_one(op_id: str, conn: Any, facts: Any, target: str, options: dict[str, Any], *, apply: bool,
            apply_options: dict[str, Any] | None = None, on_plan: Callable[[Plan], None] | None = None,
            recollect: Callable[[], Any] | None = None) -> tuple[Plan, Applied | None]:
    """One operation on one target (a VM): plan, then with ``apply`` apply, journal and verify.

    Errors are raised, not reported: there is one target and the command says why it failed.
    ``on_plan`` sees the plan before anything changes; ``apply_options`` add to ``options``
    for apply only (the VM object already found); ``recollect`` re-reads the facts to verify
    the checks the operation ``fixes``."""
    op = base.registered()[op_id]
    plan = op.plan(facts, target, options)
    if on_plan is not None:
        on_plan(plan)
    if not apply:
        return plan, None
    applied = _apply(op, conn, plan, {**options, **(apply_options or {})})
    if recollect is not None and getattr(op, "fixes", ()) and not plan.empty:
        problems = verify(op, recollect(), target, {})
        if problems:
            raise OperationError(f"applied, but not verified: {'; '.join(problems)}", where=f"{target}: {op_id}")
    return plan, applied


def rollback_guest(guest: Guest, options: dict[str, Any], connect: Callable[[Guest], Any]) -> list[dict[str, Any]]:
    os = os_of(guest)
    mod = _os_module(os, "journal")
    if mod is None or not hasattr(mod, "rollback"):
        raise OperationError(f"rollback is not implemented for {os} guests", where=f"guest {guest.name}")
    conn = connect(guest)
    try:
        return mod.rollback(conn, {**options, "guest": guest.name, "sudo": guest.credentials.sudo})
    finally:
        conn.close()


def exit_code(results: list[GuestResult]) -> int:
    """3 when a guest could not be reached, 1 when an operation failed or did not verify, else 0."""
    if any(r.error and r.error_code == 3 for r in results):
        return 3
    if any(r.failed for r in results):
        return 1
    return 0
