"""After the source went down: rollback (default) or hold; before it: nothing changes. Two
controllers on one wave; bad input."""

from __future__ import annotations

import fcntl
import os

import pytest

from tests.cutover.conftest import accept_gate

pytestmark = pytest.mark.integration


def test_agent_never_answers_rollback_powers_the_source_on_and_keeps_the_copy_stopped(lab):
    lab_ = lab("DC0_H0_VM1", 9101)
    lab_.plan()
    accept_gate(lab_)
    lab_.pve.state.faults.agent_silent = True
    r = lab_.run()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DC0_H0_VM1: rolled_back" in r.stdout
    assert "guest agent did not answer" in r.stderr
    src = lab_.source()
    assert src["power"] == "poweredOn" and not src["marked"] and src["field"] is None
    assert str(lab_.vm.guest.toolsRunningStatus) == "guestToolsRunning"
    assert "guestprep-cutover-undone: rolled back" in lab_.vm.config.annotation
    t = lab_.target()
    assert t["vms"] == [9101] and t["status"] == "stopped"          # kept, stopped
    assert t["volumes"] == ["local:9101/vm-9101-disk-0.qcow2"]      # its volume kept with it
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "rolled_back" and "guest agent did not answer" in vm["error"]
    assert vm["source_state"]["power"] == "poweredOn" and vm["source_state"]["marked"] is False
    assert vm["target_state"]["exists"] and vm["target_state"]["status"] == "stopped"
    failed = [s for s in vm["steps"] if s["status"] == "failed"]
    assert [s["step"] for s in failed] == ["verify"]
    assert [s["step"] for s in vm["steps"]][-4:] == ["rollback_stop_target", "rollback_unmark_source",
                                                     "rollback_power_on_source", "rollback_reclaim_partials"]
    # the conversion had finished and was verified: nothing to reclaim, the node not asked
    assert vm["steps"][-1]["outputs"]["partials"] == "none (every disk converted and verified)"


def test_hold_leaves_both_sides_off(lab):
    lab_ = lab("DC0_H0_VM2", 9102)
    lab_.plan()
    accept_gate(lab_)
    lab_.pve.state.faults.agent_silent = True
    r = lab_.run("--on-failure", "hold")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "DC0_H0_VM2: held" in r.stdout
    src = lab_.source()
    assert src["power"] == "poweredOff" and src["marked"]
    t = lab_.target()
    assert t["vms"] == [9102] and t["status"] == "stopped"
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "held"
    assert vm["source_state"] == {"power": "poweredOff", "tools": vm["source_state"]["tools"], "marked": True}
    assert vm["target_state"]["status"] == "stopped"
    # a human decides later: `cutover rollback` brings the source back
    rb = lab_.gp("cutover", "rollback", lab_.wave, "DC0_H0_VM2", "--poll", "0.05")
    assert rb.returncode == 0, rb.stdout + rb.stderr
    assert lab_.source()["power"] == "poweredOn" and not lab_.source()["marked"]
    assert lab_.status()["vms"][0]["phase"] == "rolled_back"


def test_blocked_gate_stops_before_anything_changes(lab):
    lab_ = lab("DC0_H0_VM3", 9103)
    lab_.plan()  # the real preflight of this node: unknown (no kernel to check), and nobody accepted it
    r = lab_.run()
    assert r.returncode == 1
    assert "gate: preflight verdict 'unknown'" in r.stderr
    assert lab_.source() == {"power": "poweredOn", "marked": False, "field": None}
    assert lab_.target()["vms"] == [] and lab_.target()["files"] == []
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "failed" and [s["step"] for s in vm["steps"]] == ["gate"]


