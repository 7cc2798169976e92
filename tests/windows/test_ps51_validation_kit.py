"""The Windows validation kit (guestprep.operations.windows.validation) end to end against the
WS-Management test server: every step runs and leaves its evidence. (A real lab VM is what it
is for: docs/windows-validation.md.)"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from tests.windows.conftest import PASSWORD, PW_ENV, USER

pytestmark = pytest.mark.integration


def test_validation_kit_runs_the_whole_flow_and_keeps_evidence(wsman, tmp_path):
    run = wsman("ws2019-en-US")
    media = tmp_path / "virtio-win-gt-x64.msi"
    media.write_bytes(os.urandom(50_000))
    inv = tmp_path / "fleet.yaml"
    inv.write_text(yaml.safe_dump({"guests": [{
        "name": "lab19", "address": "127.0.0.1", "port": run.server.https.port, "transport": "winrm",
        "os": "windows", "user": USER, "password_env": PW_ENV,
        "vars": {"ansible_winrm_operation_timeout_sec": 2, "ansible_winrm_ca_trust_path": str(run.pki.ca_cert),
                 "guestprep_virtio_win_media": str(media),
                 "guestprep_virtio_win_sha256": hashlib.sha256(media.read_bytes()).hexdigest(),
                 "guestprep_capture_dir": str(tmp_path / "captures")}}]}), encoding="utf-8")
    ev = tmp_path / "evidence"
    argv = [sys.executable, "-m", "guestprep.operations.windows.validation", "lab19", "-i", str(inv),
            "--evidence", str(ev), "--timeout", "60"]
    r = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, PW_ENV: PASSWORD}, timeout=600)
    summary = json.loads((ev / "summary.json").read_text(encoding="utf-8"))
    assert [s["step"] for s in summary["steps"]] == ["01-preflight", "02-plan", "03-apply", "04-verify", "05-replan",
                                                      "06-rollback", "07-after-rollback"], r.stdout + r.stderr
    assert all(s["rc"] < 2 for s in summary["steps"]), summary
    assert (ev / "03-apply.json").is_file() and (ev / "06-rollback.json").is_file()
    assert PASSWORD not in "".join(p.read_text(encoding="utf-8") for p in ev.rglob("*") if p.is_file())
    # a second run never overwrites evidence
    again = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, PW_ENV: PASSWORD}, timeout=60)
    assert again.returncode == 2 and "already exists" in again.stderr
