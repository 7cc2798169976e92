"""EFI-FIRMWARE-AGREE: guest boot mode vs VM configuration vs the offline image audit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from guestprep.checks import registry
from guestprep.checks.firmware import FirmwareWitnesses, firmware_agreement, for_report, image_audit_firmware
from guestprep.models import Guest, SourceVM

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("guest,vm,image,status", [
    ("uefi", "efi", "uefi", "pass"),
    ("bios", "bios", "bios", "pass"),
    ("uefi", "bios", "uefi", "fail"),      # the .vmx/vSphere side would create SeaBIOS
    ("bios", "efi", None, "fail"),
    ("uefi", "efi", "bios", "fail"),       # the image is not the disk this guest boots from
    ("uefi", None, None, "skipped"),
    (None, "efi", "unknown", "skipped"),
])
def test_truth_table(guest, vm, image, status):
    [f] = firmware_agreement(guest, vm, image, "g1")
    assert (f.check_id, f.status.value, f.severity.value) == ("EFI-FIRMWARE-AGREE", status, "blocker")
    if status == "fail":
        assert "disagreement" in f.message and f.remediation


def test_the_guest_is_named_as_the_truth():
    [f] = firmware_agreement("uefi", "bios", None, "g1")
    assert "OVMF + efidisk0" in f.message


@pytest.mark.parametrize("content,needle", [
    ("not json", "not JSON"),
    ('{"firmware": "coreboot"}', "expected uefi, bios or unknown"),
    ("[]", "expected uefi, bios or unknown"),
])
def test_bad_image_audit_is_an_error_naming_the_file(tmp_path, content, needle):
    p = tmp_path / "audit.json"
    p.write_text(content)
    fw, problem = image_audit_firmware(p)
    assert fw is None and problem.status.value == "error" and needle in problem.message and str(p) in problem.message


FIXTURES = sorted((Path(__file__).resolve().parents[1] / "checks" / "EFI-FIRMWARE-AGREE").glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture(path):
    doc = json.loads(path.read_text(encoding="utf-8"))
    findings = registry.get("EFI-FIRMWARE-AGREE").evaluate(FirmwareWitnesses(**doc["facts"]), "g1")
    assert sorted((f.status.value, f.resource) for f in findings) == \
        sorted((e["status"], e["resource"]) for e in doc["expect"]), [f.message for f in findings]
    for f in findings:
        assert f.evidence == doc["facts"] and f.message
        assert bool(f.remediation) is (f.status.value != "pass")


def test_fixtures_cover_pass_fail_and_skipped():
    statuses = {e["status"] for p in FIXTURES for e in json.loads(p.read_text())["expect"]}
    assert {"pass", "fail", "skipped"} <= statuses


def test_registered_with_its_sources_but_left_out_of_single_record_evaluation():
    c = registry.get("EFI-FIRMWARE-AGREE")
    assert c in registry.all_checks("vm") and c.meta.cross_source and len(c.meta.sources) == 3
    vm = SourceVM(name="vm1", firmware="bios")
    assert "EFI-FIRMWARE-AGREE" not in {f.check_id for f in registry.evaluate("vm", vm, "g1")}
    # evaluated on one record by mistake, it says why it does not apply instead of crashing
    [f] = c.evaluate(vm, "g1")
    assert f.status.value == "skipped" and "not applicable" in f.message


def test_for_report_runs_it_once_and_a_missing_guest_source_is_skipped_with_a_reason():
    guest = Guest(name="g1", address="10.0.0.1")
    [f] = for_report({}, SourceVM(name="vm1", firmware="efi"), guest)   # collector failed: no boot mode
    assert f.status.value == "skipped" and "vm=uefi" in f.message
    [f] = for_report({"firmware": "bios"}, SourceVM(name="vm1", firmware="efi"), guest)
    assert f.status.value == "fail" and f.check_id == "EFI-FIRMWARE-AGREE"


def test_bad_image_audit_in_the_fleet_path_is_one_error_finding(tmp_path):
    (tmp_path / "audit.json").write_text("{")
    guest = Guest(name="g1", address="10.0.0.1", vars={"image_audit": str(tmp_path / "audit.json")})
    [f] = for_report({"firmware": "uefi"}, SourceVM(name="vm1", firmware="efi"), guest)
    assert f.status.value == "error" and "not JSON" in f.message and f.evidence == {"image_audit": str(tmp_path / "audit.json")}


def test_checks_list_and_show_name_it():
    exe = Path(sys.executable).with_name("guestprep")
    res = subprocess.run([str(exe), "checks", "list", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    [meta] = [c for c in json.loads(res.stdout) if c["id"] == "EFI-FIRMWARE-AGREE"]
    assert meta["severity"] == "blocker" and meta["os"] == "vm" and meta["remediation"] and len(meta["sources"]) == 3
    res = subprocess.run([str(exe), "checks", "list"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "COLUMNS": "250"})
    assert "EFI-FIRMWARE-AGREE" in res.stdout
    res = subprocess.run([str(exe), "checks", "show", "efi-firmware-agree", "--json"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and json.loads(res.stdout)["title"].startswith("Guest, VM configuration and disk image")


def make_image(path: Path, esp: bool) -> None:
    subprocess.run(["truncate", "-s", "64M", str(path)], check=True)
    if esp:
        subprocess.run(["sfdisk", "-q", str(path)], check=True, capture_output=True, input=(
            b"label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n"
            b"start=67584, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"))
    else:
        subprocess.run(["sfdisk", "-q", str(path)], input=b"label: dos\nstart=2048, type=83\n", check=True,
                       capture_output=True)


@pytest.mark.integration
@pytest.mark.parametrize("vm_fw,esp,status", [("bios", True, "fail"), ("efi", True, "fail"), ("bios", False, "pass")])
def test_preflight_reads_the_real_hostside_audit_and_vm_facts(tmp_path, vm_fw, esp, status):
    """This machine is the guest (it boots BIOS); the VM facts and the audited image vary."""
    img = tmp_path / "disk.raw"
    make_image(img, esp)
    host = Path(sys.executable).with_name("guestprep-host")
    audit = subprocess.run([str(host), "audit", str(img), "--json"], capture_output=True)
    (tmp_path / "audit.json").write_bytes(audit.stdout)
    assert json.loads(audit.stdout)["firmware"] == ("uefi" if esp else "bios")
    (tmp_path / "vm.json").write_text(json.dumps(SourceVM(name="vm1", firmware=vm_fw).to_dict()))
    (tmp_path / "fleet.yaml").write_text(
        "version: 1\nguests:\n  - name: here\n    address: localhost\n    transport: local\n    os: linux\n"
        "    vars:\n      vm_facts: vm.json\n      image_audit: audit.json\n")
    exe = Path(sys.executable).with_name("guestprep")
    subprocess.run([str(exe), "preflight", "-i", str(tmp_path / "fleet.yaml"), "--format", "json", "--quiet",
                    "--out", str(tmp_path / "out")], capture_output=True, timeout=300)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    [f] = [f for g in report["guests"] for f in g["findings"] if f["check_id"] == "EFI-FIRMWARE-AGREE"]
    assert f["status"] == status, f["message"]
    assert f["evidence"]["guest_boot_mode"] == "bios"
