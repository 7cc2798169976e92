"""The one fleet runner: one job per guest (preflight, prepare, rollback) on a bounded thread pool.

One guest's failure never stops the others: whatever a job raises becomes that guest's
result (``crashed``). Worker threads never print; ``on_done`` runs in the main thread, so
each guest's output comes out whole (and a progress bar advances there). A job opens its
connections through ``Interrupt.tracking`` so Ctrl-C can reach them; per-guest timeouts
are the connectors' (every command runs with one).

Ctrl-C, for runs that change guests: once, no new guest starts and running jobs stop before
their next operation (``Interrupt.requested``); again, their connections are closed so they
end promptly. Steps already on a guest finish there and its journal stays valid, so
``guestprep rollback`` works.

Ctrl-C, for read-only runs (``read_only=True``, preflight): nothing on a guest can be left
half-done, so the first Ctrl-C closes every connection and the run ends at once; guests
that had not finished are reported as not run.
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from guestprep.models import Guest

R = TypeVar("R")


class Interrupt:
    """Shared between the main thread (which sees Ctrl-C) and the jobs."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        self._mine = threading.local()  # the connections this worker thread opened
        self.aborted = False

    def requested(self) -> bool:
        return self._requested.is_set()

    def request(self) -> None:
        self._requested.set()

    def abort(self) -> None:
        """Close every open connection (second Ctrl-C, or the first of a read-only run)."""
        with self._lock:
            self.aborted = True
            conns = list(self._conns)
        for c in conns:
            try:
                c.close()
            except Exception:
                pass

    def tracking(self, connect: Callable[[Guest], Any]) -> Callable[[Guest], Any]:
        """Wrap a connect function so abort() can reach the connection it opens."""

        def open_tracked(guest: Guest) -> Any:
            conn = connect(guest)
            with self._lock:
                self._conns.add(conn)
                late = self.aborted
            self._mine.__dict__.setdefault("conns", []).append(conn)
            if late:
                conn.close()
            return conn

        return open_tracked

    def job_finished(self) -> None:
        """The job closed its connections itself; stop holding them."""
        mine = self._mine.__dict__.pop("conns", [])
        with self._lock:
            for c in mine:
                self._conns.discard(c)


@dataclass
class FleetRun(Generic[R]):
    results: list[R]                      # in the order the guests were given
    not_run: list[str] = field(default_factory=list)
    interrupted: bool = False

    @property
    def complete(self) -> bool:
        return not self.interrupted and not self.not_run


def run_guests(guests: list[Guest], job: Callable[[Guest, Interrupt], R], parallel: int,
               crashed: Callable[[Guest, BaseException], R],
               on_done: Callable[[R], None] | None = None,
               on_interrupt: Callable[[int], None] | None = None,
               read_only: bool = False) -> FleetRun[R]:
    """Run ``job`` for every guest, at most ``parallel`` at once.

    ``crashed(guest, exc)`` turns an exception a job let through into that guest's result.
    ``on_interrupt(n)`` is told of the n-th Ctrl-C (1: stopping, 2+: aborting).
    """
    interrupt = Interrupt()

    def one(guest: Guest) -> R:
        try:
            return job(guest, interrupt)
        except Exception as exc:  # one guest, never the fleet
            return crashed(guest, exc)
        finally:
            interrupt.job_finished()

    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="guest")
    # results are keyed by the guest's position, never its name: two guests never share a slot
    futures: dict[Future, int] = {pool.submit(one, g): i for i, g in enumerate(guests)}
    results: dict[int, R] = {}
    handled: set[Future] = set()
    presses = 0
    try:
        while len(handled) < len(futures):
            try:
                for fut in [f for f in futures if f.done() and f not in handled]:
                    handled.add(fut)
                    if not fut.cancelled():
                        results[futures[fut]] = fut.result()
                        if on_done:
                            on_done(results[futures[fut]])
                waiting = [f for f in futures if f not in handled and not f.done()]
                if waiting:
                    wait(waiting, timeout=0.5, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                presses += 1
                interrupt.request()
                for f in futures:
                    f.cancel()  # only the ones not started yet
                if presses > 1 or read_only:
                    interrupt.abort()
                if on_interrupt:
                    on_interrupt(presses)
                if read_only:
                    break
    finally:
        # a read-only run that was interrupted does not wait for its (now disconnected) jobs
        pool.shutdown(wait=not (read_only and presses), cancel_futures=True)
    ordered = [results[i] for i in range(len(guests)) if i in results]
    not_run = [g.name for i, g in enumerate(guests) if i not in results]
    return FleetRun(ordered, not_run, interrupted=presses > 0)
