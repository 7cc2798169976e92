"""One VM's way through the steps, journaled at every boundary, and what happens when a step fails.

A step already ``done`` in the journal is skipped (its outputs are reused); any other step
first checks its post-condition, then acts. A failure before the source went down leaves it
running (phase ``failed``). A failure after it went down applies the run's policy:
``rollback`` stops the Proxmox copy and keeps it, removes the source mark, powers the source on
and waits for VMware Tools; ``hold`` stops the copy and leaves the source off. Either way the
state of both sides is read back and recorded.

Fault injection for the kill -9 matrix: ``GUESTPREP_CUTOVER_CRASH_AFTER=<step>`` (or
``<vm>:<step>``) makes the process ``os._exit(137)`` right after the step acted and before the
journal recorded it: the worst moment for a resume (steps.crash_point; finalize has points of its
own inside its sata-first switch).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from guestprep.errors import GuestprepError

from guestprep.cutover.steps import HOLD, ROLLBACK, STEPS, Step, VmContext, crash_point


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, GuestprepError):
        return str(exc)
    return f"internal error: {type(exc).__name__}: {exc}"


def run_step(ctx: VmContext, step: Step) -> dict[str, Any]:
    j, name = ctx.journal, ctx.vm.name
    done = j.done_outputs(name, step.name)
    if done is not None:
        return done
    attempt = j.start_attempt(name, step.name, {"vmid": ctx.vm.vmid, "node": ctx.vm.node})
    try:
        out = step.check(ctx)
        if out is not None:
            out = {**out, "postcondition_held": True}
        else:
            out = step.act(ctx)
        crash_point(name, step.name)
    except BaseException as exc:
        j.fail_attempt(attempt, _error_text(exc))
        raise
    j.finish_attempt(attempt, out)   # the boundary is the event: the journal tells progress (controller.WatchedJournal)
    return out


def _seconds_between(a: str, b: str) -> float:
    return round((dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds(), 3)


def observe(ctx: VmContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """Both sides as they are now (each read on its own: one side failing to answer is recorded)."""
    from guestprep.vsphere import marks

    try:
        vm = ctx.vm_object
        source = {"power": str(vm.runtime.powerState), "tools": str(vm.guest.toolsRunningStatus),
                  "marked": bool(marks.current(vm))}
    except Exception as exc:  # the record must say what is unknown, not fail
        source = {"unknown": _error_text(exc)}
    try:
        t = ctx.target_vm()
        target = {"exists": False} if t is None else {"exists": True, **t}
    except Exception as exc:
        target = {"unknown": _error_text(exc)}
    return source, target


def _source_went_down(ctx: VmContext) -> bool:
    return any(a["step"] in [s.name for s in STEPS.values() if s.source_down]
               for a in ctx.journal.attempts(ctx.vm.name))


def recover(ctx: VmContext, policy: str) -> str:
    """Apply ``rollback`` or ``hold``; returns the final phase."""
    j, name = ctx.journal, ctx.vm.name
    steps, busy, final = (ROLLBACK, "rolling_back", "rolled_back") if policy == "rollback" else \
        (HOLD, "holding", "held")
    j.set_vm(name, busy)
    try:
        for step in steps:
            run_step(ctx, step)
    except Exception as exc:
        source, target = observe(ctx)
        j.set_vm(name, f"{policy}_failed", source=source, target=target,
                 error=f"{(j.vm(name) or {}).get('error') or ''}; {policy} failed: {_error_text(exc)}".lstrip("; "))
        return f"{policy}_failed"
    source, target = observe(ctx)
    j.set_vm(name, final, source=source, target=target)
    return final


def run_vm(ctx: VmContext) -> str:
    """Drive one VM to ``done``, or to a safe, recorded state. Returns the final phase."""
    j, name = ctx.journal, ctx.vm.name
    cur = j.vm(name) or {}
    if cur.get("phase") in ("rolling_back", "holding"):  # a resume in the middle of a recovery finishes it
        return recover(ctx, "rollback" if cur["phase"] == "rolling_back" else "hold")
    j.set_vm(name, "running")
    outputs: dict[str, dict[str, Any]] = {}
    try:
        for step_name in ctx.vm.steps:
            outputs[step_name] = run_step(ctx, STEPS[step_name])
    except Exception as exc:
        error = _error_text(exc)   # the failed attempt was told; the phase below carries it too
        if not _source_went_down(ctx):
            source, target = observe(ctx)
            j.set_vm(name, "failed", source=source, target=target, error=error)
            return "failed"
        j.set_vm(name, "running", error=error)
        return recover(ctx, ctx.o.on_failure)
    off = (outputs.get("shutdown") or {}).get("powered_off_at")
    first = (outputs.get("verify") or {}).get("agent_first_answer_at")
    downtime = _seconds_between(off, first) if off and first else None
    source, target = observe(ctx)
    j.set_vm(name, "done", source=source, target=target, downtime_s=downtime, error=None)
    return "done"


def rollback_vm(ctx: VmContext) -> str:
    """`cutover rollback VM`: the copy stopped and kept, the source unmarked and running again."""
    return recover(ctx, "rollback")
