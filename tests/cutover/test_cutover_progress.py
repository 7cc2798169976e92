"""Live progress of `cutover run`, on real parts (simulator, sshd node, Proxmox test cluster).

Piped (a CI log), even when FORCE_COLOR/TTY_COMPATIBLE make rich believe it is a terminal: one
plain line per event, no escape code, no carriage return, no wrapping; each VM's steps named in
the order they ran, each start before its end. On a terminal (a real pseudo-terminal): a table
with a row per VM (VM, node, step, elapsed, state), redrawn in place while the wave runs, whose
last frame shows the VM done after verify.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import termios
import threading

import pytest

from tests.cutover.conftest import EXE, accept_gate

pytestmark = pytest.mark.integration

STEPS = ["gate", "shutdown", "mark_source", "locate_disks", "convert", "finalize", "start", "verify"]
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def test_piped_progress_is_one_plain_line_per_event_in_step_order(wave_lab):
    vms = [("DC0_H0_VM10", 9311, "pve1"), ("DC0_C0_RP0_VM10", 9312, "pve2")]
    w = wave_lab(vms)
    w.plan()
    accept_gate(w)
    r = w.run("--parallel", "2", env=w.env(FORCE_COLOR="1", TTY_COMPATIBLE="1", COLUMNS="60", TERM="xterm-256color"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\x1b" not in r.stderr and "\r" not in r.stderr, r.stderr
    # (the outcome on stdout keeps its colour: FORCE_COLOR asks for it, as everywhere in guestprep)
    lines = r.stderr.splitlines()
    assert any(len(line) > 60 for line in lines)   # not wrapped at $COLUMNS: a line is an event
    for name, _, node in vms:
        mine = [m.group(1) for m in (re.fullmatch(rf"\d\d:\d\d:\d\d {name} \[{node}\] (.+)", line) for line in lines) if m]
        events = [e for e in mine if re.fullmatch(r"\w+ (\.\.\.|done \d+\.\d s.*)", e)]
        expected = [f"{s} {what}" for s in STEPS for what in ("...", "done")]
        assert [re.sub(r" done .*", " done", e) for e in events] == expected, mine
        assert any(e.startswith("converting ") and f"on {node}" in e for e in mine), mine   # what the step says
        assert mine[-1] == "phase done", mine
        assert f"{name}: done" in ANSI.sub("", r.stdout)


def _read_all(fd: int, into: bytearray) -> None:
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:   # EIO: the other side closed
            return
        if not chunk:
            return
        into.extend(chunk)


def test_terminal_shows_a_live_table_redrawn_in_place(wave_lab):
    name, vmid, node = "DC0_H0_VM11", 9313, "pve1"
    w = wave_lab([(name, vmid, node)])
    w.plan()
    accept_gate(w)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    env = w.env(TERM="xterm-256color")
    for k in ("FORCE_COLOR", "TTY_COMPATIBLE", "NO_COLOR", "COLUMNS", "LINES"):
        env.pop(k, None)
    proc = subprocess.Popen([str(EXE), "cutover", "run", str(w.wave), "--poll", "0.05", "--agent-timeout", "5"],
                            env=env, cwd=w.tmp, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    screen = bytearray()
    reader = threading.Thread(target=_read_all, args=(master, screen), daemon=True)
    reader.start()
    stdout, _ = proc.communicate(timeout=300)
    reader.join(30)
    os.close(master)
    text = screen.decode("utf-8", "replace")
    assert proc.returncode == 0, stdout.decode() + text
    assert f"{name}: done" in stdout.decode()
    assert "\x1b[1A" in text and "\x1b[2K" in text   # cursor up, erase line: the table is redrawn in place
    frames = [ANSI.sub("", f) for f in text.split("┏")[1:]]
    assert len(frames) >= 3, text   # redrawn while the wave ran, not printed once at the end
    header = re.compile(r"┃\s*VM\s*┃\s*node\s*┃\s*step\s*┃\s*elapsed\s*┃\s*state\s*┃")
    assert all(header.search(f) for f in frames), frames[0]
    seen_steps = {m.group(1) for f in frames for m in re.finditer(rf"│ {name}\s*│ {node}\s*│ (\w+)", f)}
    assert "convert" in seen_steps and len(seen_steps) >= 3, seen_steps   # the row followed the steps
    last = re.search(rf"│ {name}\s*│ {node}\s*│ (\w+)\s*│\s*([\d.ms]+)\s*│ (\w+)", frames[-1])
    assert last and last.group(1) == "verify" and last.group(3) == "done", frames[-1]


def test_every_journal_boundary_is_one_event_and_a_broken_screen_fails_nothing(tmp_path, monkeypatch):
    """The journal (real SQLite) under WatchedJournal, driven by machine.run_step/run_vm with steps of
    our own: each boundary the journal commits is told once, in order, with the attempt, seconds,
    held post-condition and error; what a step says is a note; the machine itself says nothing
    (its boundaries are events, not words to filter); a failure before the source went down is one
    failed step and the phase; a sink that raises (a closed terminal) changes nothing in the journal."""
    import io
    from types import SimpleNamespace

    from rich.console import Console

    from guestprep.commands.cutover_progress import WaveProgress
    from guestprep.cutover import machine
    from guestprep.cutover.controller import WatchedJournal
    from guestprep.cutover.journal import Journal
    from guestprep.cutover.steps import Step, StepFailed

    wave = SimpleNamespace(vms=[SimpleNamespace(name="app01", node="pve2")])
    seen = []
    j = WatchedJournal(Journal(tmp_path / "journal.sqlite"), wave, seen.append)
    ctx = SimpleNamespace(vm=SimpleNamespace(name="app01", vmid=120, node="pve2", steps=["convert"]), journal=j,
                          say=j.note("app01"), o=SimpleNamespace(on_failure="rollback"))
    tries = []

    def act(c):
        tries.append(1)
        c.say("converting Hard disk 1 -> local:120/vm-120-disk-0.qcow2 on pve2")
        raise StepFailed("node gone")

    convert = Step("convert", lambda c: {"disks": []} if tries else None, act)
    monkeypatch.setitem(machine.STEPS, "convert", convert)    # run_vm walks ctx.vm.steps through STEPS
    monkeypatch.setattr(machine, "observe", lambda c: ({}, {}))  # no sides here: both recorded as empty
    assert machine.run_vm(ctx) == "failed"
    j.set_vm("app01", "running")
    machine.run_step(ctx, convert)         # the post-condition holds now: done, nothing acted
    j.set_vm("app01", "done")
    j.set_vm("app01", "done")                              # no change, no event
    told = [(e.kind, e.step, e.status, e.attempt, e.held, e.text) for e in seen]
    assert told == [("phase", None, "running", None, False, ""),
                    ("step", "convert", "running", 1, False, ""),
                    ("note", None, None, None, False, "converting Hard disk 1 -> local:120/vm-120-disk-0.qcow2 on pve2"),
                    ("step", "convert", "failed", 1, False, "node gone"),
                    ("phase", None, "failed", None, False, ""),   # its error was the failed step's: told once
                    ("phase", None, "running", None, False, ""),
                    ("step", "convert", "running", 2, False, ""),
                    ("step", "convert", "done", 2, True, ""),
                    ("phase", None, "done", None, False, "")]
    assert all(e.node == "pve2" for e in seen) and all(e.seconds is not None for e in seen if e.kind == "step" and e.status != "running")

    out = io.StringIO()
    progress = WaveProgress([("app01", "pve2")], console=Console(file=out, force_terminal=True, width=60), live=False)
    for e in seen:
        progress.event(e)
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]
    assert "\x1b" not in out.getvalue()                    # plain even on a console rich calls a terminal
    assert lines[3].startswith("app01 [pve2] convert FAILED ") and lines[3].endswith(" s: node gone")
    assert lines[4] == "app01 [pve2] phase failed"
    assert lines[7].startswith("app01 [pve2] convert done ") and lines[7].endswith(" s (attempt 2) (post-condition already held)")

    def broken(_event):
        raise BrokenPipeError("the terminal went away")

    k = WatchedJournal(Journal(tmp_path / "other.sqlite"), wave, broken)
    c = k.start_attempt("app01", "gate", {})
    k.finish_attempt(c, {"verdict": "ready"})
    k.set_vm("app01", "done")
    assert [r["status"] for r in k.attempts("app01")] == ["done"] and k.vm("app01")["phase"] == "done"
