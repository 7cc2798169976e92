"""Issue 16 item 10: handoff refuses guest facts that describe another guest, unless told."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VMX = REPO.parent / "shared" / "samples" / "vmx" / "sample-1.vmx"  # displayName BZ1308535_21disks


def gp(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=cwd, env={**os.environ, "PYTHONPATH": str(REPO)})


def report(path: Path, guest: str) -> Path:
    path.write_text(json.dumps({"schema": "guestprep.report/1", "guests": [
        {"guest": guest, "os": "linux", "readiness": "ready", "findings": []}]}))
    return path


@pytest.fixture(autouse=True)
def _vmx():
    if not VMX.is_file():
        pytest.fail(f"vmx sample missing: {VMX}")


def test_facts_of_another_guest_are_refused(tmp_path):
    facts = report(tmp_path / "report.json", "vm")
    r = gp("handoff", "BZ1308535_21disks", "--vmx", VMX, "--guest-facts", facts, "--out", tmp_path / "h.json",
           cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "describe 'vm', not VM 'BZ1308535_21disks'" in r.stderr and "--facts-for-other-guest" in r.stderr
    assert not (tmp_path / "h.json").exists() and "Traceback" not in r.stderr


def test_facts_for_other_guest_when_told(tmp_path):
    facts = report(tmp_path / "report.json", "vm")
    r = gp("handoff", "BZ1308535_21disks", "--vmx", VMX, "--guest-facts", facts, "--out", tmp_path / "h.json",
           "--facts-for-other-guest", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "used as told" in r.stderr and (tmp_path / "h.json").exists()


def test_facts_of_the_same_guest_pass(tmp_path):
    facts = tmp_path / "facts.json"
    facts.write_text(json.dumps({"hostname": "bz1308535_21disks.example.com"}))
    r = gp("handoff", "BZ1308535_21disks", "--vmx", VMX, "--guest-facts", facts, "--out", tmp_path / "h.json",
           cwd=tmp_path)
    assert r.returncode == 0, r.stderr
