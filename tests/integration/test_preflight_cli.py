"""`guestprep preflight` end to end: the real CLI process, real sshd guests, all four report formats."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SCHEMA = json.loads((REPO / "docs" / "report-schema.json").read_text())


def guestprep(*args, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    e = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=e, **kw)


def assert_clean_error(res, code=2):
    assert res.returncode == code, res.stdout + res.stderr
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout


def test_inventory_of_ssh_guests_all_four_formats(sshd, ssh_inventory, tmp_path):
    inv = ssh_inventory(3)
    out = tmp_path / "reports"
    res = guestprep("preflight", "-i", inv, "--known-hosts", sshd.known_hosts, "--format", "json,html,junit,csv",
                    "--out", out, "--parallel", "3")
    assert res.returncode in (0, 1, 3), res.stderr
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    assert [g["guest"] for g in doc["guests"]] == ["guest000", "guest001", "guest002"]
    assert doc["complete"] is True
    # what the run used, for the compliance record: the inventory file by path and SHA-256
    assert doc["run_id"] and doc["inputs"]["inventory"]["sha256"] == hashlib.sha256(inv.read_bytes()).hexdigest()
    assert doc["inputs"]["waivers"] is None
    for g in doc["guests"]:
        assert g["transport"] == "ssh" and g["os"] == "linux"
        ids = {f["check_id"] for f in g["findings"]}
        assert {"LNX-INITRAMFS-VIRTIO", "LNX-UNSTABLE-DEVNAMES", "LNX-QEMU-GA", "LNX-REACHABLE"} <= ids
        reach = [f for f in g["findings"] if f["check_id"] == "LNX-REACHABLE"][0]
        assert reach["status"] == "pass"
    # JUnit: a testsuite per guest, a testcase per check result
    junit = ET.parse(out / "junit.xml").getroot()
    suites = junit.findall("testsuite")
    assert [s.get("name") for s in suites] == ["guest000", "guest001", "guest002"]
    assert all(len(s.findall("testcase")) == len(doc["guests"][0]["findings"]) for s in suites)
    # CSV: one row per finding
    rows = list(csv.DictReader((out / "findings.csv").open()))
    assert len(rows) == sum(len(g["findings"]) for g in doc["guests"])
    # HTML: self-contained
    html = (out / "report.html").read_text()
    assert "guest001" in html and "<script src" not in html and "<link" not in html and "http://" not in html.split("</style>")[0]
    # exit code follows the threshold: the QEMU-less test host has blockers or errors, never "0 with failures"
    # ("unknown": a check that cannot tell, e.g. no installed kernel in a container, is not a pass either)
    failing = [f for g in doc["guests"] for f in g["findings"]
               if f["status"] in ("fail", "error", "unreachable", "unknown") and f["severity"] == "blocker"]
    assert (res.returncode != 0) == bool(failing)


def test_local_needs_no_inventory(tmp_path):
    res = guestprep("preflight", "--local", "--out", tmp_path, "--format", "json,junit", "--quiet")
    assert res.returncode in (0, 1, 3), res.stderr
    doc = json.loads((tmp_path / "report.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["guests"][0]["transport"] == "local"


def test_unreachable_guest_does_not_stop_the_others(sshd, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    inv = tmp_path / "fleet.yaml"
    inv.write_text(f"""
defaults:
  user: root
  key_file: {sshd.user_key}
  agent: false
guests:
  - name: alive
    address: 127.0.0.1
    port: {sshd.port}
  - name: dead
    address: 127.0.0.1
    port: {dead_port}
""")
    res = guestprep("preflight", "-i", inv, "--known-hosts", sshd.known_hosts, "--out", tmp_path / "r",
                    "--format", "json", "--timeout", "10")
    assert res.returncode == 3, res.stderr
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    by = {g["guest"]: g for g in doc["guests"]}
    assert by["dead"]["readiness"] == "unknown"
    assert by["dead"]["findings"][0]["status"] == "unreachable"
    assert "connection refused" in by["dead"]["findings"][0]["message"]
    assert by["alive"]["readiness"] != "unknown" or by["alive"]["error"] is None


def test_unknown_host_key_is_an_unreachable_finding_with_the_fix(sshd, ssh_inventory, tmp_path):
    inv = ssh_inventory(1)
    res = guestprep("preflight", "-i", inv, "--known-hosts", tmp_path / "empty_kh", "--out", tmp_path / "r", "--format", "json")
    assert res.returncode == 3
    f = json.loads((tmp_path / "r" / "report.json").read_text())["guests"][0]["findings"][0]
    assert f["status"] == "unreachable" and "--accept-new-host-keys" in f["message"]


def test_secrets_never_reach_reports(sshd, tmp_path):
    if not sshd.password_user:
        pytest.skip("needs the password test user (root)")
    inv = tmp_path / "fleet.yaml"
    inv.write_text(f"""
