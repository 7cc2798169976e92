"""Windows in a cutover (issue 15), run through the CLI on the real parts of the other cutover tests
(govmomi simulator, the suite's sshd as the node with guestprep-host and qemu-img, the PVE API test
server) with the guest answered over WinRM by the WS-Management test server:

- the coexistence disk (attached by `guestprep vm coexist attach`) is detached from the source before
  its shutdown, and is never converted nor attached on Proxmox;
- the guest's VirtIO SCSI boot is not proven (vioscsi not boot-start), so the plan picks sata-first and
  finalize runs its own first boot from SATA and the switch to scsi0 inside the run;
- the post-phase preflight at verify reaches the guest over WinRM; when it cannot, verify fails and
  the run rolls back.

The copy does not boot (no TCG): the PVE test server's agent answers as in the other non-booting tests.
"""

from __future__ import annotations

import json
import re
import subprocess

import pytest

from tests.cutover.windows_support import (IP, MAC, coexist_disks, datastore_files, make_windows_lab,
                                           ws2019_with_agent)
from tests.windows.conftest import ntlm_user_file, password_env, pki, wsman  # noqa: F401  (fixtures)

pytestmark = pytest.mark.integration


def _collects(running) -> int:
    """How many times the guest ran guestprep's collector over WinRM (the WS-Man server's own record)."""
    return sum(1 for m in running.guest.ran if "collect" in m)


def _mirror_coexist_file(lab_, path: str) -> str:
    """The coexistence disk's file, as a real datastore would hold it, in the datastore the node reads
    (policy.datastores): were it planned, guestprep-host could convert it. Returns its relative path."""
    ds, rel = path[1:].split("] ", 1)
    dest = lab_.ds.parent / ds / rel
    subprocess.run(["qemu-img", "create", "-q", "-f", "vmdk", str(dest), "8M"], check=True)
    return rel


def yaml_vm(lab_) -> dict:
    """The VM's entry in the planned wave file (what the reviewer reads)."""
    import yaml

    return yaml.safe_load(lab_.wave.read_text())["vms"][0]


def _steps(vm: dict) -> dict[str, dict]:
    return {s["step"]: s for s in vm["steps"]}


def test_windows_cutover_detaches_coexistence_disk_runs_sata_first_and_post_preflight_over_winrm(lab, wsman):
    running = wsman(ws2019_with_agent())
    lab_ = make_windows_lab(lab, running, "DC0_C0_RP0_VM2", 9401, post_preflight={"timeout": 60})
    marker = coexist_disks(lab_)[0]
    marker_name = marker.rsplit("/", 1)[-1]
    assert marker_name in datastore_files(lab_, marker)   # `vm coexist attach` created its file
    coexist_rel = _mirror_coexist_file(lab_, marker)
    lab_.plan()
    plan = yaml_vm(lab_)
    assert plan["os"] == "windows" and plan["gate"]["verdict"] == "waived"
    assert plan["target"]["strategy"] == "sata-first", plan["gate"]["strategy_reason"]
    assert "WIN-VIOSCSI-BOOTSTART did not pass" in plan["gate"]["strategy_reason"]
    assert "coexist_detach" in plan["steps"]
    assert [d["source"] for d in plan["disks"]] == [f"[LocalDS_0] {lab_.vm_name}/disk1.vmdk"]   # not the dummy
    volid = plan["disks"][0]["volid"]
    collects_at_plan = _collects(running)
    assert collects_at_plan >= 1                      # the plan's gate preflighted the guest over WinRM

    r = lab_.run()
    assert r.returncode == 0, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "done", vm["error"]
    steps = _steps(vm)

    # (a) the coexistence disk: detached through the engine before the shutdown, its file deleted
    assert [s["step"] for s in vm["steps"]][:3] == ["gate", "coexist_detach", "shutdown"]
    assert steps["coexist_detach"]["outputs"]["operation"] == "vm.coexistence_disk_detach"
    assert steps["coexist_detach"]["outputs"]["applied"] == "coexistence disk detached and its file deleted"
    assert steps["coexist_detach"]["ended"] <= steps["shutdown"]["started"]
    assert coexist_disks(lab_) == []                  # read from vSphere directly
    assert marker_name not in datastore_files(lab_, marker)
    # ... and never converted nor attached on Proxmox
    assert [d["label"] for d in steps["convert"]["outputs"]["disks"]] == [plan["disks"][0]["label"]]
    assert lab_.target()["files"] == [volid.split("/")[-1]]
    cfg = lab_.pve.state.vms[9401]["config"]
    assert not any("coexist" in str(v) or coexist_rel in str(v) for v in cfg.values()), cfg

    # (b) sata-first, as finalize documents it (guestprep/finalize/flow.py _switch_from_sata): created with
    # the system disk on sata0 and a 1 GiB VirtIO disk, started, shut down, the disk moved to scsi0 with
    # boot order=scsi0, the dummy removed (its volume freed), started again
    writes = [(m, p.rsplit("/", 2)[-2:] if "{vmid}" in p else p, prm) for m, p, prm in lab_.pve.state.requests
              if m in ("POST", "PUT", "DELETE") and not p.endswith(("agent/ping",))]
    create = writes[0][2]
    assert writes[0][:2] == ("POST", "/nodes/{node}/qemu")
    assert create["sata0"].startswith(volid + ",") and create["boot"] == "order=sata0"
    dummy = next(k for k, v in create.items() if re.fullmatch(r"scsi\d+", k) and v.startswith("local:1,"))
    assert [(m, p) for m, p, _ in writes[1:]] == [
        ("POST", ["status", "start"]), ("POST", ["status", "shutdown"]), ("POST", ["{vmid}", "config"]),
        ("POST", ["{vmid}", "config"]), ("POST", ["status", "start"])]
    assert writes[3][2]["delete"] == f"sata0,{dummy}"
    assert writes[4][2]["scsi0"].startswith(volid + ",") and writes[4][2]["boot"] == "order=scsi0"
    assert cfg["scsi0"].startswith(volid + ",") and cfg["boot"] == "order=scsi0"
    assert not {"sata0", dummy} & set(cfg) and not [k for k in cfg if k.startswith("unused")], cfg
    assert sorted(v for v in lab_.pve.volumes_of(9401) if v != cfg["efidisk0"].split(",")[0]) == [volid]
    assert lab_.target()["status"] == "running"
    # the journal: finalize created and started it (its own sata-first start), the start step found it running
    fin = steps["finalize"]["outputs"]
    assert fin["created"] and fin["started"]
    assert any(f.startswith("sata-first: first boot from sata0") for f in fin["findings"]), fin["findings"]
    assert steps["start"]["outputs"]["already"] is True and steps["start"]["outputs"]["status"] == "running"
    assert {"sata0", dummy} <= set(steps["gate"]["outputs"]["finalize_dry_run"]["keys"])

    # (c) the post-phase preflight at verify, over WinRM, in the step's outputs and the report
    post = steps["verify"]["outputs"]["post_preflight"]
    assert post["transport"] == "winrm" and post["phase"] == "post" and post["guest"] == lab_.vm_name
    assert post["error"] is None and post["counts"].get("pass", 0) >= 1 and post["findings"] == []
    assert _collects(running) > collects_at_plan      # it really reached the WS-Man server again
    report = json.loads((lab_.tmp / "wave.yaml.state" / "report.json").read_text())
    assert report["vms"][0]["verification"]["post_preflight"] == post
    assert steps["verify"]["outputs"]["macs"] == [MAC] and IP in steps["verify"]["outputs"]["addresses"]
    assert lab_.source()["power"] == "poweredOff" and lab_.source()["marked"]


