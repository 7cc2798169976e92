"""The wave controller: lock, journal, every VM through the state machine on the fleet runner, report.

The controller only orchestrates: conversions run on the Proxmox nodes (guestprep-host over
SSH), bounded by ``--per-node`` and ``--per-datastore``; ``--parallel`` bounds the VMs in
flight. `run` starts a wave, `resume` continues one (same plan hash), `rollback` undoes one
VM; all three hold the wave's lock for their whole run.

Progress: the caller gets an :class:`Event` for every step boundary and phase change the journal
commits (and for what steps say they do), from the VM jobs' threads; rendering is the command's.
"""

from __future__ import annotations

import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from guestprep.errors import ConfigError

from guestprep.cutover import machine, report
from guestprep.cutover.journal import FINAL_PHASES, Journal, WaveLock
from guestprep.cutover.sides import Secrets
from guestprep.cutover.steps import Limits, RunOptions, VmContext
from guestprep.cutover.wave import Wave

RESUMABLE_SKIP = ("done", "rolled_back", "held")


@dataclass(frozen=True)
class Event:
    """Something a VM of the wave did, as it happens: what live progress shows.

    ``kind`` is ``step`` (``status`` running | done | failed, with ``seconds`` once it ended,
    ``held`` when its post-condition was found already true, ``text`` the error of a failure),
    ``phase`` (``status`` the VM's new phase, ``text`` its error when a failure phase records one that no
    failed step told) or ``note`` (``text``: what a step says it does,
    e.g. which disk it converts). Step and phase events are the journal's own boundaries, sent
    right after they were committed; the journal stays the record."""

    vm: str
    node: str
    kind: str
    step: str | None = None
    status: str | None = None
    attempt: int | None = None
    seconds: float | None = None
    held: bool = False
    text: str = ""
    at: float = 0.0                     # time.time() when it happened


Events = Callable[[Event], None]


class WatchedJournal:
    """The wave's journal, telling ``emit`` of every step boundary and phase change it commits.

    Everything else is the journal's own (attribute access falls through). ``emit`` must be
    thread-safe (VM jobs run in parallel); a failing ``emit`` (a closed terminal) never fails a
    step: the boundary is committed before anyone is told."""

    def __init__(self, journal: Journal, wave: Wave, emit: Events):
        self._j, self._emit = journal, emit
        self._node = {vm.name: vm.node for vm in wave.vms}
        self._open: dict[int, tuple[str, str, int, float]] = {}
        self._phase: dict[str, str | None] = {}
        self._failed: dict[str, str] = {}   # the last step error per VM: a phase recording it does not repeat it
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._j, name)

    def tell(self, vm: str, kind: str, **fields: Any) -> None:
        try:
            self._emit(Event(vm=vm, node=self._node.get(vm, "?"), kind=kind, at=time.time(), **fields))
        except Exception:  # progress is what the operator sees, not the record: never a reason to fail
            pass

    def start_attempt(self, vm: str, step: str, inputs: dict[str, Any]) -> int:
        attempt_id = self._j.start_attempt(vm, step, inputs)
        number = sum(1 for a in self._j.attempts(vm) if a["step"] == step)
        with self._lock:
            self._open[attempt_id] = (vm, step, number, time.monotonic())
        self.tell(vm, "step", step=step, status="running", attempt=number)
        return attempt_id

    def _closed(self, attempt_id: int, status: str, **fields: Any) -> None:
        with self._lock:
            opened = self._open.pop(attempt_id, None)
        if opened is not None:
            vm, step, number, t0 = opened
            self.tell(vm, "step", step=step, status=status, attempt=number,
                      seconds=round(time.monotonic() - t0, 3), **fields)

    def finish_attempt(self, attempt_id: int, outputs: dict[str, Any]) -> None:
        self._j.finish_attempt(attempt_id, outputs)
        self._closed(attempt_id, "done", held=outputs.get("postcondition_held") is True)

    def fail_attempt(self, attempt_id: int, error: str, outputs: dict[str, Any] | None = None) -> None:
        self._j.fail_attempt(attempt_id, error, outputs)
        with self._lock:
            vm = self._open.get(attempt_id, ("",))[0]
            self._failed[vm] = error
        self._closed(attempt_id, "failed", text=error)

    def set_vm(self, vm: str, phase: str, **fields: Any) -> None:
        self._j.set_vm(vm, phase, **fields)
        error = fields.get("error")
        with self._lock:
            changed, self._phase[vm] = self._phase.get(vm) != phase, phase
            untold = error if isinstance(error, str) and error not in (self._failed.get(vm) or "") else ""
        if changed:
            self.tell(vm, "phase", status=phase, text=untold if phase.endswith("failed") else "")

    def note(self, vm: str) -> Callable[[str], None]:
        """What the VM's steps say (e.g. which disk a conversion reads), as ``note`` events. Step
        boundaries and phases are never words: they are the journal's own events above."""
        def say(text: str) -> None:
            self.tell(vm, "note", text=text)
        return say


