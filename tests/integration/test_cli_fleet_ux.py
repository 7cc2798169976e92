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


def blackhole() -> tuple[socket.socket, list]:
    """A listening socket that accepts and never answers."""
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    held: list = []

    def accept():
        while True:
            try:
                held.append(srv.accept())
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    return srv, held


def test_ctrl_c_exits_within_seconds_and_lists_unchecked_guests(sshd, tmp_path):
    srv, held = blackhole()
    inv = tmp_path / "fleet.yaml"
    inv.write_text(f"""
defaults: {{user: root, key_file: {sshd.user_key}, agent: false}}
guests:
  - {{name: fast, address: 127.0.0.1, port: {sshd.port}}}
  - {{name: hangs, address: 127.0.0.1, port: {srv.getsockname()[1]}}}
""")
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "guestprep.cli", "preflight", "-i", str(inv), "--known-hosts",
                             str(sshd.known_hosts), "--out", str(out), "--format", "json,junit,csv",
                             "--timeout", "120"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not held:
        time.sleep(0.1)
    time.sleep(4)  # the fast guest finishes meanwhile; the other waits for an SSH greeting (30 s)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    while proc.poll() is None and time.monotonic() - sent < 1.0:
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)  # a second Ctrl-C: still no traceback
    stdout, stderr = proc.communicate(timeout=60)
    took = time.monotonic() - sent
    srv.close()
    assert proc.returncode == 130, stderr
    assert took < 8, f"exited {took:.1f} s after Ctrl-C"
    assert "Traceback" not in stderr and "Traceback" not in stdout
    assert "closing 1 connection(s) in progress" in stderr, stderr
    assert "not checked (hangs)" in stderr, stderr
    doc = json.loads((out / "report.json").read_text())
    by = {g["guest"]: g for g in doc["guests"]}
    assert doc["complete"] is False and doc["not_run"] == ["hangs"]
    assert [f["status"] for f in by["hangs"]["findings"]] == ["not_checked"]
    assert "hangs" in (out / "junit.xml").read_text() and "hangs" in (out / "findings.csv").read_text()


def test_piped_run_prints_a_line_per_finished_guest_on_stderr(sshd, ssh_inventory, tmp_path):
    inv = ssh_inventory(2)
    res = guestprep("preflight", "-i", inv, "--known-hosts", sshd.known_hosts, "--out", tmp_path / "r",
                    "--format", "json", "--parallel", "2")
    lines = [l for l in res.stderr.splitlines() if l.startswith("[")]
    assert len(lines) == 2, res.stderr
    assert {l.split("] ")[1].split(":")[0] for l in lines} == {"guest000", "guest001"}
    assert all("/2] " in l and l.rstrip().endswith("s") for l in lines)
    assert "[1/2]" not in res.stdout  # stdout keeps the summary only


def test_terminal_progress_names_the_guests_still_running():
    from guestprep.commands.progress import running_text

    text = running_text([("web01", 3.2), ("db01", 41.0), ("app1", 1.0), ("app2", 0.5)])
    assert text == "running: db01 41s, web01 3s, app1 1s +1 more"


def test_log_file_records_what_ran_where_without_secrets(sshd, ssh_inventory, tmp_path):
    inv = ssh_inventory(1)
    log = tmp_path / "run.jsonl"
    res = guestprep("-v", "--log-file", log, "preflight", "-i", inv, "--known-hosts", sshd.known_hosts,
                    "--out", tmp_path / "r", "--format", "json", "--quiet")
    assert "Traceback" not in res.stderr, res.stderr
    records = [json.loads(l) for l in log.read_text().splitlines()]
    assert records[0]["event"] == "start" and "preflight" in records[0]["command"]
    connect = [r for r in records if r["event"] == "connect"]
    assert connect == [dict(connect[0], ok=True)] and connect[0]["guest"] == "guest000"
    assert connect[0]["transport"] == "ssh" and connect[0]["port"] == sshd.port
    runs = [r for r in records if r["event"] == "run"]
    assert runs and all(r["guest"] == "guest000" and r["transport"] == "ssh" and isinstance(r["rc"], int)
                        and r["duration_s"] >= 0 and r["command"] for r in runs)
    assert any(r["command"].startswith("script:") for r in runs)
    assert "[run] guest=guest000 transport=ssh" in res.stderr  # -v: the same on stderr
    key = Path(sshd.user_key).read_text().splitlines()[1]
    assert key not in log.read_text()


def test_log_records_are_redacted(tmp_path, monkeypatch):
    from guestprep import secrets
    from guestprep.connectors import runlog

    secrets.register("hunter2-very-secret")
    monkeypatch.setattr(runlog, "_file", (tmp_path / "l.jsonl").open("a", buffering=1))
    runlog.record("run", guest="g", command="echo hunter2-very-secret", error="auth hunter2-very-secret")
    runlog._file.close()
    text = (tmp_path / "l.jsonl").read_text()
    assert "hunter2-very-secret" not in text and json.loads(text)["guest"] == "g"


def test_shell_completion_is_offered():
    res = guestprep("--help", env={"COLUMNS": "120"})
    assert "--install-completion" in res.stdout and "--show-completion" in res.stdout
    # typer finds the shell from the parent process (shellingham), not $SHELL: run under a real bash,
    # as a user would (make runs the suite under /bin/sh, which typer does not support)
    shown = subprocess.run(["bash", "-c", '"$0" -m guestprep.cli --show-completion; exit $?', sys.executable],
                           capture_output=True, text=True, timeout=120, cwd=REPO,
                           env={**os.environ, "COLUMNS": "120"})
    assert shown.returncode == 0, shown.stderr
    assert "complete" in shown.stdout and "guestprep" in shown.stdout.lower()
