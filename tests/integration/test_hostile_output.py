"""Hostile guest output through the real CLI (issue 13, items 9 and 10, and the piped-width bullet).

The guest is the test sshd; its collector is replaced by a script that prints a real
collector document (tests/facts/linux) with crafted values, so what a compromised or odd
guest can say reaches every renderer exactly as in production: the terminal summary, the
four report files, ``facts`` on stdout.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from typer.testing import CliRunner

from guestprep.commands import app
from guestprep.facts import linux

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RAW = json.loads((REPO / "tests/facts/linux/debian12-dracut-hostonly-vmware.json").read_text())["raw"]
ESC = "\x1b"
# OSC-8 hyperlink and a colour change as a guest could print them, plus rich markup
OSC8 = f"{ESC}]8;;http://evil.example/{ESC}\\x{ESC}]8;;{ESC}\\"
SECRET = "Echo-Pw-4711!"


def fake_collector(monkeypatch, *, initramfs: str, hostname: str = "deb12-app") -> None:
    raw = json.loads(json.dumps(RAW))
    raw["kernels"][0]["initramfs"] = initramfs
    raw["id"]["hostname"] = hostname
    script = "#!/bin/sh\ncat <<'GUESTPREP_EOF'\n" + json.dumps(raw) + "\nGUESTPREP_EOF\n"
    monkeypatch.setattr(linux, "collector_script", lambda: script)


def invoke(*args) -> object:
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=True)


@pytest.fixture
def guest(sshd, ssh_inventory, monkeypatch):
    monkeypatch.setenv("GP_ECHO_SECRET", SECRET)
    return ssh_inventory(1, password_env="GP_ECHO_SECRET", os="linux")


def test_markup_and_escape_sequences_from_a_guest_are_shown_literally(sshd, guest, tmp_path, monkeypatch):
    # item 9: "[/]" crashed rich (MarkupError), [link=] made a hyperlink, ESC reached the terminal
    fake_collector(monkeypatch, initramfs=f"/boot/[/]initrd[link=http://e/]L[/link]{OSC8}")
    res = invoke("preflight", "-i", guest, "--known-hosts", sshd.known_hosts, "--format", "json", "--out", tmp_path)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    out = res.stdout
    assert "/boot/[/]initrd[link=http://e/]L[/link]" in out  # literally, markup not interpreted
    assert ESC not in out and "\x07" not in out
    assert "\\x1b]8;;http://evil.example/" in out  # made visible, not dropped
    doc = json.loads((tmp_path / "report.json").read_text())
    assert any("[/]initrd" in f["message"] for f in doc["guests"][0]["findings"])  # the report keeps the data


def test_a_secret_the_guest_echoes_is_masked_in_every_output(sshd, guest, tmp_path, monkeypatch):
    # item 10: the inventory's password (read from GP_ECHO_SECRET at connect) comes back in guest data
    fake_collector(monkeypatch, initramfs=f"/boot/initrd-{SECRET}", hostname=f"host-{SECRET}")
    res = invoke("preflight", "-i", guest, "--known-hosts", sshd.known_hosts, "--format", "json,html,junit,csv",
                 "--out", tmp_path)
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "LNX-INITRAMFS-VIRTIO" in res.stdout and "initrd-********" in res.stdout
    for name in ("report.json", "report.html", "junit.xml", "findings.csv"):
        text = (tmp_path / name).read_text()
        assert SECRET not in text and "********" in text, name
    ET.parse(tmp_path / "junit.xml")
    list(csv.reader((tmp_path / "findings.csv").open()))
    res = invoke("facts", "guest000", "-i", guest, "--known-hosts", sshd.known_hosts)
    assert res.exit_code == 0, res.output
    assert SECRET not in res.stdout and "host-********" in res.stdout
    res = invoke("facts", "guest000", "-i", guest, "--known-hosts", sshd.known_hosts, "--raw")
    assert res.exit_code == 0 and SECRET not in res.stdout


def test_piped_messages_and_tables_are_never_wrapped(tmp_path):
    # "does \nnot exist": a pipe is not an 80-column terminal, whatever $COLUMNS or FORCE_COLOR say
    inv = tmp_path / "f.yaml"
    inv.write_text("guests:\n  - name: a\n    address: 127.0.0.1\n")
    deep = tmp_path / ("d" * 120) / "missing" / "r.json"
    for env in ({"COLUMNS": "80"}, {"FORCE_COLOR": "1", "COLUMNS": "60"}, {}):
        e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR", "TTY_COMPATIBLE")}
        res = subprocess.run([sys.executable, "-m", "guestprep.cli", "prepare", "-i", str(inv), "--apply",
                              "--json-out", str(deep)], capture_output=True, text=True, timeout=120, env={**e, **env})
        assert res.returncode == 2, res.stderr
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].endswith("does not exist"), (env, res.stderr)
    res = subprocess.run([sys.executable, "-m", "guestprep.cli", "checks", "list"], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "COLUMNS": "80"})
    titles = [c["title"] for c in json.loads(subprocess.run(
        [sys.executable, "-m", "guestprep.cli", "checks", "list", "--json"], capture_output=True, text=True,
        timeout=120).stdout)]
    assert all(t in res.stdout for t in titles)  # each title whole on its row
