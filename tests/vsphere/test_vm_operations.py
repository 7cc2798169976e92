"""VM operations against the simulator: coexistence disk round trip, plan mode, idempotence,
a failing task, power control, snapshots.

VMs: DC0_C0_RP0_VM2 (coexistence round trip), DC0_C0_RP0_VM3 (failing task),
DC0_H0_VM0 (graceful shutdown / power on), DC0_H0_VM1 (no Tools: refuse, then --hard),
DC0_H0_VM3 (snapshot).
"""

from __future__ import annotations

import pytest
import requests

from guestprep.errors import ConfigError, OperationError
from guestprep.operations.base import registered
from guestprep.operations.vm import coexistence
from guestprep.vsphere import coexist
from guestprep.vsphere.actions import TaskFailed, find_vm
from guestprep.vsphere.inventory import fetch_one
from guestprep.vsphere.locator import folder_url, locate

from vsphere_support import set_guest

pytestmark = pytest.mark.integration


def facts(session, name):
    return fetch_one(session, find_vm(session, name))


def test_coexistence_disk_round_trip(session, vcsim):
    name = "DC0_C0_RP0_VM2"
    op, detach = registered()["vm.coexistence_disk"], registered()["vm.coexistence_disk_detach"]
    before = facts(session, name)
    plan = op.plan(before, name, {})
    kinds = [c.detail.get("kind") for c in plan.changes if c.kind == "add_controller"]
    assert kinds == ["lsisas"]  # boot disk is on pvscsi: a different type
    assert facts(session, name).to_dict() == before.to_dict()  # planning changed nothing

    applied = op.apply(session, plan, {})
    assert applied.ok
    after = facts(session, name)
    added = [d for d in after.disks if coexist.is_marker_file(d.datastore_path)]
    assert len(added) == 1 and added[0].capacity_bytes == 1 << 30 and added[0].thin is True
    assert after.controller(added[0].controller_key).kind == "lsisas"
    assert after.boot_disk().datastore_path == before.boot_disk().datastore_path

    again = op.plan(after, name, {})  # idempotent: recognised, nothing planned, nothing applied
    assert again.empty and "already attached" in again.reason
    assert op.apply(session, again, {}).steps[0]["action"] == "none"
    assert len(facts(session, name).disks) == len(after.disks)

    dplan = detach.plan(after, name, {})
    assert [c.kind for c in dplan.changes] == ["remove_disk", "remove_controller"]
    detach.apply(session, dplan, {})
    final = facts(session, name)
    assert [d.datastore_path for d in final.disks] == [d.datastore_path for d in before.disks]
    assert sorted(c.key for c in final.controllers) == sorted(c.key for c in before.controllers)
    # the backing file is gone from the datastore
    url = folder_url(session.host, session.port, "DC0", "LocalDS_0", added[0].datastore_path.split("] ", 1)[1])
    assert requests.get(url, verify=str(vcsim.certs.ca_pem), headers={"Cookie": session.cookie()}, timeout=10).status_code == 404
    assert detach.plan(final, name, {}).empty


def test_failing_task_leaves_the_vm_unchanged(session, vcsim):
    """The disk file already exists on the datastore: vSphere fails the reconfigure task."""
    name = "DC0_C0_RP0_VM3"
    before = facts(session, name)
    plan = coexistence.plan_attach(before)
    path = plan.changes[1].target.split("] ", 1)[1]
    url = folder_url(session.host, session.port, "DC0", "LocalDS_0", path)
    r = requests.put(url, data=b"squatter", verify=str(vcsim.certs.ca_pem), timeout=10,
                     headers={"Cookie": session.cookie()})
    assert r.status_code in (200, 201)
    with pytest.raises(TaskFailed) as exc:
        coexist.apply_attach(session, find_vm(session, name), plan)
    assert name in str(exc.value) and "FileAlreadyExists" in str(exc.value), str(exc.value)
    print(exc.value)
    after = facts(session, name)
    assert not [d for d in after.disks if coexist.is_marker_file(d.datastore_path)]
    assert requests.get(url, verify=str(vcsim.certs.ca_pem), timeout=10).content == b"squatter"  # not clobbered


