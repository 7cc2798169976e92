"""Issue 16 item 8: `checks show` is a page people read (JSON with --json); unknown ids get suggestions;
an unknown --os is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, "COLUMNS": "80"})


def test_show_is_a_readable_page():
    res = cli("checks", "show", "lnx-initramfs-virtio")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert out.startswith("LNX-INITRAMFS-VIRTIO  Every installed kernel's initramfs can reach a VirtIO root disk\n")
    for heading in ("Why it matters", "How to fix it", "References"):
        assert f"\n{heading}\n" in out
    assert "`guestprep prepare --apply`" in out  # the text as written, not JSON-escaped
    assert '\\"' not in out and '"rationale"' not in out and "\\u" not in out
    assert all(len(line) < 400 for line in out.splitlines())  # no padding to the pipe's width


def test_show_json_on_request():
    res = cli("checks", "show", "LNX-INITRAMFS-VIRTIO", "--json")
    assert json.loads(res.stdout)["fixed_by"] == "linux.initramfs_virtio"


def test_unknown_id_gets_a_suggestion():
    res = cli("checks", "show", "LNX-INITRAMFS-VIRTOI")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "did you mean 'LNX-INITRAMFS-VIRTIO'?" in res.stderr


def test_unknown_os_is_refused_with_a_suggestion():
    res = cli("checks", "list", "--os", "lnx")
    assert res.returncode == 2 and "did you mean 'linux'" in res.stderr and "0 checks" not in res.stdout
