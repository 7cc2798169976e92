"""Issue 16, the CLI a fleet team uses: ad-hoc identities, Ctrl-C, progress, connection errors in words.

Real processes against the real sshd fixture, closed ports and a blackhole socket."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def guestprep(*args, env=None, timeout=120, **kw) -> subprocess.CompletedProcess:
    e = {**os.environ, **(env or {})}
    e.pop("SSH_AUTH_SOCK", None)
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, cwd=REPO, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adhoc_home(sshd, tmp_path):
    """A HOME whose default key is the one the test sshd authorizes (ad-hoc targets have no key_file)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    shutil.copy(sshd.user_key, home / ".ssh" / "id_ed25519")
    os.chmod(home / ".ssh" / "id_ed25519", 0o600)
    return {"HOME": str(home)}


def test_two_adhoc_targets_on_one_host_are_two_guests(sshd, adhoc_home, tmp_path):
    closed = closed_port()
    out = tmp_path / "r"
    res = guestprep("preflight", f"root@{sshd.host}:{closed}", f"root@{sshd.host}:{sshd.port}",
                    "--known-hosts", sshd.known_hosts, "--out", out, "--format", "json", "--quiet", env=adhoc_home)
    assert "Traceback" not in res.stderr, res.stderr
    doc = json.loads((out / "report.json").read_text())
    names = [g["guest"] for g in doc["guests"]]
    assert names == [f"root@{sshd.host}:{closed}", f"root@{sshd.host}:{sshd.port}"], names
    closed_g, open_g = doc["guests"]
    assert closed_g["readiness"] == "unknown"
    assert "refused" in closed_g["error"], closed_g["error"]
    reach = [f for f in open_g["findings"] if f["check_id"] == "LNX-REACHABLE"][0]
    assert reach["status"] == "pass", open_g
    assert open_g.get("error") in (None, ""), open_g


def test_same_adhoc_target_twice_is_checked_once(sshd, tmp_path):
    closed = closed_port()
    out = tmp_path / "r"
    res = guestprep("preflight", f"127.0.0.1:{closed}", f"127.0.0.1:{closed}", "--out", out, "--format", "json",
                    "--quiet", "--timeout", "5")
    doc = json.loads((out / "report.json").read_text())
    assert [g["guest"] for g in doc["guests"]] == [f"127.0.0.1:{closed}"], res.stderr
