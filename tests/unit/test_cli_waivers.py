"""Issue 16 item 3: a waiver that cannot apply is an error naming waivers file:line; expired ones are said."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, "COLUMNS": "200"})


def closed_target() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


def waivers(tmp_path, check="LNX-INITRAMFS-VIRTIO", guest="*", expires="2099-01-01") -> Path:
    p = tmp_path / "waivers.yaml"
    p.write_text("# accepted risks\nwaivers:\n"
                 "  - check: LNX-QEMU-GA\n    reason: agent installed at cutover\n    expires: 2099-01-01\n"
                 f"  - check: {check}\n    guest: \"{guest}\"\n    reason: known\n    expires: {expires}\n")
    return p


def test_misspelled_check_id_is_an_error_with_a_suggestion(tmp_path):
    res = run("preflight", closed_target(), "--waivers", waivers(tmp_path, check="LNX-INITRAMFS-VIRTOI"),
              "--out", tmp_path / "r")
    assert res.returncode == 2, res.stderr
    assert f"{tmp_path / 'waivers.yaml'}:6" in res.stderr
    assert "LNX-INITRAMFS-VIRTOI" in res.stderr and "did you mean 'LNX-INITRAMFS-VIRTIO'" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "r").exists()


def test_guest_pattern_matching_nothing_is_an_error(tmp_path):
    res = run("preflight", closed_target(), "--waivers", waivers(tmp_path, guest="db-*"), "--out", tmp_path / "r")
    assert res.returncode == 2, res.stderr
    assert f"{tmp_path / 'waivers.yaml'}:6" in res.stderr and "'db-*' matches none" in res.stderr


def test_expired_waiver_is_reported_as_expired(tmp_path):
    target = closed_target()
    res = run("preflight", target, "--waivers", waivers(tmp_path, expires="2020-01-01"), "--out", tmp_path / "r",
              "--timeout", "3", "--format", "json")
    assert res.returncode == 3, res.stderr
    assert f"waiver expired {tmp_path / 'waivers.yaml'}:6" in res.stderr and "2020-01-01" in res.stderr
