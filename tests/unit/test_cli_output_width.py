"""Issue 16 item 5: output is never cut, piped or at 80 columns; help texts never end in '…'."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path


import pytest
import typer
from rich.console import Console

REPO = Path(__file__).resolve().parents[2]


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *args], capture_output=True, text=True, timeout=60,
                          cwd=REPO, env={**os.environ, **(env or {})})


def console80() -> Console:
    return Console(width=80, file=io.StringIO(), force_terminal=True, color_system=None, highlight=False)


@pytest.mark.parametrize("env", [{}, {"COLUMNS": "80"}, {"COLUMNS": "80", "TTY_COMPATIBLE": "1"}])
def test_checks_list_piped_greps_whole_ids(env):
    res = cli("checks", "list", env=env)
    hits = [l for l in res.stdout.splitlines() if "LNX-INITRAMFS-VIRTIO" in l]
    assert hits and "Every installed kernel's initramfs can reach a VirtIO root disk" in hits[0]
    assert "…" not in res.stdout


def test_checks_list_at_80_columns_keeps_ids_and_folds_words(monkeypatch):
    import guestprep.commands.checks as ch
    from guestprep.checks import registry

    c = console80()
    monkeypatch.setattr(ch, "console", c)
    ch.checks_list(os=None, as_json=False)
    out = c.file.getvalue()
    assert "…" not in out
    assert all(len(l) <= 80 for l in out.splitlines())
    for check in registry.all_checks():
        assert check.meta.id in out


def test_summary_top_finding_is_never_cut(monkeypatch):
    import guestprep.commands.preflight as pf

    message = "no installed kernel found under /lib/modules (container or unusual layout) and then some more words"
    doc = {"phase": "pre", "summary": {"total": 1, "ready": 0, "warnings": 0, "blocked": 1, "unknown": 0},
           "guests": [{"guest": "web01", "os": "linux", "readiness": "blocked", "findings": [
               {"check_id": "LNX-INITRAMFS-VIRTIO", "message": message, "status": "fail", "severity": "blocker"}]}]}
    wide = Console(width=1_000_000, file=io.StringIO(), color_system=None)
    monkeypatch.setattr(pf, "console", wide)
    pf.print_summary(doc)
    assert message in wide.file.getvalue()
    c = console80()
    monkeypatch.setattr(pf, "console", c)
    pf.print_summary(doc)
    out = c.file.getvalue()
    assert "…" not in out
    words = " ".join(l.split("│")[-2].strip() for l in out.splitlines() if l.count("│") > 2)
    assert " ".join(words.split()) == f"LNX-INITRAMFS-VIRTIO: {message}"  # every word, none split


def _commands(group, prefix: tuple = ()):
    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, prefix + (name,))


def test_no_help_text_ends_in_an_ellipsis_at_80_columns():
    from guestprep.cli import app

    root = typer.main.get_command(app)
    paths = [()] + list(_commands(root))
    bad = []
    for path in paths:
        res = cli(*path, "--help", env={"COLUMNS": "80", "TERM": "xterm"})
        if "…" in res.stdout:
            bad.append(" ".join(path))
    assert not bad, f"help cut with … at 80 columns: {bad}"