def test_windows_guest_unreachable_over_winrm_after_the_move_fails_verify_and_rolls_back(lab, wsman):
    running = wsman(ws2019_with_agent())
    lab_ = make_windows_lab(lab, running, "DC0_C0_RP0_VM3", 9402, post_preflight={"timeout": 30})
    lab_.plan()
    # on Proxmox the guest's WinRM service refuses to open a shell (a WSManFault, w:AccessDenied):
    # the post-phase preflight cannot reach the guest, WIN-REACHABLE fails, a blocker
    running.state.config.fault_on_create = "Access is denied."
    r = lab_.run()
    assert r.returncode == 1, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "rolled_back", vm
    assert [s["step"] for s in vm["steps"] if s["status"] == "failed"] == ["verify"]
    assert "post-phase preflight" in vm["error"] and "WIN-REACHABLE" in vm["error"], vm["error"]
    done = [s["step"] for s in vm["steps"] if s["status"] == "done"]
    assert done[-4:] == ["rollback_stop_target", "rollback_unmark_source", "rollback_power_on_source",
                         "rollback_reclaim_partials"], done
    assert "coexist_detach" in done and "finalize" in done
    # the two sides after the rollback: the copy stopped and kept (sata-first's end state), the source back
    t = lab_.target()
    assert t["vms"] == [9402] and t["status"] == "stopped"
    assert lab_.pve.state.vms[9402]["config"]["boot"] == "order=scsi0"
    assert lab_.source()["power"] == "poweredOn" and not lab_.source()["marked"]
    # the coexistence disk is not attached again: the guest does not need it on VMware (noted in the report)
    assert coexist_disks(lab_) == []


def test_sata_first_switch_failing_inside_the_run_fails_finalize_and_rolls_back(lab, wsman):
    """finalize's own sata-first sequence fails at its shutdown before the switch: finalize fails (its
    cleanup stops the copy and keeps it: it holds guestprep-host's volume), the run rolls back."""
    running = wsman(ws2019_with_agent())
    lab_ = make_windows_lab(lab, running, "DC0_C0_RP0_VM4", 9403)
    lab_.plan()
    lab_.pve.state.faults.task_fail["qmshutdown"] = "VM quit/powerdown failed - got timeout"
    r = lab_.run()
    assert r.returncode == 1, r.stdout + r.stderr
    vm = lab_.status()["vms"][0]
    assert vm["phase"] == "rolled_back", vm
    assert [s["step"] for s in vm["steps"] if s["status"] == "failed"] == ["finalize"]
    assert "powerdown failed" in vm["error"] and "LEFT in place" in vm["error"], vm["error"]
    assert "start" not in [s["step"] for s in vm["steps"]] and "verify" not in [s["step"] for s in vm["steps"]]
    cfg = lab_.pve.state.vms[9403]["config"]
    assert cfg["boot"] == "order=sata0" and "scsi0" not in cfg       # the switch never happened
    volid = yaml_vm(lab_)["disks"][0]["volid"]
    assert cfg["sata0"].startswith(volid + ",") and volid in lab_.pve.volumes_of(9403)   # kept, not destroyed
    assert lab_.target()["status"] == "stopped"
    assert lab_.source()["power"] == "poweredOn" and not lab_.source()["marked"]
