"""The kill -9 matrix for a Windows VM (issue 15): the controller dies right after a step the Linux matrix
does not have (coexist_detach), right after finalize, and *inside* finalize's sata-first switch (after
the create, after the first boot from SATA, between the detach and the attach: finalize's checkpoints).
`cutover resume` then finishes the VM exactly once: one Proxmox VM, its system disk on scsi0 with
boot order=scsi0, the 1 GiB VirtIO dummy gone (its volume freed), the coexistence disk detached.

Before the sata-first stages were read back, a resume after a kill inside finalize found the copy
existing, called finalize done, started it on SATA and ended `done` with the dummy disk attached and
boot order=sata0: the switch to VirtIO SCSI never happened.

Same real parts as tests/cutover/test_cutover_windows.py (simulator, sshd node with guestprep-host and
qemu-img, the PVE API test server, the WS-Management test server as the guest)."""

from __future__ import annotations

import re

import pytest

from tests.cutover.test_cutover_windows import yaml_vm
from tests.cutover.windows_support import coexist_disks, make_windows_lab, ws2019_with_agent
from tests.windows.conftest import ntlm_user_file, password_env, pki, wsman  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration

# the session simulator's pools have DC0_H0_VM0..20 (tests/cutover/conftest.py); 16..20 are this module's
CASES = {
    "coexist_detach": ("DC0_H0_VM16", 9451),
    "finalize": ("DC0_H0_VM17", 9452),
    "finalize.created": ("DC0_H0_VM18", 9453),
    "finalize.first_boot": ("DC0_H0_VM19", 9454),
    "finalize.detached": ("DC0_H0_VM20", 9455),
}


@pytest.mark.parametrize("point", list(CASES))
def test_kill_in_a_windows_cutover_then_resume_finishes_the_sata_first_switch_exactly_once(lab, wsman, point):
    vm_name, vmid = CASES[point]
    running = wsman(ws2019_with_agent())
    lab_ = make_windows_lab(lab, running, vm_name, vmid)
    lab_.plan()
    plan = yaml_vm(lab_)
    assert plan["target"]["strategy"] == "sata-first" and "coexist_detach" in plan["steps"]
    volid = plan["disks"][0]["volid"]

    r = lab_.run(env=lab_.env(GUESTPREP_CUTOVER_CRASH_AFTER=point))
    assert r.returncode == 137, r.stdout + r.stderr
    step = point.split(".")[0]
    vm = lab_.status()["vms"][0]
    assert vm["steps"][-1]["step"] == step and vm["steps"][-1]["status"] == "running"
    if point.startswith("finalize."):    # killed inside the switch: the copy exists, not switched
        cfg = lab_.pve.state.vms[vmid]["config"]
        assert cfg["boot"] == "order=sata0" or "sata0" not in cfg, cfg

    r = lab_.resume()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done", vm["error"]
    assert [s["step"] for s in vm["steps"] if s["status"] == "done"] == plan["steps"]   # each once
    assert [s["step"] for s in vm["steps"] if s["status"] == "interrupted"] == [step]
    redone = next(s for s in vm["steps"] if s["step"] == step and s["status"] == "done")["outputs"]
    if point in ("coexist_detach", "finalize"):
        assert redone.get("postcondition_held") is True, redone        # found done, not done twice
    else:
        assert redone["created"] is False and redone["resumed_switch"], redone

    # one Proxmox VM, created once, on VirtIO SCSI with boot order=scsi0; the dummy and its volume gone
    creates = [q for q in lab_.pve.state.requests if q[0] == "POST" and q[1] == "/nodes/{node}/qemu"]
    assert len(creates) == 1
    t = lab_.target()
    assert t["vms"] == [vmid] and t["status"] == "running"
    cfg = lab_.pve.state.vms[vmid]["config"]
    assert cfg["scsi0"].startswith(volid + ",") and cfg["boot"] == "order=scsi0", cfg
    assert "sata0" not in cfg and not [k for k in cfg if k.startswith("unused")], cfg
    assert [k for k in cfg if re.fullmatch(r"(scsi|sata|virtio|ide)\d+", k)] == ["scsi0"], cfg
    assert sorted(v for v in lab_.pve.volumes_of(vmid) if v != cfg["efidisk0"].split(",")[0]) == [volid]
    # the source: its coexistence disk detached, off and marked
    assert coexist_disks(lab_) == []
    assert lab_.source()["power"] == "poweredOff" and lab_.source()["marked"]
