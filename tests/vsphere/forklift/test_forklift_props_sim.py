"""The properties issue 18 added, end to end through a real PropertyCollector retrieval: a govmomi
simulator of its own (the shared one's VMs belong to other modules), VMs shaped through the real API,
read by inventory.fetch_all on the fast path and on pyVmomi's, then checked. vcsim cannot turn Fault
Tolerance on and its cluster reconfiguration changes rules and groups only (govmomi
simulator/cluster_compute_resource.go; it creates clusters with DRS on): config.ftInfo, DPM and HA are
covered by the translated Forklift cases (test_forklift_rules.py)."""

from __future__ import annotations

import secrets

import pytest
from pyVmomi import vim

import simulator as simlib
from guestprep.checks.registry import get
from guestprep.checks.vm.fleet import fleet_findings
from guestprep.models import Status
from guestprep.vsphere.actions import find_vm
from guestprep.vsphere.inventory import fetch_all
from vsphere_support import reconfig, set_guest

pytestmark = pytest.mark.integration
D = vim.vm.device
Op = D.VirtualDeviceSpec.Operation


@pytest.fixture(scope="module")
def sim_session(vcsim_binary, tmp_path_factory):
    certs = simlib.make_certs(tmp_path_factory.mktemp("forklift-certs"))
    sim = simlib.Simulator(vcsim_binary, certs, "pw-" + secrets.token_hex(8), vms_per_pool=2)
    s = sim.connect()
    yield s
    s.close()
    sim.close()


@pytest.fixture(scope="module")
def shaped(sim_session):
    s = sim_session
    vm = find_vm(s, "DC0_C0_RP0_VM0")
    ctl = next(d for d in vm.config.hardware.device if isinstance(d, D.VirtualSCSIController))
    uuid = "6000C29d-8a1b-2c3d-4e5f-60718293a4b5"
    reconfig(s, vm, vim.vm.ConfigSpec(deviceChange=[D.VirtualDeviceSpec(
        operation=Op.add, fileOperation="create", device=D.VirtualDisk(
            key=-1, controllerKey=ctl.key, unitNumber=2, capacityInKB=4096,
            backing=D.VirtualDisk.FlatVer2BackingInfo(fileName="[LocalDS_0] DC0_C0_RP0_VM0/data.vmdk",
                                                      diskMode="persistent", uuid=uuid)))]))
    disk = next(d for d in vm.config.hardware.device if isinstance(d, D.VirtualDisk)
                and d.backing.fileName.endswith("/data.vmdk"))
    dev = f"scsi{ctl.busNumber}:{disk.unitNumber}"
    reconfig(s, vm, vim.vm.ConfigSpec(
        cpuHotRemoveEnabled=True, changeTrackingEnabled=True,
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value="TRUE"),
                     vim.option.OptionValue(key="numa.nodeAffinity", value="0,1"),
                     vim.option.OptionValue(key=f"{dev}.ctkEnabled", value="FALSE"),
                     vim.option.OptionValue(key="guestinfo.secret", value="do-not-keep")]))
    set_guest(s, vm, hostName="localhost.localdomain", guestFullName="Red Hat Enterprise Linux 9 (64-bit)")
    # a second VM attaches the first one's disk file, its sharing flag left at sharingNone
    twin = find_vm(s, "DC0_C0_RP0_VM1")
    twin_ctl = next(d for d in twin.config.hardware.device if isinstance(d, D.VirtualSCSIController))
    reconfig(s, twin, vim.vm.ConfigSpec(deviceChange=[D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualDisk(
        key=-1, controllerKey=twin_ctl.key, unitNumber=3, capacityInKB=disk.capacityInKB,
        backing=D.VirtualDisk.FlatVer2BackingInfo(fileName=disk.backing.fileName, diskMode="persistent",
                                                  sharing="sharingNone")))]))
    return disk.backing.fileName


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "pyvmomi"])
def test_new_properties_through_a_real_retrieval(sim_session, shaped, fast):
    fleet = {v.name: v for v in fetch_all(sim_session, fast=fast)}
    vm = fleet["DC0_C0_RP0_VM0"]
    assert vm.cpu_hot_remove and vm.disk_enable_uuid and vm.numa_node_affinity == ["0", "1"]
    assert vm.tools_guest_full_name == "Red Hat Enterprise Linux 9 (64-bit)"
    assert vm.cluster_services == {"drs": True, "dpm": False, "ha": False}  # vcsim's cluster: DRS on
    first = next(d for d in vm.disks if d.datastore_path == shaped)
    assert first.cbt_enabled is False and first.serial == "6000c29d8a1b2c3d4e5f60718293a4b5"
    assert "do-not-keep" not in repr(vm.to_dict())
    failing = {f.check_id for f in (f for c in ("VM-HOTADD", "VM-DISK-SERIAL", "VM-NUMA-AFFINITY", "VM-CBT",
                                                  "VM-HOSTNAME", "VM-CLUSTER-SERVICES")
                                      for f in get(c).evaluate(vm, vm.name)) if f.status is Status.FAIL}
    assert failing == {"VM-HOTADD", "VM-DISK-SERIAL", "VM-NUMA-AFFINITY", "VM-CBT", "VM-HOSTNAME",
                       "VM-CLUSTER-SERVICES"}
    shared = [f for f in fleet_findings(list(fleet.values())) if f.check_id == "VM-DISK-SHARED"]
    assert {f.guest for f in shared} == {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}
    plain = fleet["DC0_H0_VM0"]  # negative control: untouched simulator VM on the standalone host
    assert not (plain.cpu_hot_remove or plain.disk_enable_uuid or plain.numa_node_affinity or plain.cluster_services)
