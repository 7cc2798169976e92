"""Fleet runs: bounded parallelism, per-guest timeouts, one guest's failure never
stops the others, Ctrl-C ends cleanly with a partial report marked incomplete."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from guestprep import __version__
from guestprep.checks import firmware, registry
from guestprep.connectors import ConnectOptions, open_connector
from guestprep.errors import CollectorError, CommandTimeout, ConnectionFailed, GuestprepError
from guestprep.facts import collect, os_of, summarize
from guestprep.models import (
    REPORT_SCHEMA, Finding, Guest, GuestReport, Readiness, Severity, SourceVM, Status, readiness_of,
)
from guestprep.secrets import redact


@dataclass
class FleetOptions:
    parallel: int = 32
    timeout: float = 300.0
    phase: str = "pre"
    connect: ConnectOptions = field(default_factory=ConnectOptions)


@dataclass
class FleetReport:
    guests: list[GuestReport]
    started: str
    finished: str
    complete: bool
    phase: str
    not_run: list[str] = field(default_factory=list)
    tool_version: str = __version__

    def summary(self) -> dict[str, int]:
        counts = {r.value: 0 for r in Readiness}
        for g in self.guests:
            counts[g.readiness.value] += 1
        counts["total"] = len(self.guests)
        counts["not_run"] = len(self.not_run)
        return counts

    def findings(self) -> Iterable[Finding]:
        for g in self.guests:
            yield from g.findings

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": REPORT_SCHEMA,
            "tool": {"name": "guestprep", "version": self.tool_version},
            "phase": self.phase,
            "started": self.started,
            "finished": self.finished,
            "complete": self.complete,
            "not_run": self.not_run,
            "summary": self.summary(),
            "guests": [g.to_dict() for g in self.guests],
        }


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _reach_id(os: str) -> str:
    return "WIN-REACHABLE" if os == "windows" else "LNX-REACHABLE"


def _failure_report(guest: Guest, os: str, status: Status, message: str, started: float) -> GuestReport:
    meta = registry.get(_reach_id(os)).meta
    finding = Finding(
        guest=guest.name, check_id=meta.id, severity=Severity.BLOCKER, status=status, title=meta.title,
        message=redact(message), resource="collector", remediation=meta.remediation,
    )
    return GuestReport(guest=guest.name, address=guest.address, os=os, transport=guest.transport.value,
                       readiness=Readiness.UNKNOWN, findings=[finding], error=redact(message),
                       duration=time.monotonic() - started)


def load_vm_facts(guest: Guest) -> SourceVM | None:
    """The VM-level facts file a vSphere-generated inventory points at (``vars.vm_facts``)."""
    ref = guest.vars.get("vm_facts")
    if not ref:
        return None
    base = Path(guest.source.rsplit(":", 1)[0]).parent if ":" in guest.source else Path(".")
    path = Path(ref) if Path(ref).is_absolute() else base / ref
    try:
        return SourceVM.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise GuestprepError(f"VM facts file {path} not found", where=guest.source) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise GuestprepError(f"VM facts file {path} is invalid: {exc}", where=guest.source) from None


class _OpenConnections:
    """Connections in flight, so Ctrl-C can close them and their threads end promptly."""

    def __init__(self):
        self._lock = threading.Lock()
        self._conns: set[Any] = set()
        self.closing = False

    def add(self, conn: Any) -> None:
        with self._lock:
            self._conns.add(conn)
            if self.closing:
                conn.close()

    def discard(self, conn: Any) -> None:
        with self._lock:
            self._conns.discard(conn)

    def close_all(self) -> None:
        with self._lock:
            self.closing = True
            for c in list(self._conns):
                try:
                    c.close()
                except Exception:
                    pass


def preflight_guest(guest: Guest, options: FleetOptions, open_conns: _OpenConnections | None = None) -> tuple[GuestReport, SourceVM | None]:
    started = time.monotonic()
    os = os_of(guest)
    try:
        vm = load_vm_facts(guest)
    except GuestprepError as exc:
        return _failure_report(guest, os, Status.ERROR, str(exc), started), None
    conn = None
    try:
        conn = open_connector(guest, options.connect)
        if open_conns:
            open_conns.add(conn)
        facts = collect(conn, os, timeout=options.timeout, sudo=guest.credentials.sudo)
    except ConnectionFailed as exc:
        rep = _failure_report(guest, os, Status.UNREACHABLE, str(exc), started)
        return _with_vm(rep, vm, guest), vm
    except CommandTimeout as exc:
        rep = _failure_report(guest, os, Status.UNREACHABLE, f"collector timed out: {exc}", started)
        return _with_vm(rep, vm, guest), vm
    except CollectorError as exc:
        rep = _failure_report(guest, os, Status.ERROR, f"collector output unusable: {exc}", started)
        return _with_vm(rep, vm, guest), vm
    except GuestprepError as exc:
        rep = _failure_report(guest, os, Status.ERROR, str(exc), started)
        return _with_vm(rep, vm, guest), vm
    except Exception as exc:  # a bug or an unexpected library error: one guest, not the fleet
        rep = _failure_report(guest, os, Status.ERROR, f"internal error: {type(exc).__name__}: {exc}", started)
        return _with_vm(rep, vm, guest), vm
    finally:
        if conn is not None:
            if open_conns:
                open_conns.discard(conn)
            conn.close()
    findings = registry.evaluate(os, facts, guest.name, options.phase)
    rep = GuestReport(guest=guest.name, address=guest.address, os=os, transport=guest.transport.value,
                      readiness=Readiness.UNKNOWN, findings=findings, facts_summary=summarize(os, facts),
                      duration=time.monotonic() - started)
    return _with_vm(rep, vm, guest), vm


def _with_vm(rep: GuestReport, vm: SourceVM | None, guest: Guest) -> GuestReport:
    if vm is not None:
        rep.findings.extend(registry.evaluate("vm", vm, guest.name, "pre"))
        rep.findings.extend(firmware.for_report(rep.facts_summary, vm, guest))  # guest vs VM vs image audit
        rep.facts_summary["vm"] = {"name": vm.name, "moref": vm.moref, "firmware": vm.firmware,
                                   "guest_id": vm.guest_id, "power_state": vm.power_state}
    rep.readiness = readiness_of(rep.findings, rep.error if not rep.findings else None)
    return rep


def _fleet_vm_findings(vms: dict[str, SourceVM]) -> list[Finding]:
    if not vms:
        return []
    try:
        from guestprep.checks.vm.fleet import fleet_findings  # provided with the vSphere checks
    except ImportError:
        return []
    return list(fleet_findings(list(vms.values())))


def run_preflight(guests: list[Guest], options: FleetOptions,
                  on_done: Callable[[GuestReport], None] | None = None) -> FleetReport:
    started = _now()
    reports: dict[str, GuestReport] = {}
    vms: dict[str, SourceVM] = {}
    open_conns = _OpenConnections()
    complete = True
    pool = ThreadPoolExecutor(max_workers=max(1, options.parallel), thread_name_prefix="guest")
    futures: dict[Future, Guest] = {pool.submit(preflight_guest, g, options, open_conns): g for g in guests}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                rep, vm = fut.result()
                reports[rep.guest] = rep
                if vm is not None:
                    vms[rep.guest] = vm
                if on_done:
                    on_done(rep)
    except KeyboardInterrupt:
        complete = False
        for fut in pending:
            fut.cancel()
        open_conns.close_all()
    finally:
        pool.shutdown(wait=complete, cancel_futures=not complete)
    by_guest = {r.guest: r for r in reports.values()}
    for f in _fleet_vm_findings(vms):
        if f.guest in by_guest:
            by_guest[f.guest].findings.append(f)
            by_guest[f.guest].readiness = readiness_of(by_guest[f.guest].findings)
    ordered = [by_guest[g.name] for g in guests if g.name in by_guest]
    not_run = [g.name for g in guests if g.name not in by_guest]
    return FleetReport(guests=ordered, started=started, finished=_now(), complete=complete and not not_run,
                       phase=options.phase, not_run=not_run)
