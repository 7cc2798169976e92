"""Issue 16 item 2: one truth for a check that cannot decide (status "unknown")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestprep.checks import registry
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Readiness, Severity, Status, readiness_of
from guestprep.operations import engine

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def no_kernel_facts() -> LinuxFacts:
    from guestprep.facts.linux import parse

    facts = parse(json.loads((REPO / "tests/facts/linux/debian12-dracut-hostonly-vmware.json").read_text())["raw"])
    facts.kernels = []
    return facts


def test_no_kernels_is_unknown_in_preflight_and_cannot_tell_in_prepare():
    facts = no_kernel_facts()
    findings = [f for f in registry.evaluate("linux", facts, "g", "pre") if f.check_id == "LNX-INITRAMFS-VIRTIO"]
    assert [f.status for f in findings] == [Status.UNKNOWN]
    assert findings[0].message.startswith("cannot tell: ")
    assert not findings[0].is_open  # not a blocker, not counted as one
    assert readiness_of(findings) is Readiness.UNKNOWN  # and not ready either
    plan = {r.operation: r for r in engine.plan_guest(facts, "g", "linux", {"state": {}})}["linux.initramfs_virtio"]
    assert plan.error and plan.error.startswith("cannot tell: "), plan.error or plan.plan.reason


def test_summary_does_not_count_unknown_as_a_blocker():
    from guestprep.commands.preflight import counts_in_summary

    f = {"status": "unknown", "severity": "blocker"}
    assert not counts_in_summary(f)


def test_a_blocker_still_wins_over_unknown():
    from guestprep.models import Finding

    fs = [Finding("g", "A", Severity.BLOCKER, Status.UNKNOWN, "t", "cannot tell: x"),
          Finding("g", "B", Severity.BLOCKER, Status.FAIL, "t", "broken")]
    assert readiness_of(fs) is Readiness.BLOCKED
