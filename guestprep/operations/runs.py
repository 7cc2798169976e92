"""prepare and rollback over a fleet: one engine job per guest on guestprep.runner, then the
run's document (outcome.fleet_doc) and exit code. Printing is the caller's (``on_done`` runs in
the main thread with each guest's result; ``on_interrupt`` is told of every Ctrl-C)."""

from __future__ import annotations

import time
from typing import Any, Callable

from guestprep.connectors import ConnectOptions, open_connector
from guestprep.errors import GuestprepError
from guestprep.facts import os_of
from guestprep.models import Guest
from guestprep.operations import engine, outcome
from guestprep.runner import Interrupt, run_guests


def _crashed_prepare(guest: Guest, exc: BaseException) -> engine.GuestResult:
    return engine.GuestResult(guest.name, os_of(guest), error=f"internal error: {type(exc).__name__}: {exc}",
                              error_code=1)


def _crashed_rollback(guest: Guest, exc: BaseException) -> outcome.RollbackResult:
    return outcome.RollbackResult(guest.name, os_of(guest), error=f"internal error: {type(exc).__name__}: {exc}",
                                  error_code=1)


def prepare_fleet(guests: list[Guest], connect: ConnectOptions, options: dict[str, Any], *, apply: bool,
                  parallel: int, on_done: Callable[[engine.GuestResult], None] | None = None,
                  on_interrupt: Callable[[int], None] | None = None) -> tuple[dict[str, Any], int]:
    """Plan (or apply and verify) every guest; the run's document and exit code."""

    def job(g: Guest, interrupt: Interrupt) -> engine.GuestResult:
        r = engine.prepare_guest(g, options, interrupt.tracking(lambda g: open_connector(g, connect)),
                                 apply=apply, stop=interrupt.requested)
        if interrupt.aborted and r.error:
            r.interrupted, r.error = True, f"aborted (Ctrl-C twice): {r.error}"
        return r

    started = outcome.now()
    run = run_guests(guests, job, parallel, _crashed_prepare, on_done=on_done, on_interrupt=on_interrupt)
    entries = {r.guest: outcome.prepare_entry(r, apply) for r in run.results}
    ordered = [entries.get(g.name) or outcome.not_run_entry(g.name, os_of(g)) for g in guests]
    doc = outcome.fleet_doc("guestprep.prepare/1", ordered, apply=apply, started=started, parallel=parallel,
                            complete=run.complete, not_run=run.not_run)
    return doc, outcome.prepare_exit(run.results, run.interrupted)


def rollback_fleet(guests: list[Guest], connect: ConnectOptions, options: dict[str, Any], *, parallel: int,
                   on_done: Callable[[outcome.RollbackResult], None] | None = None,
                   on_interrupt: Callable[[int], None] | None = None) -> tuple[dict[str, Any], int]:
    """Restore what every guest's journal recorded; the run's document and exit code."""

    def job(g: Guest, interrupt: Interrupt) -> outcome.RollbackResult:
        r = outcome.RollbackResult(g.name, os_of(g))
        started = time.monotonic()
        try:
            r.restored = engine.rollback_guest(g, options, interrupt.tracking(lambda g: open_connector(g, connect)))
        except GuestprepError as exc:
            r.error, r.error_code = str(exc), exc.exit_code
        r.seconds = time.monotonic() - started
        return r

    started = outcome.now()
    run = run_guests(guests, job, parallel, _crashed_rollback, on_done=on_done, on_interrupt=on_interrupt)
    entries = {r.guest: r.to_dict() for r in run.results}
    ordered = [entries.get(g.name) or {"guest": g.name, "os": os_of(g), "status": "not_run", "restored": [],
                                       "error": None, "seconds": 0.0} for g in guests]
    doc = outcome.fleet_doc("guestprep.rollback/1", ordered, started=started, parallel=parallel,
                            complete=run.complete, not_run=run.not_run)
    return doc, outcome.rollback_exit(run.results, run.interrupted)
