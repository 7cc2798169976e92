"""`guestprep prepare --apply` and `rollback` over a fleet of Windows test-server guests in parallel.

Every guest is its own WS-Man test server (its own fake Windows, journal and registry);
one more guest entry carries a wrong password. The CLI runs as a subprocess, as an admin
runs it; the servers run in this process, so the tests read each guest's state directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.windows.conftest import PASSWORD, PW_ENV, USER

pytestmark = pytest.mark.integration

GUESTPREP = str(Path(sys.executable).with_name("guestprep"))
PROFILES = {"sql19": "ws2019-en-US", "web22": "ws2022-ja-JP", "app16": "ws2016-de-DE"}
COMPARED = ("status", "planned", "applied", "verified", "failed")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, PW_ENV: PASSWORD, "WRONG_PW": "nope-nope", "COLUMNS": "200"}
    return subprocess.run([GUESTPREP, *args], capture_output=True, text=True, env=env, timeout=timeout)


def entry(name: str, srv, transport: str = "winrm", **vars) -> dict:
    v = {"ansible_winrm_operation_timeout_sec": 2, "ansible_psrp_operation_timeout": 2}
    v["ansible_winrm_ca_trust_path" if transport == "winrm" else "ansible_psrp_ca_cert"] = str(srv.pki.ca_cert)
    v.update(vars)
    return {"name": name, "address": "127.0.0.1", "port": srv.server.https.port, "transport": transport,
            "os": "windows", "user": USER, "password_env": PW_ENV, "vars": v}


@pytest.fixture
def fleet(wsman, tmp_path):
    """Start three guests and write an inventory of them plus one with a wrong password."""

    def make(tag: str):
        media = tmp_path / "virtio-win-gt-x64.msi"
        if not media.exists():
            media.write_bytes(os.urandom(80_000))
        sha = hashlib.sha256(media.read_bytes()).hexdigest()
        servers = {name: wsman(profile) for name, profile in PROFILES.items()}
        captures = tmp_path / f"captures-{tag}"
        guests = [entry(name, srv, "psrp" if name == "web22" else "winrm", guestprep_virtio_win_media=str(media),
                        guestprep_virtio_win_sha256=sha, guestprep_capture_dir=str(captures))
                  for name, srv in servers.items()]
        bad = entry("badpw", servers["sql19"])
        bad["password_env"] = "WRONG_PW"
        guests.insert(1, bad)
        inv = tmp_path / f"fleet-{tag}.yaml"
        inv.write_text(yaml.safe_dump({"guests": guests}, allow_unicode=True), encoding="utf-8")
        return servers, inv, captures

    return make


def per_guest(doc: dict) -> dict:
    return {g["guest"]: {k: g[k] for k in COMPARED} for g in doc["guests"]}


def test_parallel_apply_matches_sequential_and_a_bad_guest_stops_nobody(fleet, tmp_path):
    seq_servers, seq_inv, _ = fleet("seq")
    par_servers, par_inv, captures = fleet("par")
    seq_json, par_json = tmp_path / "seq.json", tmp_path / "par.json"

    seq = cli("prepare", "-i", str(seq_inv), "--apply", "--parallel", "1", "--json-out", str(seq_json))
    par = cli("prepare", "-i", str(par_inv), "--apply", "--parallel", "4", "--json-out", str(par_json))

    for res in (seq, par):
        assert res.returncode == 3, res.stdout + res.stderr   # the wrong password: unreachable wins
        assert "Traceback" not in res.stderr and "nope-nope" not in res.stdout + res.stderr
    seq_doc, par_doc = json.loads(seq_json.read_text()), json.loads(par_json.read_text())
    assert par_doc["parallel"] == 4 and par_doc["complete"] is True and par_doc["not_run"] == []
    assert [g["guest"] for g in par_doc["guests"]] == ["sql19", "badpw", "web22", "app16"]  # inventory order
    assert per_guest(par_doc) == per_guest(seq_doc)

    guests = {g["guest"]: g for g in par_doc["guests"]}
    assert guests["badpw"]["status"] == "unreachable" and "authentication failed" in guests["badpw"]["error"]
    assert guests["badpw"]["applied"] == []
    for name in PROFILES:
        g = guests[name]
        assert g["status"] == "applied", g
        assert "windows.virtio_drivers" in g["applied"] and set(g["applied"]) <= set(g["verified"]), g
        assert par_servers[name].guest.facts["services"]["vioscsi"]["start"] == 0  # the guest really changed
        assert par_servers[name].guest.facts["storage"]["san_policy"] == "OnlineAll"
    assert par_doc["summary"] == {"applied": 3, "unreachable": 1, "total": 4}

    # the controller-side copies of the network captures: one file per guest, each with that guest's data
    files = sorted(captures.iterdir())
    by_guest = {p.name.split("-")[0]: json.loads(p.read_text()) for p in files}
    assert len(files) == len(by_guest)
    for name, doc in by_guest.items():
        assert doc["hostname"] == par_servers[name].guest.facts["hostname"]
    for name in PROFILES:   # every guest recorded its own controller copy
        step = [s for o in guests[name]["ops"] if o["operation"] == "windows.network_capture"
                for s in (o["applied"] or {}).get("steps", []) if "controller_copy" in s]
        if step:
            assert Path(step[0]["controller_copy"]).name.startswith(name + "-")


def test_parallel_output_is_one_block_per_guest_then_a_table(fleet):
    servers, inv, _ = fleet("out")
    res = cli("prepare", "-i", str(inv), "--parallel", "4")
    assert res.returncode == 3, res.stdout + res.stderr
    lines = res.stdout.splitlines()
    heads = [i for i, ln in enumerate(lines) if ln.startswith("─") and "(windows)" in ln]
    assert len(heads) == 4
    table = next(i for i, ln in enumerate(lines) if "guestprep prepare (plan)" in ln)
    bounds = heads + [table]
    ops = ("windows.virtio_drivers", "windows.boot_critical", "windows.san_policy", "windows.network_capture")
    for start, end in zip(bounds, bounds[1:]):
        name = lines[start].strip("─ ").split()[0]
        block = "\n".join(lines[start + 1:end])
        if name == "badpw":
            assert "error:" in block and "authentication failed" in block and "windows." not in block
            continue
        for op in ops:   # a guest's block holds each of its operations once: nothing from another guest
            assert block.count(op + "[") + block.count(op + ":") == 1, (name, op, block)
        assert block.rstrip().endswith("(run with --apply to change the guest)")
    summary = "\n".join(lines[table:])
    for name in (*PROFILES, "badpw"):
        assert name in summary
    assert "3 planned" in summary and "1 unreachable" in summary


def test_parallel_rollback_restores_every_guest(fleet, tmp_path):
    servers, inv, _ = fleet("rb")
    before = {n: s.guest.facts["storage"]["san_policy"] for n, s in servers.items()}
    assert cli("prepare", "-i", str(inv), "--apply", "-p", "4").returncode == 3
    assert all(s.guest.facts["storage"]["san_policy"] == "OnlineAll" for s in servers.values())

    out = tmp_path / "rollback.json"
    rb = cli("rollback", "*", "-i", str(inv), "--parallel", "4", "--json-out", str(out))
    assert rb.returncode == 3, rb.stdout + rb.stderr     # badpw cannot be reached; the others are restored
    doc = json.loads(out.read_text())
    assert doc["schema"] == "guestprep.rollback/1" and doc["complete"] is True
    status = {g["guest"]: g["status"] for g in doc["guests"]}
    assert status == {"sql19": "rolled_back", "badpw": "unreachable", "web22": "rolled_back", "app16": "rolled_back"}
    for n, s in servers.items():   # driver installs are reported as not reversed; the rest is restored
        assert s.guest.facts["storage"]["san_policy"] == before[n], n
        assert not s.guest.tasks, n
        assert all(e["rolled_back"] or e["kind"] == "driver_install" for e in s.guest.journal), s.guest.journal
    assert "SanPolicy" in rb.stdout and "Traceback" not in rb.stderr

    # negative control: a second rollback finds nothing left, and says so per guest
    again = cli("rollback", "sql19", "web22", "-i", str(inv), "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    assert {g["guest"]: g["status"] for g in json.loads(again.stdout)["guests"]} == {"sql19": "nothing", "web22": "nothing"}


def test_ctrl_c_stops_new_guests_and_leaves_a_journal_to_roll_back(fleet, tmp_path):
    servers, inv, _ = fleet("int")
    first = servers["sql19"].guest
    original_policy = first.facts["storage"]["san_policy"]
    slow = first.do_set_san_policy

    def slow_san_policy(p):
        time.sleep(4)
        return slow(p)

    first.do_set_san_policy = slow_san_policy   # the guest is mid-apply long enough to press Ctrl-C
    out = tmp_path / "partial.json"
    env = {**os.environ, PW_ENV: PASSWORD, "WRONG_PW": "nope-nope", "COLUMNS": "200"}
    proc = subprocess.Popen([GUESTPREP, "prepare", "-i", str(inv), "--apply", "-p", "1", "--json-out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while "set-san-policy" not in first.ran and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert "set-san-policy" in first.ran, "the first guest never reached the SAN policy step"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "interrupted" in stderr
    doc = json.loads(out.read_text())
    assert doc["complete"] is False and doc["not_run"] == ["badpw", "web22", "app16"]
    g = {x["guest"]: x for x in doc["guests"]}
    assert [x["guest"] for x in doc["guests"]] == ["sql19", "badpw", "web22", "app16"]
    assert g["sql19"]["status"] == "interrupted"
    assert "windows.san_policy" in g["sql19"]["applied"]          # the step in progress finished
    assert "windows.network_capture" not in g["sql19"]["applied"]  # the next one never started
    assert "capture-network" not in first.ran
    assert all(g[n]["status"] == "not_run" for n in ("badpw", "web22", "app16"))
    assert "set-san-policy" not in servers["web22"].guest.ran and "set-san-policy" not in servers["app16"].guest.ran
    assert "sql19" in stdout and "not_run" in stdout    # the partial summary table

    assert first.facts["storage"]["san_policy"] == "OnlineAll"
    rb = cli("rollback", "sql19", "-i", str(inv))
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert first.facts["storage"]["san_policy"] == original_policy


def test_second_ctrl_c_closes_connections_of_a_hung_guest(fleet, tmp_path):
    servers, inv, _ = fleet("abort")
    first = servers["sql19"].guest
    first.hang_markers.add("set-san-policy")     # the guest never answers this step
    out = tmp_path / "aborted.json"
    env = {**os.environ, PW_ENV: PASSWORD, "WRONG_PW": "nope-nope", "COLUMNS": "200"}
    proc = subprocess.Popen([GUESTPREP, "prepare", "sql19", "web22", "-i", str(inv), "--apply", "-p", "1",
                             "--json-out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.monotonic() + 120
        while "set-san-policy" not in first.ran and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert "set-san-policy" in first.ran
        proc.send_signal(signal.SIGINT)
        time.sleep(2)
        assert proc.poll() is None, "a hung guest keeps the run waiting after one Ctrl-C"
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        stdout, stderr = proc.communicate(timeout=90)
        print(f"ended {time.monotonic() - started:.1f}s after the second Ctrl-C")
    finally:
        proc.kill()
    assert proc.returncode == 130, stdout + stderr
    assert "Traceback" not in stderr and "aborting" in stderr
    doc = json.loads(out.read_text())
    g = {x["guest"]: x for x in doc["guests"]}
    assert doc["complete"] is False and doc["not_run"] == ["web22"]
    assert g["sql19"]["interrupted"] is True and g["sql19"]["status"] in ("error", "failed", "interrupted"), g["sql19"]
    assert "windows.san_policy" not in g["sql19"]["verified"]
    assert "set-san-policy" not in servers["web22"].guest.ran
