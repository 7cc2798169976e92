"""Every Linux check against data fixtures: tests/checks/<CHECK-ID>/*.json (base facts + patch -> expected results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestprep.checks import registry
from guestprep.facts import linux
from tests.support.fixtures import linux_raw

pytestmark = pytest.mark.unit

CHECKS_DIR = Path(__file__).resolve().parents[1] / "checks"
CASES = sorted(CHECKS_DIR.glob("LNX-*/*.json"))
FLEET_LEVEL = {"LNX-REACHABLE"}  # produced by the fleet runner; tested in integration


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_check_fixture(path):
    case = json.loads(path.read_text())
    facts = linux.parse(linux_raw(case["base"], case.get("patch")))
    findings = registry.get(path.parent.name).evaluate(facts, "fixture-guest")
    got = sorted((f.status.value, f.resource) for f in findings)
    want = sorted((e["status"], e.get("resource", "")) for e in case["expect"])
    assert got == want, "\n".join(f"{f.status.value} {f.resource}: {f.message}" for f in findings)


def test_every_linux_check_has_passing_and_failing_fixtures():
    checks = {c.id for c in registry.all_checks("linux")} - FLEET_LEVEL
    assert len(checks) >= 11
    for cid in sorted(checks):
        statuses = set()
        for p in (CHECKS_DIR / cid).glob("*.json"):
            statuses |= {e["status"] for e in json.loads(p.read_text())["expect"]}
        assert {"pass", "fail"} <= statuses, f"{cid} needs passing and failing fixtures (has {sorted(statuses)})"
