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
