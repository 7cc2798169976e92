"""Check metadata is data: validated, unique ids, remediation present, fixing operations exist."""

from __future__ import annotations

import pytest

from guestprep.checks import registry
from guestprep.checks.base import ok
from guestprep.models import Severity, Status
from guestprep.operations import base as ops

pytestmark = pytest.mark.unit


def test_all_metadata_valid():
    checks = registry.all_checks()
    assert len({c.id for c in checks}) == len(checks)
    for c in checks:
        registry.validate_meta(c.meta)
        assert c.meta.remediation.strip()


def test_fixed_by_names_a_registered_operation():
    operations = ops.registered()
    missing = [(c.id, c.meta.fixed_by) for c in registry.all_checks()
               if c.meta.fixed_by and c.meta.fixed_by not in operations]
    # Operations land with their issues; until then the reference must at least be well-formed.
    for cid, op in missing:
        assert "." in op, f"{cid}: fixed_by {op!r} must look like 'linux.initramfs_virtio'"


def test_duplicate_id_refused():
    @registry.check(id="LNX-TEST-DUP", title="t", severity=Severity.INFO, os="linux", rationale="r", remediation="m")
    def first(facts):
        yield ok()

    with pytest.raises(registry.RegistryError, match="duplicate"):
        @registry.check(id="LNX-TEST-DUP", title="t", severity=Severity.INFO, os="linux", rationale="r", remediation="m")
        def second(facts):
            yield ok()
    registry._REGISTRY.pop("LNX-TEST-DUP")


@pytest.mark.parametrize("kwargs,needle", [
    (dict(id="bad id"), "id must"),
    (dict(os="solaris"), "os must"),
    (dict(remediation=" "), "remediation is empty"),
    (dict(phase="during"), "phase must"),
])
def test_bad_metadata_refused(kwargs, needle):
    base = dict(id="LNX-TEST-BAD", title="t", severity=Severity.INFO, os="linux", rationale="r", remediation="m")
    with pytest.raises(registry.RegistryError, match=needle):
        registry.check(**{**base, **kwargs})


def test_a_crashing_check_becomes_an_error_finding():
    from guestprep.checks.base import Check, CheckMeta

    def boom(facts):
        raise KeyError("kernels")
        yield

    c = Check(CheckMeta("LNX-BOOM", "t", Severity.BLOCKER, "linux", "pre", "r", "m"), boom)
    [f] = c.evaluate(object(), "g")
    assert f.status is Status.ERROR and "KeyError" in f.message


def test_image_checks_are_the_hostside_audit_in_the_registry():
    """`checks list --os image` lists hostside's disk-image checks; evaluating them gives the audit's findings."""
    from hostside import audit, partitions

    image_checks = registry.all_checks("image")
    assert [c.id for c in image_checks] == sorted(audit.IMAGE_CHECKS)
    for c in image_checks:
        meta = audit.IMAGE_CHECKS[c.id]
        assert (c.meta.title, c.meta.severity, c.meta.remediation) == (meta.title, meta.severity, meta.remediation)
        assert c.meta.rationale and c.meta.references == meta.references
    table = partitions.PartitionTable("gpt", 4096, [
        partitions.Partition(1, 63, 100, "gpt", "gpt", partitions.ESP_GUID, "EFI System"),
        partitions.Partition(2, 2048, 1000, "gpt", "gpt", "0x83", "Linux")],
        gpt=partitions.GptInfo("g", 34, 4000, 128, backup_ok=False, backup_problem="backup header missing"))
    result = audit.AuditResult("disk.vmdk", table, audit.implied_firmware(table))
    expected = [audit._finding("web01", v) for v in audit.verdicts(result)]
    got = [f for c in image_checks for f in c.evaluate(result, "web01")]
    key = lambda f: (f.check_id, f.resource, f.message)  # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, expected))
    assert {(f.check_id, f.resource): f.status for f in got} == {(f.check_id, f.resource): f.status for f in expected}


def test_metadata_speaks_to_users():
    """What `checks show` prints is for the people running a migration: English, public references,
    no project-internal issue numbers or notes."""
    import re

    internal = re.compile(r"\bissue \d+|\bseed\b|[À-ÿ]", re.IGNORECASE)
    for c in registry.all_checks():
        m = c.meta
        for text in (m.title, m.rationale, m.remediation, *m.references):
            assert not internal.search(text), f"{c.id}: {text!r}"
        assert all(r.startswith("https://") for r in m.references), c.id
