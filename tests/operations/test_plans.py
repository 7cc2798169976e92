"""Plan-as-data: given facts and guest state, each operation's exact plan (or its clear error)."""

from __future__ import annotations

import pytest

from guestprep.checks import registry
from guestprep.errors import GuestprepError
from guestprep.operations import base, engine

from planfixtures import all_fixtures, load

pytestmark = pytest.mark.unit

FIXTURES = all_fixtures()


def test_there_are_fixtures_for_every_family():
    names = " ".join(p.stem for p in FIXTURES)
    for family in ("debian12", "ubuntu", "rhel8", "rhel9", "sles15", "arch", "bad-"):
        assert family in names


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_plan_matches_fixture(path):
    fx = load(path)
    results = {r.operation: r for r in engine.plan_guest(fx["facts"], "g1", "linux", fx["options"])}
    assert set(fx["expect"]) <= set(results), f"unknown operation in {path.name}"
    for op_id, want in fx["expect"].items():
        r = results[op_id]
        if "error" in want:
            assert r.error and want["error"] in r.error, f"{op_id}: expected error {want['error']!r}, got {r.error or r.plan.to_dict()}"
            continue
        assert r.error is None, f"{op_id}: unexpected error {r.error}"
        got = r.plan.changes
        assert len(got) == len(want["changes"]), f"{op_id}: {[(c.kind, c.target) for c in got]}"
        for g, w in zip(got, want["changes"]):
            assert g.kind == w["kind"]
            if "target" in w:
                assert g.target == w["target"]
            for key, val in w.items():
                if key not in ("kind", "target"):
                    assert g.detail.get(key) == val, f"{op_id} {g.target}: {key}"
        for w in want.get("warnings", []):
            assert w in r.plan.warnings
        if "reason" in want:
            assert want["reason"] in r.plan.reason


def test_every_write_has_a_diff_and_a_base_digest():
    for path in FIXTURES:
        fx = load(path)
        for r in engine.plan_guest(fx["facts"], "g1", "linux", fx["options"]):
            for c in (r.plan.changes if r.plan else []):
                if c.kind in ("write_file", "delete_file"):
                    assert c.diff.startswith("---"), (path.name, c.target)
                    assert c.detail["base_sha256"] == "absent" or len(c.detail["base_sha256"]) == 64


def test_operations_are_registered_in_order_and_fix_real_checks():
    ops = engine.operations_for("linux")
    ours = ["linux.stable_device_names", "linux.nic_name_pinning", "linux.lvm_devices_file",
            "linux.initramfs_virtio", "linux.qemu_guest_agent", "linux.vmware_tools_removal"]
    # config files first, the initramfs rebuild after them (it packs them), agents last
    assert [o.id for o in ops if o.id in ours] == ours
    checks = registry.load_all()
    for o in ops:
        for cid in o.fixes:
            assert checks[cid].meta.fixed_by == o.id
    # every check that names a Linux fixer names a registered operation
    ids = set(base.registered())
    for c in checks.values():
        if c.meta.os == "linux" and c.meta.fixed_by:
            assert c.meta.fixed_by in ids


def test_plans_are_pure_and_repeatable():
    fx = load(FIXTURES[0])
    a = [r.to_dict() for r in engine.plan_guest(fx["facts"], "g1", "linux", fx["options"])]
    b = [r.to_dict() for r in engine.plan_guest(fx["facts"], "g1", "linux", fx["options"])]
    assert a == b


def test_package_source_without_matching_files_is_a_config_error(tmp_path):
    from guestprep.operations.linux.agent import package_files

    (tmp_path / "qemu-guest-agent-8.2.rpm").write_text("x")
    with pytest.raises(GuestprepError, match=r"no qemu-guest-agent\*\.deb"):
        package_files(str(tmp_path), "apt-get")
    assert package_files(str(tmp_path), "dnf")[0].endswith("qemu-guest-agent-8.2.rpm")
