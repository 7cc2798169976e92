"""A waived blocker no longer blocks: the readiness report.json carries (and `handoff --guest-facts`
hands to finalize) is judged after the waivers, as the exit code is. Before, a guest whose every
blocker was waived still said "blocked" and finalize refused it."""

from __future__ import annotations

import datetime as dt

from guestprep.models import Finding, GuestReport, Readiness, Severity, Status
from guestprep.preflight import FleetReport
from guestprep.report.waivers import Waiver


def _report(*findings: Finding) -> FleetReport:
    g = GuestReport(guest="web01", address="10.0.0.5", os="linux", transport="ssh",
                    readiness=Readiness.BLOCKED, findings=list(findings))
    return FleetReport(guests=[g], started="", finished="", complete=True, phase="pre")


def _finding(check: str, severity: Severity) -> Finding:
    return Finding(guest="web01", check_id=check, severity=severity, status=Status.FAIL, title=check, message="")


def _waiver(check: str, expires: dt.date) -> Waiver:
    return Waiver(check=check, guest="*", resource="*", reason="accepted", by="test", expires=expires, where="w.yaml")


FUTURE, PAST = dt.date(2999, 1, 1), dt.date(2000, 1, 1)


def test_every_blocker_waived_is_ready_with_the_open_warning():
    rep = _report(_finding("LNX-KERNEL-VIRTIO", Severity.BLOCKER), _finding("LNX-QEMU-GA", Severity.WARNING))
    assert rep.apply_waivers([_waiver("LNX-KERNEL-VIRTIO", FUTURE)]) == []
    assert rep.guests[0].readiness is Readiness.READY_WITH_WARNINGS
    assert rep.summary()["blocked"] == 0


def test_one_blocker_left_open_still_blocks():
    rep = _report(_finding("LNX-KERNEL-VIRTIO", Severity.BLOCKER), _finding("LNX-INITRAMFS-VIRTIO", Severity.BLOCKER))
    rep.apply_waivers([_waiver("LNX-KERNEL-VIRTIO", FUTURE)])
    assert rep.guests[0].readiness is Readiness.BLOCKED


def test_an_expired_waiver_waives_nothing():
    rep = _report(_finding("LNX-KERNEL-VIRTIO", Severity.BLOCKER))
    expired = rep.apply_waivers([_waiver("LNX-*", PAST)])
    assert [w.check for w in expired] == ["LNX-*"]
    assert rep.guests[0].readiness is Readiness.BLOCKED
