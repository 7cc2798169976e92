"""A wave of one VM from the simulator to the Proxmox test server, through the real sshd node."""

from __future__ import annotations

import json
import sqlite3

import pytest
import yaml

from tests.cutover.conftest import accept_gate

pytestmark = pytest.mark.integration


def test_full_run_ends_done_with_every_step_journaled(lab):
    lab_ = lab("DC0_H0_VM0", 9100)
    lab_.plan()
    wave = lab_.wave.read_text()
    assert "DC0_H0_VM0" in wave and "vmid: 9100" in wave and "local:9100/vm-9100-disk-0.qcow2" in wave
    accept_gate(lab_)
    r = lab_.run()
    assert r.returncode == 0, r.stdout + r.stderr
    assert "DC0_H0_VM0: done" in r.stdout
    st = lab_.status()
    vm = st["vms"][0]
    assert vm["phase"] == "done"
    steps = [(s["step"], s["status"]) for s in vm["steps"]]
    assert steps == [(s, "done") for s in ("gate", "shutdown", "mark_source", "locate_disks", "convert", "finalize",
                                            "start", "verify")]
    assert vm["downtime_s"] is not None and vm["downtime_s"] > 0
    assert vm["verification"]["addresses"] == ["10.0.0.42", "127.0.0.1"] or "10.0.0.42" in vm["verification"]["addresses"]
    # the sides, read directly
    assert lab_.source() == {"power": "poweredOff", "marked": True, "field": lab_.source()["field"]}
    assert lab_.source()["field"].startswith("migrated to Proxmox pve1/9100")
    t = lab_.target()
    assert t["vms"] == [9100] and t["status"] == "running"
    assert t["volumes"] == ["local:9100/vm-9100-disk-0.qcow2"]
    assert t["files"] == ["vm-9100-disk-0.qcow2"]
    cfg = lab_.pve.state.vms[9100]["config"]
    assert cfg["scsi0"].startswith("local:9100/vm-9100-disk-0.qcow2")
    # finalize's record names the plan's strategy and the planner's reason for it (not "given explicitly")
    wave_vm = yaml.safe_load(lab_.wave.read_text())["vms"][0]
    fin = next(s for s in vm["steps"] if s["step"] == "finalize")["outputs"]
    assert fin["strategy"] == wave_vm["target"]["strategy"] == "direct"
    assert fin["strategy_reason"] == wave_vm["gate"]["strategy_reason"]
    # the bytes on the Proxmox side are the source disk's
    import subprocess
    assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(lab_.raw),
                           str(lab_.storage / "images/9100/vm-9100-disk-0.qcow2")]).returncode == 0
    # journal: SQLite in WAL mode, plan hash bound, reports written
    db = sqlite3.connect(lab_.tmp / "wave.yaml.state" / "journal.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT value FROM meta WHERE key='plan_hash'").fetchone()[0] == st["plan_hash"]
    report = json.loads((lab_.tmp / "wave.yaml.state" / "report.json").read_text())
    rv = report["vms"][0]
    assert rv["phase"] == "done" and rv["node"] == "pve1" and rv["downtime_s"] == vm["downtime_s"]
    # per VM: every step with its timing, the conversion's own seconds, the verification evidence
    assert set(rv["timings"]) == {s for s, _ in steps} and all(t >= 0 for t in rv["timings"].values())
    assert 0 < rv["conversion_s"] <= rv["timings"]["convert"] and rv["seconds"] >= sum(rv["timings"].values()) - 0.01
    assert rv["verification"]["agent_first_answer_at"] and "10.0.0.42" in rv["verification"]["addresses"]
    assert rv["verification"]["macs"] == [lab_.mac]
    # per node: what pve1 took
    assert report["nodes"] == [{"node": "pve1", "vms": ["DC0_H0_VM0"], "phases": {"done": 1}, "disks_converted": 1,
                                "conversion_s": rv["conversion_s"],
                                "downtime_s": {"min": rv["downtime_s"], "median": rv["downtime_s"], "max": rv["downtime_s"]},
                                "started": rv["started"], "ended": rv["ended"]}]
    assert report["summary"] == {"done": 1}
    junit = (lab_.tmp / "wave.yaml.state" / "junit.xml").read_text()
    assert '<testsuite name="cutover DC0_H0_VM0" hostname="pve1" tests="8" failures="0"' in junit
    assert f'<property name="downtime_s" value="{rv["downtime_s"]}"/>' in junit and "addresses 10.0.0.42" in junit
    page = (lab_.tmp / "wave.yaml.state" / "report.html").read_text()
    assert "<h2>Per node</h2>" in page and "<td>pve1</td><td>DC0_H0_VM0</td><td>done: 1</td>" in page
    assert f"MACs {lab_.mac}" in page and "<td>convert</td><td>1</td><td>done</td>" in page
    # secrets never in the wave, the journal or the output
    for text in (wave, r.stdout + r.stderr, (lab_.tmp / "wave.yaml.state" / "report.json").read_text()):
        assert lab_.sim.password not in text and lab_.token not in text
    # a second run of the same wave is refused: resume is the way on
    again = lab_.run()
    assert again.returncode == 2 and "cutover resume" in again.stderr