def test_plan_errors_are_clear(session):
    f = facts(session, "DC0_C0_RP0_VM3")
    with pytest.raises(ConfigError, match="different type"):
        coexistence.plan_attach(f, controller="pvscsi")
    with pytest.raises(ConfigError, match="unknown controller"):
        coexistence.plan_attach(f, controller="virtio")
    with pytest.raises(ConfigError, match="MiB"):
        coexistence.plan_attach(f, size_bytes=100 << 30)
    sata = coexistence.plan_attach(f, controller="sata")
    assert sata.warnings and "hot-add" in sata.warnings[0]


def test_unknown_vm(session):
    with pytest.raises(ConfigError, match="no VM named"):
        find_vm(session, "no-such-vm")
    with pytest.raises(ConfigError, match="no VM with moref"):
        find_vm(session, "vm-999999")


def test_graceful_shutdown_then_power_on(session):
    name = "DC0_H0_VM0"
    vm = find_vm(session, name)
    set_guest(session, vm, toolsRunningStatus="guestToolsRunning")
    shutdown, power_on = registered()["vm.shutdown"], registered()["vm.power_on"]
    plan = shutdown.plan(facts(session, name), name, {"timeout": 30})
    assert not plan.empty and not plan.warnings
    assert facts(session, name).power_state == "poweredOn"  # plan changed nothing
    res = shutdown.apply(session, plan, {"poll": 0.1})
    assert res.steps[0]["action"] == "guest-shutdown"
    off = facts(session, name)
    assert off.power_state == "poweredOff"
    assert shutdown.plan(off, name, {}).empty
    pplan = power_on.plan(off, name, {})
    power_on.apply(session, pplan, {})
    assert facts(session, name).power_state == "poweredOn"
    assert power_on.plan(facts(session, name), name, {}).empty


def test_no_tools_refuses_without_hard(session):
    name = "DC0_H0_VM1"
    shutdown = registered()["vm.shutdown"]
    plan = shutdown.plan(facts(session, name), name, {"timeout": 5})
    assert "Tools is not running" in plan.warnings[0]
    with pytest.raises(OperationError, match="--hard"):
        shutdown.apply(session, plan, {})
    assert facts(session, name).power_state == "poweredOn"  # left running
    hard = shutdown.plan(facts(session, name), name, {"timeout": 5, "hard": True})
    assert shutdown.apply(session, hard, {}).steps[0]["action"] == "power-off"
    assert facts(session, name).power_state == "poweredOff"
    registered()["vm.power_on"].apply(session, registered()["vm.power_on"].plan(
        facts(session, name), name, {}), {})


def test_pre_cutover_snapshot(session):
    name = "DC0_H0_VM3"
    op = registered()["vm.snapshot"]
    before = facts(session, name)
    plan = op.plan(before, name, {"name": "pre-cutover"})
    assert plan.changes[0].detail == {"name": "pre-cutover", "quiesce": True}
    assert facts(session, name).snapshot_count == before.snapshot_count
    res = op.apply(session, plan, {})
    assert res.steps[0]["quiesced"] is True
    assert facts(session, name).snapshot_count == before.snapshot_count + 1


def test_disk_locator_streams_with_the_session_cookie(session, vcsim):
    f = facts(session, "DC0_H0_VM2")
    doc = locate(f, session.host, session.port, session.cookie())
    d = doc["disks"][0]
    assert d["descriptor_url"].startswith(f"https://127.0.0.1:{session.port}/folder/DC0_H0_VM2/")
    assert "dcPath=DC0" in d["descriptor_url"] and "dsName=LocalDS_0" in d["descriptor_url"]
    assert d["flat_url"].endswith("-flat.vmdk?dcPath=DC0&dsName=LocalDS_0")
    r = requests.get(d["descriptor_url"], headers={"Cookie": doc["session_cookie"]},
                     verify=str(vcsim.certs.ca_pem), timeout=10)
    assert r.status_code == 200
    missing = requests.get(d["descriptor_url"].replace(".vmdk?", "-nope.vmdk?"), verify=str(vcsim.certs.ca_pem),
                           headers={"Cookie": doc["session_cookie"]}, timeout=10)
    assert missing.status_code == 404
