"""Every VM-* check against its fixture folder tests/checks/<ID>/*.json (facts -> expected findings)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestprep.checks.registry import all_checks, get, load_all
from guestprep.checks.vm.fleet import fleet_findings, mac_findings, shared_disk_findings
from guestprep.models import SourceVM, Status

pytestmark = pytest.mark.unit

CHECKS_DIR = Path(__file__).resolve().parents[1] / "checks"
FIXTURES = sorted(CHECKS_DIR.glob("VM-*/*.json"))


def _load(path: Path) -> tuple[SourceVM, list[dict]]:
    doc = json.loads(path.read_text())
    return SourceVM.from_dict(doc["facts"]), doc["expect"]


@pytest.mark.parametrize("path", FIXTURES, ids=[f"{p.parent.name}/{p.stem}" for p in FIXTURES])
def test_fixture(path: Path) -> None:
    vm, expect = _load(path)
    findings = get(path.parent.name).evaluate(vm, guest=vm.name)
    got = sorted((f.status.value, f.resource) for f in findings)
    assert got == sorted((e["status"], e["resource"]) for e in expect), [f.message for f in findings]
    for f in findings:
        assert f.status is not Status.ERROR, f.message
        if f.status is Status.FAIL:
            assert f.remediation and f.message


def test_every_vm_check_has_a_passing_and_a_failing_fixture() -> None:
    load_all()
    ids = [c.id for c in all_checks("vm")]
    assert len(ids) >= 20
    for cid in ids:
        statuses = set()
        for path in (CHECKS_DIR / cid).glob("*.json"):
            statuses |= {e["status"] for e in json.loads(path.read_text())["expect"]}
        assert {"pass", "fail"} <= statuses, f"{cid}: fixtures must cover pass and fail, have {statuses}"


def test_fixture_folders_name_registered_checks() -> None:
    ids = {c.id for c in all_checks("vm")}
    assert {p.name for p in CHECKS_DIR.glob("VM-*")} <= ids


def test_fleet_mac_collision_across_vms() -> None:
    a, _ = _load(CHECKS_DIR / "VM-SNAPSHOTS" / "clean.json")
    b = SourceVM.from_dict(dict(a.to_dict(), name="web02", moref="vm-102"))
    b.nics[0].mac = a.nics[0].mac.upper()  # same MAC, other spelling
    c = SourceVM.from_dict(dict(a.to_dict(), name="db01", moref="vm-103"))
    c.nics[0].mac = "00:50:56:aa:bb:99"
    findings = mac_findings([a, b, c])
    by_guest = {f.guest: f for f in findings}
    assert by_guest["web01"].status is Status.FAIL and "web02" in by_guest["web01"].message
    assert by_guest["web02"].status is Status.FAIL and by_guest["web02"].resource == "00:50:56:aa:bb:01"
    assert by_guest["db01"].status is Status.PASS  # negative control
    assert all(f.check_id == "VM-MAC-COLLISION" for f in findings)


def test_fleet_disk_file_of_two_vms_is_shared_whatever_the_flag() -> None:
    """Issue 18: two VMs referencing one disk file share it, even with sharing=sharingNone
    (Forklift derives sharing the same way, vmware/shared_disk.rego)."""
    a, _ = _load(CHECKS_DIR / "VM-SNAPSHOTS" / "clean.json")
    b = SourceVM.from_dict(dict(a.to_dict(), name="web02", moref="vm-102"))
    b.nics[0].mac, b.disks[0].label = "00:50:56:aa:bb:02", "Hard disk 2"  # same file, other label and MAC
    c = SourceVM.from_dict(dict(a.to_dict(), name="db01", moref="vm-103"))
    c.nics[0].mac, c.disks[0].datastore_path = "00:50:56:aa:bb:03", "[ds1] db01/db01.vmdk"
    assert a.disks[0].sharing == b.disks[0].sharing == "sharingNone"
    assert all(f.status is Status.PASS for f in get("VM-DISK-SHARED").evaluate(a, a.name))  # one VM alone cannot tell
    shared = shared_disk_findings([a, b, c])
    assert {(f.guest, f.resource) for f in shared} == {("web01", "Hard disk 1"), ("web02", "Hard disk 2")}
    assert all(f.status is Status.FAIL and f.check_id == "VM-DISK-SHARED" and f.remediation for f in shared)
    assert "web02/Hard disk 2" in next(f.message for f in shared if f.guest == "web01")
    everything = fleet_findings([a, b, c])  # what preflight calls: MAC and disk findings together
    assert {f.check_id for f in everything} == {"VM-MAC-COLLISION", "VM-DISK-SHARED"}
    assert not [f for f in everything if f.guest == "db01" and f.status is Status.FAIL]  # negative control


def test_checks_never_raise_on_a_minimal_vm() -> None:
    vm = SourceVM(name="bare")
    for c in all_checks("vm"):
        assert all(f.status is not Status.ERROR for f in c.evaluate(vm, "bare")), c.id
