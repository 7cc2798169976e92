"""The real ``guestprep`` entry point against the simulator: exit codes, no tracebacks, secrets
kept out of output, plan mode changes nothing. VM used for --apply: DC0_H0_VM2."""

from __future__ import annotations

import json
import stat

import pytest
import yaml

from guestprep.vsphere.actions import find_vm
from guestprep.vsphere.inventory import fetch_one

pytestmark = pytest.mark.integration


def _clean(proc):
    assert "Traceback" not in proc.stdout + proc.stderr


def test_inventory_vsphere_writes_fleet_and_facts(run_cli, tmp_path, vcsim):
    proc = run_cli("inventory", "vsphere", "--out", "fleet.yaml", "--facts-out", "facts")
    _clean(proc)
    assert proc.returncode == 0, proc.stderr
    doc = yaml.safe_load((tmp_path / "fleet.yaml").read_text())
    assert len(doc["guests"]) == 8
    g = doc["guests"][0]
    assert {"name", "address", "os", "transport", "vars"} <= set(g)
    assert (tmp_path / g["vars"]["vm_facts"]).is_file()
    assert vcsim.password not in proc.stdout + proc.stderr


def test_password_from_stdin(run_cli, cli_env, tmp_path, vcsim):
    env = {k: v for k, v in cli_env.items() if k != "GUESTPREP_VSPHERE_PASSWORD"}
    proc = run_cli("inventory", "vsphere", "--out", "f.yaml", env=env, input=vcsim.password + "\n")
    _clean(proc)
    assert proc.returncode == 0, proc.stderr


def test_wrong_password_exit_3_and_nothing_written(run_cli, cli_env, tmp_path):
    env = dict(cli_env, GUESTPREP_VSPHERE_PASSWORD="wrong-pass-123")
    proc = run_cli("inventory", "vsphere", "--out", "fleet.yaml", "--facts-out", "facts", env=env)
    _clean(proc)
    assert proc.returncode == 3 and "login refused" in proc.stderr
    assert "wrong-pass-123" not in proc.stdout + proc.stderr
    assert not (tmp_path / "fleet.yaml").exists() and not (tmp_path / "facts").exists()


def test_untrusted_certificate_exit_3(run_cli, vcsim, tmp_path):
    proc = run_cli("inventory", "vsphere", "--out", "fleet.yaml", "--server", vcsim.server, "--user", vcsim.user,
                   connect=False)
    _clean(proc)
    assert proc.returncode == 3 and "not trusted" in proc.stderr
    assert not (tmp_path / "fleet.yaml").exists()


def test_unknown_vm_exit_2(run_cli):
    proc = run_cli("vm", "power", "on", "no-such-vm")
    _clean(proc)
    assert proc.returncode == 2 and "no VM named 'no-such-vm'" in proc.stderr


def test_coexist_plan_changes_nothing_then_apply(run_cli, session, tmp_path):
    name = "DC0_H0_VM2"
    before = fetch_one(session, find_vm(session, name)).to_dict()
    plan = run_cli("vm", "coexist", "attach", name, "--json")
    _clean(plan)
    assert plan.returncode == 0, plan.stderr
    doc = json.loads(plan.stdout)
    assert doc["mode"] == "plan" and [c["kind"] for c in doc["plan"]["changes"]] == ["add_controller", "add_disk"]
    assert fetch_one(session, find_vm(session, name)).to_dict() == before

    journal = tmp_path / "journal.jsonl"
    applied = run_cli("vm", "coexist", "attach", name, "--apply", "--journal", str(journal))
    _clean(applied)
    assert applied.returncode == 0, applied.stderr
    entry = json.loads(journal.read_text().splitlines()[-1])
    assert entry["operation"] == "vm.coexistence_disk" and entry["ok"] and entry["moref"]
    detached = run_cli("vm", "coexist", "detach", name, "--apply", "--journal", str(journal))
    assert detached.returncode == 0, detached.stderr
    assert len(journal.read_text().splitlines()) == 2
    assert [d["datastore_path"] for d in fetch_one(session, find_vm(session, name)).to_dict()["disks"]] == \
        [d["datastore_path"] for d in before["disks"]]


def test_disks_writes_private_locator_file_once(run_cli, tmp_path, vcsim):
    proc = run_cli("vm", "disks", "DC0_H0_VM2", "--out", "loc.json")
    _clean(proc)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "loc.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = json.loads(path.read_text())
    assert doc["session_cookie"].startswith("vmware_soap_session=")
    assert doc["session_cookie"].split("=", 1)[1] not in proc.stdout + proc.stderr
    again = run_cli("vm", "disks", "DC0_H0_VM2", "--out", "loc.json")
    assert again.returncode == 2 and "never overwritten" in again.stderr
    printed = run_cli("vm", "disks", "DC0_H0_VM2")
    assert printed.returncode == 0 and "session_cookie" not in printed.stdout


def test_bad_options_exit_2(run_cli, vcsim):
    proc = run_cli("vm", "facts", "DC0_H0_VM2", "--thumbprint", "xyz", "--server", vcsim.server,
                   "--user", vcsim.user, connect=False)
    _clean(proc)
    assert proc.returncode == 2 and "64 hex" in proc.stderr


def test_preflight_merges_vm_facts_from_the_vsphere_inventory(run_cli, tmp_path):
    """Contract with preflight: vars.vm_facts is read and the VM checks join the guest's findings."""
    import socket

    assert run_cli("inventory", "vsphere", "--out", "fleet.yaml", "--facts-out", "facts").returncode == 0
    with socket.socket() as s:  # a port nothing listens on: guests are unreachable at once, no DNS
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    doc = yaml.safe_load((tmp_path / "fleet.yaml").read_text())
    for g in doc["guests"]:
        g["address"], g["port"] = "127.0.0.1", closed
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(doc))
    proc = run_cli("preflight", "-i", "fleet.yaml", "--timeout", "5", "--out", "rep", "--format", "json",
                   connect=False)
    _clean(proc)
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert len(report["guests"]) == 8
    for guest in report["guests"]:
        ids = {f["check_id"] for f in guest["findings"]}
        assert {"VM-SNAPSHOTS", "VM-MAC-COLLISION", "VM-GUEST-IP"} <= ids, guest["guest"]
