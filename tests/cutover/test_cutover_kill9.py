"""The kill -9 matrix: the controller dies (os._exit, no cleanup) right after each step acted and
before the journal recorded it; `cutover resume` then finishes the VM exactly once."""

from __future__ import annotations

import subprocess

import pytest

from tests.cutover.conftest import accept_gate

pytestmark = pytest.mark.integration

STEPS = ("gate", "shutdown", "mark_source", "locate_disks", "convert", "finalize", "start", "verify")
# one simulated VM per case (the simulator has DC0_C0_RP0_VM0..7 and DC0_H0_VM0..7; other modules use some)
_FREE = [f"DC0_C0_RP0_VM{i}" for i in range(1, 8)] + ["DC0_H0_VM5"]
VMS = {step: (_FREE[i], 9200 + i) for i, step in enumerate(STEPS)}


@pytest.mark.parametrize("step", STEPS)
def test_kill_after_each_step_then_resume_finishes_exactly_once(lab, step):
    vm_name, vmid = VMS[step]
    lab_ = lab(vm_name, vmid)
    lab_.plan()
    accept_gate(lab_)
    r = lab_.run(env=lab_.env(GUESTPREP_CUTOVER_CRASH_AFTER=step))
    assert r.returncode == 137, r.stdout + r.stderr
    assert f"{step} done" not in r.stderr  # it died before journaling the step
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "running" and vm["steps"][-1]["step"] == step and vm["steps"][-1]["status"] == "running"

    r = lab_.resume()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done"
    done = [s["step"] for s in vm["steps"] if s["status"] == "done"]
    assert done == list(STEPS)                            # every step done exactly once
    interrupted = [s["step"] for s in vm["steps"] if s["status"] == "interrupted"]
    assert interrupted == [step]
    redone = next(s for s in vm["steps"] if s["step"] == step and s["status"] == "done")
    if step in ("shutdown", "mark_source", "convert", "finalize", "start"):
        assert redone["outputs"].get("postcondition_held") is True  # found done, not done twice
    # one Proxmox VM, one set of volumes, the source off and marked
    t = lab_.target()
    assert t["vms"] == [vmid] and t["status"] == "running"
    assert t["volumes"] == [f"local:{vmid}/vm-{vmid}-disk-0.qcow2"] and t["files"] == [f"vm-{vmid}-disk-0.qcow2"]
    creates = [r for r in lab_.pve.state.requests if r[0] == "POST" and r[1] == "/nodes/{node}/qemu"]
    assert len(creates) == 1
    assert lab_.source()["power"] == "poweredOff" and lab_.source()["marked"]
    assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(lab_.raw),
                           str(lab_.storage / f"images/{vmid}/vm-{vmid}-disk-0.qcow2")]).returncode == 0
    assert vm["downtime_s"] is not None and vm["downtime_s"] > 0