guests:
  - name: pw
    address: 127.0.0.1
    port: {sshd.port}
    user: {sshd.password_user}
    password_env: GP_PW
    agent: false
""")
    out = tmp_path / "r"
    res = guestprep("preflight", "-i", inv, "--known-hosts", sshd.known_hosts, "--out", out,
                    "--format", "json,html,junit,csv", env={"GP_PW": sshd.password})
    assert res.returncode in (0, 1, 3), res.stderr
    for p in out.iterdir():
        assert sshd.password not in p.read_text()
    assert sshd.password not in res.stdout + res.stderr


def test_ctrl_c_writes_a_partial_report_marked_incomplete(sshd, tmp_path):
    """One guest answers, one hangs (accepts TCP, never speaks SSH): SIGINT ends cleanly."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    held = []
    threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
    inv = tmp_path / "fleet.yaml"
    inv.write_text(f"""
defaults: {{user: root, key_file: {sshd.user_key}, agent: false}}
guests:
  - {{name: fast, address: 127.0.0.1, port: {sshd.port}}}
  - {{name: hangs, address: 127.0.0.1, port: {srv.getsockname()[1]}}}
""")
    out = tmp_path / "r"
    proc = subprocess.Popen([sys.executable, "-m", "guestprep.cli", "preflight", "-i", str(inv), "--known-hosts",
                             str(sshd.known_hosts), "--out", str(out), "--format", "json,html", "--timeout", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not held:
        time.sleep(0.1)
    time.sleep(3)  # the fast guest finishes meanwhile
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    doc = json.loads((out / "report.json").read_text())
    jsonschema.validate(doc, SCHEMA)
    assert doc["complete"] is False
    assert "hangs" in doc["not_run"] or any(g["guest"] == "hangs" and g["readiness"] == "unknown" for g in doc["guests"])
    assert "Incomplete run" in (out / "report.html").read_text()
    srv.close()


@pytest.mark.parametrize("args,needle", [
    (["preflight"], "inventory"),
    (["preflight", "--local", "--format", "pdf"], "unknown report format"),
    (["preflight", "-i", "/nonexistent/fleet.yaml"], "not found"),
    (["preflight", "--local", "--fail-on", "never"], "--fail-on"),
    (["preflight", "root@host;rm -rf /"], "not"),
    (["preflight", "$(reboot)@host"], "user"),
    (["facts"], "inventory"),
    (["checks", "show", "NOPE-1"], "unknown check"),
])
def test_usage_errors_exit_2_without_traceback(args, needle, tmp_path):
    res = guestprep(*args, cwd=tmp_path)
    assert_clean_error(res, 2)
    assert needle in (res.stderr + res.stdout)
    assert not (tmp_path / "reports").exists(), "nothing written on a usage error"


def test_checks_list_and_show():
    res = guestprep("checks", "list", "--json")
    assert res.returncode == 0
    checks = json.loads(res.stdout)
    linux = [c for c in checks if c["os"] == "linux"]
    assert len(linux) >= 11
    assert all(c["remediation"] for c in checks)
    res = guestprep("checks", "show", "LNX-INITRAMFS-VIRTIO", "--json")
    assert json.loads(res.stdout)["fixed_by"] == "linux.initramfs_virtio"


def test_facts_command_prints_typed_json(sshd, ssh_inventory):
    inv = ssh_inventory(1)
    res = guestprep("facts", "guest000", "-i", inv, "--known-hosts", sshd.known_hosts)
    assert res.returncode == 0, res.stderr
    facts = json.loads(res.stdout)
    assert facts["raw_schema"] == "guestprep.linux.facts/1" and facts["is_root"] is True
    raw = guestprep("facts", "guest000", "-i", inv, "--known-hosts", sshd.known_hosts, "--raw")
    assert json.loads(raw.stdout)["schema"] == "guestprep.linux.collect/1"


def test_waivers_mark_findings_and_change_the_exit_code(tmp_path):
    waivers = tmp_path / "waivers.yaml"
    waivers.write_text("""
waivers:
  - check: "LNX-*"
    reason: "lab machine, accepted"
    by: "test"
    expires: 2999-01-01
""")
    res = guestprep("preflight", "--local", "--out", tmp_path / "r", "--format", "json", "--waivers", waivers, "--quiet")
    doc = json.loads((tmp_path / "r" / "report.json").read_text())
    statuses = {f["status"] for f in doc["guests"][0]["findings"]}
    assert "fail" not in statuses and "waived" in statuses
    # the waived blockers no longer block: report.json (read by handoff --guest-facts) says so
    assert doc["guests"][0]["readiness"] != "blocked"
    assert res.returncode in (0, 3)  # errors (unreadable facts) are never waived away
    bad = tmp_path / "bad.yaml"
    bad.write_text("waivers:\n  - check: LNX-QEMU-GA\n    expires: 2999-01-01\n")
    assert_clean_error(guestprep("preflight", "--local", "--out", tmp_path / "r2", "--waivers", bad), 2)
