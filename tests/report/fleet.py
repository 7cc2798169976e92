"""A fleet report built from fixture facts: the collector documents under tests/facts/linux and
tests/windows/guests, parsed and checked by the real registry, spread over N guests with groups,
an unreachable guest, active and expired waivers and hostile names. No guest is contacted."""

from __future__ import annotations

import datetime as dt
import json
from functools import lru_cache
from pathlib import Path

from guestprep import report
from guestprep.checks import registry
from guestprep.facts import linux, summarize, windows
from guestprep.models import Finding, Guest, GuestReport, Readiness, Severity, Status, Transport, readiness_of
from guestprep.preflight import FleetReport
from guestprep.report import waivers

REPO = Path(__file__).resolve().parents[2]
GROUPS = ["web", "db", "batch", "finance", "dmz"]
HOSTILE = '<script>alert(1)</script>"\'><img src=x onerror=alert(2)>'


@lru_cache(maxsize=None)
def _profiles() -> tuple[tuple[str, str, object], ...]:
    out = []
    for p in sorted((REPO / "tests/facts/linux").glob("*.json")):
        out.append(("linux", p.stem, linux.parse(json.loads(p.read_text())["raw"])))
    for p in sorted((REPO / "tests/windows/guests").glob("*.json")):
        out.append(("windows", p.stem, windows.parse(json.loads(p.read_text()))))
    return tuple(out)


def fleet_doc(n: int = 12, *, hostile: bool = True, with_waivers: bool = True, tmp: Path | None = None) -> dict:
    """The redacted, annotated document write_reports receives, for ``n`` guests."""
    profiles = _profiles()
    guests, reports = [], []
    for i in range(n):
        os_name, profile, facts = profiles[i % len(profiles)]
        name = f"{'win' if os_name == 'windows' else 'lnx'}-{profile.split('-')[0]}-{i:03d}"
        if hostile and i == 1:
            name = f"evil-{HOSTILE}"
        groups = (GROUPS[i % len(GROUPS)],) + (("pci",) if i % 7 == 0 else ())
        if i % 11 == 5:
            groups = ()
        g = Guest(name=name, address=f"10.0.{i // 250}.{i % 250 + 1}",
                  transport=Transport.WINRM if os_name == "windows" else Transport.SSH, groups=groups)
        guests.append(g)
        if i % 50 == 3:  # unreachable
            f = Finding(guest=name, check_id="WIN-REACHABLE" if os_name == "windows" else "LNX-REACHABLE",
                        severity=Severity.BLOCKER, status=Status.UNREACHABLE, title="Guest reachable",
                        message="connection refused by 10.0.0.4:22", resource="collector")
            reports.append(GuestReport(guest=name, address=g.address, os=os_name, transport=g.transport.value,
                                       readiness=Readiness.UNKNOWN, findings=[f], error=f.message, duration=0.4))
            continue
        findings = registry.evaluate(os_name, facts, name)
        if hostile and i == 1:
            findings[0].message = HOSTILE
            findings[0].resource = HOSTILE
        reports.append(GuestReport(guest=name, address=g.address, os=os_name, transport=g.transport.value,
                                   readiness=Readiness.UNKNOWN, findings=findings,
                                   facts_summary=summarize(os_name, facts), duration=1.0 + (i % 9) / 10))
    waiver_file = None
    if with_waivers:
        today = dt.date.today()
        waiver_file = (tmp or Path("/tmp")) / "gp-report-waivers.yaml"
        waiver_file.write_text(
            "waivers:\n"
            "  - check: LNX-NIC-NAME-BOUND\n    guest: 'lnx-*'\n    reason: NIC names pinned during cutover\n"
            f"    by: network team\n    expires: {today + dt.timedelta(days=90)}\n"
            "  - check: WIN-QEMU-GA\n    guest: 'win-*'\n    reason: agent installed from the golden image\n"
            f"    by: windows team\n    expires: {today - dt.timedelta(days=3)}\n")
        waivers.apply([f for r in reports for f in r.findings], waivers.load(waiver_file))
    for r in reports:
        r.readiness = readiness_of(r.findings, r.error)
    fleet = FleetReport(guests=reports, started="2026-01-31T09:00:00+00:00", finished="2026-01-31T09:04:12+00:00",
                        complete=True, phase="pre")
    return report.annotate(fleet.to_dict(), guests=guests, waivers=waiver_file, run_id="20260131T090000-abc123")
