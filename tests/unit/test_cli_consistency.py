"""Issue 16 item 11: help types people understand, guestprep-host errors named once, --json means stdout."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def cli(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=60, cwd=REPO, env={**os.environ, "COLUMNS": "120", **(env or {})})


@pytest.mark.parametrize("command", [("preflight",), ("prepare",), ("finalize",), ("cutover", "rehearse"),
                                     ("checks", "list"), ("handoff",)])
def test_help_shows_no_python_types(command):
    out = cli(*command, "--help").stdout
    assert "<bool>" not in out and "<list[" not in out and " range>" not in out, out


def test_help_marks_repeatable_and_flags():
    out = cli("cutover", "rehearse", "--help").stdout
    assert "<str> (repeatable)" in out or "(repeatable)" in out
    pre = cli("preflight", "--help").stdout
    line = [l for l in pre.splitlines() if "--local" in l][0]
    assert "<" not in line  # a flag takes no value


@pytest.mark.parametrize("args,needle", [
    (("host", "bogus"), "guestprep-host: error: argument command: invalid choice"),
    (("host", "inspect"), "guestprep-host: error: inspect: the following arguments are required"),
])
def test_host_errors_name_the_program_once(args, needle):
    res = cli(*args)
    assert res.returncode == 2
    assert needle in res.stderr and res.stderr.count("guestprep-host:") == 1, res.stderr


def test_finalize_json_means_stdout_and_json_out_writes_a_file():
    help_text = cli("finalize", "--help").stdout
    assert "--json-out" in help_text and "Print the result as JSON on stdout" in help_text


def test_finalize_old_json_path_spelling_still_works_with_a_note(tmp_path):
    from guestprep.commands import _legacy_spellings

    assert _legacy_spellings(["finalize", "--handoff", "h.json", "--json", "r.json"]) == [
        "finalize", "--handoff", "h.json", "--json-out", "r.json"]
    assert _legacy_spellings(["finalize", "--json", "--dry-run"]) == ["finalize", "--json", "--dry-run"]
    assert _legacy_spellings(["prepare", "--json", "x"]) == ["prepare", "--json", "x"]
    res = cli("finalize", "--handoff", tmp_path / "missing.json", "--json", tmp_path / "r.json")
    assert "is deprecated; write `--json-out" in res.stderr and "Traceback" not in res.stderr
