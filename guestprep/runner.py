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

Workers are daemon threads: a run that ends on Ctrl-C never waits at interpreter exit for a
connection attempt still in flight (a silent guest held the process ~30 s after the reports
were written, and a second Ctrl-C there printed a traceback).
"""

from __future__ import annotations

import queue
import threading
import time
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


class _Crash:
    def __init__(self, exc: BaseException):
        self.exc = exc


def run_guests(guests: list[Guest], job: Callable[[Guest, Interrupt], R], parallel: int,
               crashed: Callable[[Guest, BaseException], R],
               on_done: Callable[[R], None] | None = None,
               on_interrupt: Callable[..., None] | None = None,
               read_only: bool = False,
               on_tick: Callable[[list[tuple[str, float]]], None] | None = None) -> FleetRun[R]:
    """Run ``job`` for every guest, at most ``parallel`` at once.

    ``crashed(guest, exc)`` turns an exception a job let through into that guest's result.
    ``on_interrupt(n, running)`` is told of the n-th Ctrl-C (1: stopping, 2+: aborting) and of the
    guests still running then. ``on_tick(running)`` is called from the main thread a few times a
    second with (guest name, seconds since it started) of every guest in progress.
    """
    interrupt = Interrupt()
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for i in range(len(guests)):
        todo.put(i)
    done: queue.SimpleQueue[tuple[int, Any]] = queue.SimpleQueue()
    running: dict[int, float] = {}
    lock = threading.Lock()

    def worker() -> None:
        while not interrupt.requested():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            with lock:
                running[i] = time.monotonic()
            try:
                try:
                    result: Any = job(guests[i], interrupt)
                except Exception as exc:  # one guest, never the fleet
                    result = crashed(guests[i], exc)
            except BaseException as exc:  # noqa: BLE001 - handed to the main thread, raised there
                result = _Crash(exc)
            finally:
                interrupt.job_finished()
                with lock:
                    running.pop(i, None)
            done.put((i, result))

    def in_progress() -> list[tuple[str, float]]:
        now = time.monotonic()
        with lock:
            items = sorted(running.items(), key=lambda kv: kv[1])
        return [(guests[i].name, now - t) for i, t in items]

    threads = [threading.Thread(target=worker, name=f"guest-{n}", daemon=True)
               for n in range(max(1, min(parallel, len(guests))))]
    for t in threads:
        t.start()
    results: dict[int, R] = {}  # keyed by position, never by name: two guests never share a slot
    presses = 0
    try:
        presses = _collect(guests, results, done, threads, interrupt, in_progress, on_done, on_interrupt, on_tick,
                           read_only)
    finally:
        if not read_only and any(t.is_alive() for t in threads):
            # left by an error in a callback: a run that changes guests never leaves one mid-operation
            interrupt.request()
            while any(t.is_alive() for t in threads):
                try:
                    for t in threads:
                        t.join(0.2)
                except KeyboardInterrupt:
                    interrupt.abort()
    ordered = [results[i] for i in range(len(guests)) if i in results]
    not_run = [g.name for i, g in enumerate(guests) if i not in results]
    return FleetRun(ordered, not_run, interrupted=presses > 0)


def _collect(guests, results, done, threads, interrupt, in_progress, on_done, on_interrupt, on_tick,
             read_only) -> int:
    """The main thread's loop: results in, callbacks, Ctrl-C; the number of Ctrl-C presses."""
    presses = 0
    while len(results) < len(guests):
        try:
            try:
                i, result = done.get(timeout=0.2)
            except queue.Empty:
                if on_tick:
                    on_tick(in_progress())
                if not any(t.is_alive() for t in threads) and done.empty():
                    break  # interrupted: the workers took no further guest
                continue
            if isinstance(result, _Crash):
                raise result.exc
            results[i] = result
            if on_done:
                on_done(result)
        except KeyboardInterrupt:
            presses += 1
            interrupt.request()
            if presses > 1 or read_only:
                interrupt.abort()
            if on_interrupt:
                on_interrupt(presses, [name for name, _ in in_progress()])
            if read_only:
                break  # nothing on a guest is half-done: do not wait for the (now disconnected) jobs
    return presses
