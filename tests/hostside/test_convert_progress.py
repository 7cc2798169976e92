"""`convert --progress json`: phases as they start, and exactly one terminal event.

Issue 17: `{"event": "done"}` was also sent after SIGTERM and after a stall stop. Now a run
ends with `done` (manifest written), `failed` or `interrupted`, never two of them. Real
processes throughout: guestprep-host, qemu-img, the local HTTPS datastore (delays make a
conversion slow enough to interrupt or to stall)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostside_support import Datastore, host_cli, sh

pytestmark = pytest.mark.integration

PHASES = ["inspect", "audit", "space_check", "convert", "verify", "manifest"]
TERMINAL = {"done", "failed", "interrupted"}


def _events(stderr: str) -> list[dict]:
    return [json.loads(x) for x in stderr.splitlines() if x.startswith("{")]


def _terminal(events: list[dict]) -> list[dict]:
    return [e for e in events if e["event"] in TERMINAL]


def test_success_stream_has_every_phase_then_done_with_timings(images, tmp_path):
    dest = tmp_path / "vm-1-disk-0.qcow2"
    r = host_cli("convert", images["monolithicSparse"], "--to", "qcow2", "--dest", dest,
                 "--progress", "json", "--json")
    assert r.returncode == 0, r.stderr
    events = _events(r.stderr)
    assert [e["phase"] for e in events if e["event"] == "phase"] == PHASES
    assert _terminal(events) == [events[-1]] and events[-1]["event"] == "done"
    timings = events[-1]["timings"]
    assert set(timings) == {f"{p}_s" for p in PHASES}
    manifest = json.loads(Path(json.loads(r.stdout)["manifest_path"]).read_text())
    # the manifest holds every phase's time but its own (written during that phase)
    assert set(manifest["timings"]) == {f"{p}_s" for p in PHASES if p != "manifest"}
    # progress events come only during the copy phase
    phase = None
    for e in events:
        if e["event"] == "phase":
            phase = e["phase"]
        elif e["event"] == "progress":
            assert phase == "convert" and e["phase"] == "convert"
    # the text summary names the phases too
    r = host_cli("convert", images["monolithicSparse"], "--to", "raw", "--dest",
                 tmp_path / "again.raw")
    assert r.returncode == 0 and "phases: inspect " in r.stdout and "verify " in r.stdout


def test_a_refused_target_ends_with_failed_in_its_phase(images, tmp_path):
    dest = tmp_path / "taken.raw"
    dest.write_bytes(b"precious")
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", dest,
                 "--progress", "json")
    assert r.returncode == 2
    events = _events(r.stderr)
    assert _terminal(events) == [events[-1]]
    assert events[-1]["event"] == "failed" and events[-1]["phase"] == "space_check"
    assert events[-1]["exit_code"] == 2 and "already exists" in events[-1]["error"]


def _slow(datastore: Datastore, images, dest: Path, *extra: str) -> subprocess.Popen:
    sh("cp", "--sparse=always", images["gpt.raw"], datastore.root / "slow-flat.vmdk")
    return subprocess.Popen(
        [sys.executable, "-m", "hostside.cli", "convert", datastore.url("slow-flat.vmdk"),
         "--cookie-env", "VC_COOKIE", "--insecure", "--to", "raw", "--dest", str(dest),
         "--progress", "json", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=dict(os.environ, VC_COOKIE=Datastore.cookie))


def test_sigterm_ends_with_interrupted_not_done(datastore, images, tmp_path):
    datastore.delay = 0.2
    dest = tmp_path / "vm-2-disk-0.raw"
    proc = _slow(datastore, images, dest)
    seen = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:        # wait until the copy really runs
        line = proc.stderr.readline()
        assert line, "guestprep-host ended early: " + proc.stderr.read()
        seen.append(json.loads(line))
        if seen[-1]["event"] == "progress":
            break
    proc.send_signal(signal.SIGTERM)
    _, rest = proc.communicate(timeout=120)
    events = seen + _events(rest)
    assert proc.returncode == 130, rest
    assert _terminal(events) == [{"event": "interrupted", "phase": "convert"}], events
    assert events[-1]["event"] == "interrupted"
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()


def test_a_stall_stop_ends_with_failed_not_done(datastore, images, tmp_path):
    dest = tmp_path / "vm-3-disk-0.raw"
    # qemu-img reads the header first (our own validation reads it too, before the delay)
    datastore.delay = 0.0
    proc = _slow(datastore, images, dest, "--stall-timeout", "1")
    for line in proc.stderr:                  # once the copy runs, every GET stalls
        if json.loads(line)["event"] == "progress":
            datastore.delay = 6.0
            break
    _, rest = proc.communicate(timeout=180)
    events = _events(rest)
    assert proc.returncode == 3, rest
    term = _terminal(events)
    assert len(term) == 1 and term[0]["event"] == "failed" and term[0]["phase"] == "convert"
    assert "no progress" in term[0]["error"] and term[0]["exit_code"] == 3
    assert not dest.exists() and not Path(str(dest) + ".partial").exists()
