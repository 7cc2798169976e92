"""The wave controller: lock, journal, every VM through the state machine on the fleet runner, report.

The controller only orchestrates: conversions run on the Proxmox nodes (guestprep-host over
SSH), bounded by ``--per-node`` and ``--per-datastore``; ``--parallel`` bounds the VMs in
flight. `run` starts a wave, `resume` continues one (same plan hash), `rollback` undoes one
VM; all three hold the wave's lock for their whole run.
"""

from __future__ import annotations

import os
import threading
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


def _select(wave: Wave, journal: Journal, resume: bool) -> list:
    items = []
    for vm in wave.vms:
        phase = (journal.vm(vm.name) or {}).get("phase")
        if resume and phase in RESUMABLE_SKIP:
            continue
        if phase is None:
            journal.set_vm(vm.name, "pending")
        items.append(SimpleNamespace(name=vm.name, plan=vm))
    return items


def run_wave(wave: Wave, secrets: Secrets, options: RunOptions, *, parallel: int, limits: Limits, resume: bool,
             say: Callable[[str, str], None]) -> WaveResult:
    from guestprep.runner import run_guests

    with opened(wave, create=not resume) as journal:
        journal.bind_plan(wave.plan_hash, str(wave.path), resume=resume)
        journal.interrupt_stale()  # we hold the lock: a 'running' attempt is a dead controller's
        journal.set_meta("last_controller_pid", str(os.getpid()))
        items = _select(wave, journal, resume)
        lock = threading.Lock()

        def tell(vm: str) -> Callable[[str], None]:
            def out(text: str) -> None:
                with lock:
                    say(vm, text)
            return out

        def job(item, interrupt) -> tuple[str, str]:
            ctx = VmContext(wave, item.plan, journal, secrets, options, limits, tell(item.name))
            try:
                return item.name, machine.run_vm(ctx)
            finally:
                ctx.close()

        def crashed(item, exc: BaseException) -> tuple[str, str]:
            journal.set_vm(item.name, "failed", error=f"controller error: {type(exc).__name__}: {exc}")
            return item.name, "failed"

        run_guests(items, job, parallel, crashed)
        phases = {vm.name: (journal.vm(vm.name) or {}).get("phase", "pending") for vm in wave.vms}
        files = report.write(wave, journal)
    return WaveResult(phases, files)


def rollback_one(wave: Wave, vm_name: str, secrets: Secrets, options: RunOptions,
                 say: Callable[[str, str], None]) -> WaveResult:
    vm = wave.vm(vm_name)
    with opened(wave, create=False) as journal:
        journal.bind_plan(wave.plan_hash, str(wave.path), resume=True)
        journal.interrupt_stale()
        ctx = VmContext(wave, vm, journal, secrets, options, Limits(), lambda t: say(vm_name, t))
        try:
            machine.rollback_vm(ctx)
        finally:
            ctx.close()
        phases = {v.name: (journal.vm(v.name) or {}).get("phase", "pending") for v in wave.vms}
        files = report.write(wave, journal)
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
