"""Windows checks against data fixtures (tests/checks/WIN-*/*.json)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestprep.checks import registry
from guestprep.facts.windows import parse

pytestmark = pytest.mark.unit

CHECKS_DIR = Path(__file__).resolve().parents[1] / "checks"
# the modules of issue 4; other areas add WIN-* checks (e.g. uefi.py) with their own tests
MODULES = {f"guestprep.checks.windows.{m}" for m in ("drivers", "boot", "storage", "network", "policy")}


def windows_checks():
    return [c for c in registry.all_checks("windows") if c.func.__module__ in MODULES]


FIXTURES = sorted(p for c in windows_checks() for p in CHECKS_DIR.glob(f"{c.id}/*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=[f"{p.parent.name}/{p.stem}" for p in FIXTURES])
def test_fixture(path: Path) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    chk = registry.get(path.parent.name)
    findings = chk.evaluate(parse(doc["facts"], where=str(path)), guest="fixture")
    got = sorted((f.status.value, f.resource) for f in findings)
    want = sorted((e["status"], e["resource"]) for e in doc["expect"])
    assert got == want, [f.message for f in findings]
    for f in findings:
        assert f.message
        if f.status.value == "fail":
            assert f.remediation and f.fixed_by == chk.meta.fixed_by


def test_every_windows_check_has_pass_and_fail_fixture() -> None:
    checks = windows_checks()
    assert len(checks) >= 14
    for c in checks:
        statuses = set()
        for p in CHECKS_DIR.glob(f"{c.id}/*.json"):
            statuses |= {e["status"] for e in json.loads(p.read_text(encoding="utf-8"))["expect"]}
        assert {"pass", "fail"} <= statuses, f"{c.id} lacks a passing or failing fixture"


def test_fixed_by_names_a_registered_windows_operation() -> None:
    from guestprep.operations.base import registered

    ops = registered()
    for c in windows_checks():
        if c.meta.fixed_by:
            assert c.meta.fixed_by in ops, f"{c.id} names unknown operation {c.meta.fixed_by}"
            assert c.id in ops[c.meta.fixed_by].fixes, f"{c.meta.fixed_by} does not list {c.id} in fixes"


def test_negative_control_a_fixture_with_the_wrong_expectation_fails() -> None:
    doc = json.loads((CHECKS_DIR / "WIN-FAST-STARTUP" / "both-on-ru.json").read_text(encoding="utf-8"))
    findings = registry.get("WIN-FAST-STARTUP").evaluate(parse(doc["facts"]), guest="x")
    assert [f.status.value for f in findings] != ["pass"]