@dataclass
class WaveResult:
    phases: dict[str, str]
    report_files: list[str]

    @property
    def exit_code(self) -> int:
        return 0 if all(p == "done" for p in self.phases.values()) else 1


@contextmanager
def opened(wave: Wave, *, create: bool) -> Iterator[Journal]:
    """The wave's journal, under its lock. ``create`` makes the state directory for a first run."""
    state = wave.state_dir
    if not state.is_dir():
        if not create:
            raise ConfigError("no journal for this wave (it was never run)", where=str(state))
        state.mkdir(mode=0o700)
    lock = WaveLock(state / "lock").acquire()
    journal = Journal(state / "journal.sqlite")
    try:
        yield journal
    finally:
        journal.close()
        lock.release()


def _select(wave: Wave, journal: WatchedJournal, resume: bool) -> list:
    items = []
    for vm in wave.vms:
        phase = (journal.vm(vm.name) or {}).get("phase")
        if resume and phase in RESUMABLE_SKIP:
            journal.tell(vm.name, "phase", status=phase, text="before this resume")
            continue
        if phase is None:
            journal.set_vm(vm.name, "pending")
        items.append(SimpleNamespace(name=vm.name, plan=vm))
    return items


def run_wave(wave: Wave, secrets: Secrets, options: RunOptions, *, parallel: int, limits: Limits, resume: bool,
             events: Events) -> WaveResult:
    """Every selected VM through its steps, ``parallel`` at once; ``events`` is told as they go."""
    from guestprep.runner import run_guests

    with opened(wave, create=not resume) as plain:
        journal = WatchedJournal(plain, wave, events)
        journal.bind_plan(wave.plan_hash, str(wave.path), resume=resume)
        journal.interrupt_stale()  # we hold the lock: a 'running' attempt is a dead controller's
        journal.set_meta("last_controller_pid", str(os.getpid()))
        items = _select(wave, journal, resume)

        def job(item, interrupt) -> tuple[str, str]:
            ctx = VmContext(wave, item.plan, journal, secrets, options, limits, journal.note(item.name))
            try:
                return item.name, machine.run_vm(ctx)
            finally:
                ctx.close()

        def crashed(item, exc: BaseException) -> tuple[str, str]:
            journal.set_vm(item.name, "failed", error=f"controller error: {type(exc).__name__}: {exc}")
            return item.name, "failed"

        run_guests(items, job, parallel, crashed)
        phases = {vm.name: (plain.vm(vm.name) or {}).get("phase", "pending") for vm in wave.vms}
        files = report.write(wave, plain)
    return WaveResult(phases, files)


def rollback_one(wave: Wave, vm_name: str, secrets: Secrets, options: RunOptions, events: Events) -> WaveResult:
    vm = wave.vm(vm_name)
    with opened(wave, create=False) as plain:
        journal = WatchedJournal(plain, wave, events)
        journal.bind_plan(wave.plan_hash, str(wave.path), resume=True)
        journal.interrupt_stale()
        ctx = VmContext(wave, vm, journal, secrets, options, Limits(), journal.note(vm_name))
        try:
            machine.rollback_vm(ctx)
        finally:
            ctx.close()
        phases = {v.name: (plain.vm(v.name) or {}).get("phase", "pending") for v in wave.vms}
        files = report.write(wave, plain)
    return WaveResult({vm_name: phases[vm_name]}, files)


def status(wave: Wave) -> dict[str, Any]:
    """Read-only: the journal as it is (no lock needed: WAL readers never block the writer)."""
    path = wave.state_dir / "journal.sqlite"
    if not path.is_file():
        raise ConfigError("no journal for this wave (it was never run)", where=str(wave.state_dir))
    journal = Journal(path)
    try:
        hash_ok = journal.get_meta("plan_hash") == wave.plan_hash
        return {**report.document(wave, journal), "plan_hash_matches": hash_ok,
                "final": all(((journal.vm(v.name) or {}).get("phase") in FINAL_PHASES) for v in wave.vms)}
    finally:
        journal.close()