def test_a_second_controller_is_refused_by_the_lock(lab):
    lab_ = lab("DC0_H0_VM4", 9104)
    lab_.plan()
    accept_gate(lab_)
    state = lab_.tmp / "wave.yaml.state"
    state.mkdir()
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a running controller holds
    os.pwrite(fd, b"4242\n", 0)
    try:
        r = lab_.run()
        assert r.returncode == 2, r.stdout + r.stderr
        assert "another controller (pid 4242)" in r.stderr and "Traceback" not in r.stderr
        assert lab_.source()["power"] == "poweredOn" and lab_.target()["vms"] == []
    finally:
        os.close(fd)
    r = lab_.run()  # the lock is free again (flock dies with its holder)
    assert r.returncode == 0, r.stdout + r.stderr


def test_bad_input_names_what_and_where(lab, tmp_path):
    lab_ = lab("DC0_C0_RP0_VM0", 9105)
    lab_.plan()
    text = lab_.wave.read_text()
    cases = [
        ("vmid: 9105", "vmid: 12", "vms[0].target: vmid must be 100..999999999"),
        ("node: pve1\n", "node: pve9\n", "node 'pve9' is not under nodes"),
        ("schema: guestprep.cutover-wave/1", "schema: x", "schema must be"),
        ("- shutdown\n", "- shutdwn\n", "unknown step(s) ['shutdwn']"),
    ]
    for old, new, message in cases:
        bad = tmp_path / "bad.yaml"
        assert old in text, old
        bad.write_text(text.replace(old, new, 1))
        r = lab_.gp("cutover", "run", bad)
        assert r.returncode == 2, (new, r.stdout, r.stderr)
        assert message in r.stderr and str(bad) in r.stderr and "Traceback" not in r.stderr, r.stderr
    r = lab_.gp("cutover", "run", lab_.wave, "--on-failure", "maybe")
    assert r.returncode == 2 and "--on-failure" in r.stderr
    r = lab_.gp("cutover", "resume", lab_.wave)
    assert r.returncode == 2 and "never run" in r.stderr
    again = lab_.gp("cutover", "plan", "-i", lab_.fleet, "--policy", lab_.policy, "--out", lab_.wave,
                    "--server", lab_.sim.server, "--user", lab_.sim.user)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert lab_.source()["power"] == "poweredOn"


# --------------------------------------------------------------------------- the finalize dry-run at the gate

from tests.cutover import streaming_support  # noqa: E402

folder_sim, folder_vs, slab = (streaming_support.folder_sim, streaming_support.folder_vs,  # fixtures
                               streaming_support.slab)


def test_a_config_proxmox_would_refuse_fails_the_gate_with_the_source_running(slab):
    """The source NIC carries a hand-set multicast MAC, which Proxmox refuses for a NIC (qemu-server's
    mac check, guestprep/proxmox/schema.py): the VM config finalize would create is checked against the
    API schema at the gate, before the shutdown. Nothing changes on either side."""
    from pyVmomi import vim

    from guestprep.vsphere.actions import wait_for_task

    lab_ = slab("DC0_H0_VM0", 9106)
    nic = next(d for d in lab_.vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    nic.addressType, nic.macAddress = "manual", "03:50:56:aa:bb:cc"
    change = vim.vm.device.VirtualDeviceSpec(operation=vim.vm.device.VirtualDeviceSpec.Operation.edit, device=nic)
    wait_for_task(lab_.vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(deviceChange=[change])), "a multicast MAC")
    lab_.plan()
    accept_gate(lab_)
    r = lab_.run()
    assert r.returncode == 1, r.stdout + r.stderr
    assert "invalid for the Proxmox API" in r.stderr and "multicast MAC" in r.stderr, r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "failed" and [s["step"] for s in vm["steps"]] == ["gate"]
    assert lab_.source() == {"power": "poweredOn", "marked": False, "field": None}
    assert str(lab_.vm.guest.toolsRunningStatus) == "guestToolsRunning"
    assert lab_.target()["vms"] == [] and lab_.target()["files"] == []
    assert not [q for q in lab_.pve.state.requests if q[0] != "GET"]   # the dry run wrote nothing to Proxmox
