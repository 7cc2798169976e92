"""The preflight stage: assess one guest (collect facts, evaluate the checks, add the VM's facts)
and the fleet's report. The fleet run itself is guestprep.runner's: bounded parallelism,
one guest's failure never stops the others, Ctrl-C ends cleanly with a partial report
marked incomplete."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from guestprep import __version__
from guestprep.checks import firmware, registry
from guestprep.checks.vm.fleet import fleet_findings
from guestprep.connectors import ConnectOptions, open_connector
from guestprep.errors import CollectorError, CommandTimeout, ConnectionFailed, GuestprepError
from guestprep.facts import collect, os_of, summarize
from guestprep.models import (
    REPORT_SCHEMA, Finding, Guest, GuestReport, Readiness, Severity, SourceVM, Status, readiness_of,
)
from guestprep.runner import Interrupt, run_guests
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

    def apply_waivers(self, waiver_list: list[Any]) -> list[Any]:
        """Mark the waived findings and judge each guest again: a waived blocker no longer blocks, so the
        readiness written to report.json (and carried by ``handoff --guest-facts`` into finalize) agrees
        with the exit code. Returns the expired waivers that matched something."""
        from guestprep.report import waivers

        expired = waivers.apply(self.findings(), waiver_list)
        for g in self.guests:
            g.readiness = readiness_of(g.findings, g.error if not g.findings else None)
        return expired

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


def _failure_report(guest: Guest, os: str, status: Status, message: str, started: float,
                    detail: str | None = None) -> GuestReport:
    meta = registry.get(_reach_id(os)).meta
    finding = Finding(
        guest=guest.name, check_id=meta.id, severity=Severity.BLOCKER, status=status, title=meta.title,
        message=redact(message), resource="collector", remediation=meta.remediation,
        evidence={"detail": redact(detail)} if detail else {},  # the library's full text, for whoever digs
    )
    return GuestReport(guest=guest.name, address=guest.address, os=os, transport=guest.transport.value,
                       readiness=Readiness.UNKNOWN, findings=[finding], error=redact(message),
                       duration=time.monotonic() - started)


def load_vm_facts(guest: Guest) -> SourceVM | None:
    """The VM-level facts file a vSphere-generated inventory points at (``vars.vm_facts``)."""
    ref = guest.vars.get("vm_facts")
    if not ref:
        return None
    path = Path(ref) if Path(ref).is_absolute() else guest.inventory_dir / ref
    try:
        return SourceVM.from_dict(json.loads(path.read_text()))
    except FileNotFoundError:
        raise GuestprepError(f"VM facts file {path} not found", where=guest.source) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise GuestprepError(f"VM facts file {path} is invalid: {exc}", where=guest.source) from None


# Why a guest could not be assessed, most specific first: (exception type, status, message prefix).
# A bug or an unexpected library error (the last row) costs one guest, never the fleet.
COLLECT_FAILURES: tuple[tuple[type[BaseException], Status, str], ...] = (
    (ConnectionFailed, Status.UNREACHABLE, ""),
    (CommandTimeout, Status.UNREACHABLE, "collector timed out: "),
    (CollectorError, Status.ERROR, "collector output unusable: "),
    (GuestprepError, Status.ERROR, ""),
    (Exception, Status.ERROR, "internal error: "),
)


def _failure_of(exc: BaseException) -> tuple[Status, str]:
    for kind, status, prefix in COLLECT_FAILURES:
        if isinstance(exc, kind):
            detail = f"{type(exc).__name__}: {exc}" if kind is Exception else str(exc)
            return status, prefix + detail
    raise exc  # not an Exception (KeyboardInterrupt, SystemExit): not ours to turn into a finding


def preflight_guest(guest: Guest, options: FleetOptions,
                    connect: Callable[[Guest], Any] | None = None) -> tuple[GuestReport, SourceVM | None]:
    """One guest's report (and the VM facts it was judged with). ``connect`` opens its connection
    (the runner's tracked one, so Ctrl-C can close it); never raises for a guest's failure."""
    started = time.monotonic()
    os = os_of(guest)
    try:
        vm = load_vm_facts(guest)
    except GuestprepError as exc:
        return _failure_report(guest, os, Status.ERROR, str(exc), started), None
    connect = connect or (lambda g: open_connector(g, options.connect))
    conn = None
    try:
        conn = connect(guest)
        facts = collect(conn, os, timeout=options.timeout, sudo=guest.credentials.sudo)
    except Exception as exc:
        status, message = _failure_of(exc)
        return _with_vm(_failure_report(guest, os, status, message, started, getattr(exc, "detail", None)),
                        vm, guest), vm
    finally:
        if conn is not None:
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
    """Findings only the fleet shows (duplicate MACs, affinity between VMs being moved)."""
    return list(fleet_findings(list(vms.values()))) if vms else []


def not_checked_report(guest: Guest) -> GuestReport:
    """A guest the run did not finish (Ctrl-C): in every format, as not checked, never left out."""
    os = os_of(guest)
    meta = registry.get(_reach_id(os)).meta
    message = "not checked: the run was interrupted before this guest was assessed"
    finding = Finding(guest=guest.name, check_id=meta.id, severity=Severity.BLOCKER, status=Status.NOT_CHECKED,
                      title=meta.title, message=message, resource="collector")
    return GuestReport(guest=guest.name, address=guest.address, os=os, transport=guest.transport.value,
                       readiness=Readiness.UNKNOWN, findings=[finding], error=message, duration=0.0)


def run_preflight(guests: list[Guest], options: FleetOptions,
                  on_done: Callable[[GuestReport], None] | None = None,
                  on_tick: Callable[[list[tuple[str, float]]], None] | None = None,
                  on_interrupt: Callable[..., None] | None = None) -> FleetReport:
    started = _now()
    vms: dict[str, SourceVM] = {}

    def job(guest: Guest, interrupt: Interrupt) -> tuple[GuestReport, SourceVM | None]:
        return preflight_guest(guest, options, interrupt.tracking(lambda g: open_connector(g, options.connect)))

    def crashed(guest: Guest, exc: BaseException) -> tuple[GuestReport, SourceVM | None]:
        status, message = _failure_of(exc)  # preflight_guest catches everything; this is the runner's net
        return _failure_report(guest, os_of(guest), status, message, time.monotonic()), None

    def done(result: tuple[GuestReport, SourceVM | None]) -> None:
        rep, vm = result
        if vm is not None:
            vms[rep.guest] = vm
        if on_done:
            on_done(rep)

    run = run_guests(guests, job, options.parallel, crashed, on_done=done, read_only=True, on_tick=on_tick,
                     on_interrupt=on_interrupt)
    by_guest = {rep.guest: rep for rep, _ in run.results}
    for g in guests:
        if g.name in run.not_run:
            by_guest[g.name] = not_checked_report(g)
    for f in _fleet_vm_findings(vms):
        if f.guest in by_guest:
            by_guest[f.guest].findings.append(f)
            by_guest[f.guest].readiness = readiness_of(by_guest[f.guest].findings)
    ordered = [by_guest[g.name] for g in guests if g.name in by_guest]
    return FleetReport(guests=ordered, started=started, finished=_now(), complete=run.complete,
                       phase=options.phase, not_run=run.not_run)
