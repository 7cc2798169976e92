"""EFI-FIRMWARE-AGREE: guest boot mode vs VM configuration vs the offline image audit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from guestprep.checks.firmware import firmware_agreement, image_audit_firmware
from guestprep.models import SourceVM

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
    fw, problem = image_audit_firmware(p, "g1")
    assert fw is None and problem.status.value == "error" and needle in problem.message and str(p) in problem.message


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
