"""Inventory against the simulator: VMs shaped through the real API, read back as SourceVM facts,
evaluated by the VM checks, written as a fleet file preflight can load.

Uses DC0_C0_RP0_VM0 ("shaped") and DC0_C0_RP0_VM1 (shares a MAC with it); the other VMs
stay as the simulator made them and serve as negative controls.
"""

from __future__ import annotations

import json

import pytest
import yaml
from pyVmomi import vim

from guestprep.checks.registry import evaluate
from guestprep.checks.vm.fleet import fleet_findings
from guestprep.models import Status
from guestprep.vsphere.actions import find_vm, run_task
from guestprep.vsphere.export import write
from guestprep.vsphere.inventory import VM_PROPERTIES, fetch_all, fetch_one

from vsphere_support import reconfig, set_guest

pytestmark = pytest.mark.integration

D = vim.vm.device
Op = D.VirtualDeviceSpec.Operation
SHARED_MAC = "00:50:56:01:02:03"


@pytest.fixture(scope="module")
def shaped(session):
    vm = find_vm(session, "DC0_C0_RP0_VM0")
    reconfig(session, vm, vim.vm.ConfigSpec(firmware="efi", bootOptions=vim.vm.BootOptions(efiSecureBootEnabled=True)))
    nvme = D.VirtualNVMEController(key=-5, busNumber=0)
    data = D.VirtualDisk(key=-6, controllerKey=-5, unitNumber=0, capacityInKB=2 * 1024 * 1024,
                         backing=D.VirtualDisk.FlatVer2BackingInfo(
                             fileName="[LocalDS_0] DC0_C0_RP0_VM0/scratch.vmdk",
                             diskMode="independent_nonpersistent", thinProvisioned=True))
    shared = D.VirtualDisk(key=-7, controllerKey=202, unitNumber=1, capacityInKB=4096,
                           backing=D.VirtualDisk.FlatVer2BackingInfo(
                               fileName="[LocalDS_0] DC0_C0_RP0_VM0/quorum.vmdk", diskMode="persistent",
                               sharing="sharingMultiWriter", thinProvisioned=False, eagerlyScrub=True))
    reconfig(session, vm, vim.vm.ConfigSpec(
        changeTrackingEnabled=True, cpuHotAddEnabled=True, memoryHotAddEnabled=True,
        cpuAffinity=vim.vm.AffinityInfo(affinitySet=[0, 1]), guestId="windows9Server64Guest",
        numCPUs=4, numCoresPerSocket=2, memoryMB=8192,
        deviceChange=[
            D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualTPM(key=-1)),
            D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualUSBXHCIController(key=-2)),
            D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualSerialPort(
                key=-3, backing=D.VirtualSerialPort.FileBackingInfo(fileName="[LocalDS_0] DC0_C0_RP0_VM0/com1.txt"))),
            D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualPCIPassthrough(
                key=-4, backing=D.VirtualPCIPassthrough.VmiopBackingInfo(vgpu="grid_t4-4q"))),
            D.VirtualDeviceSpec(operation=Op.add, device=nvme),
            D.VirtualDeviceSpec(operation=Op.add, device=data, fileOperation="create"),
            D.VirtualDeviceSpec(operation=Op.add, device=shared, fileOperation="create"),
            D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualVmxnet3(
                key=-8, macAddress=SHARED_MAC, addressType="manual",
                backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))),
        ]))
    set_guest(session, vm, ipAddress="10.1.2.3", hostName="win01.example", toolsRunningStatus="guestToolsRunning")
    for name in ("before-patch", "before-upgrade"):
        run_task(session, "snapshot", lambda: vm.CreateSnapshot_Task(name=name, description="", memory=False,
                                                                      quiesce=False))
    cluster = vm.runtime.host.parent
    rule = vim.cluster.AntiAffinityRuleSpec(name="keep-dcs-apart", enabled=True, mandatory=True,
                                            vm=[vm, find_vm(session, "DC0_C0_RP0_VM2")])
    run_task(session, "drs rule", lambda: cluster.ReconfigureComputeResource_Task(
        spec=vim.cluster.ConfigSpecEx(rulesSpec=[vim.cluster.RuleSpec(operation="add", info=rule)]), modify=True))
    twin = find_vm(session, "DC0_C0_RP0_VM1")
    reconfig(session, twin, vim.vm.ConfigSpec(deviceChange=[D.VirtualDeviceSpec(operation=Op.add, device=D.VirtualVmxnet3(
        key=-8, macAddress=SHARED_MAC.upper(), addressType="manual",
        backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network")))]))
    return vm


@pytest.fixture(scope="module")
def fleet(session, shaped):
    return {v.name: v for v in fetch_all(session, page_size=3)}


def test_reads_every_vm_once(fleet):
    assert len(fleet) == 8  # 4 VMs in the cluster pool + 4 on the standalone host
    assert all(v.moref and v.uuid_bios and v.host for v in fleet.values())


def test_shaped_vm_facts(fleet):
    vm = fleet["DC0_C0_RP0_VM0"]
    assert (vm.firmware, vm.secure_boot, vm.vtpm) == ("efi", True, True)
    assert (vm.num_cpu, vm.cores_per_socket, vm.memory_mb) == (4, 2, 8192)
    assert vm.cpu_hot_add and vm.mem_hot_add and vm.cbt_enabled
    assert vm.snapshot_count == 2
    assert vm.guest_id == "windows9Server64Guest"
    assert vm.guest_ips == ["10.1.2.3"] and vm.tools_running == "guestToolsRunning"
    assert vm.usb_controllers == 1 and vm.serial_ports == 1 and vm.vgpu == ["grid_t4-4q"]
    assert {c.kind for c in vm.controllers} >= {"pvscsi", "nvme", "ide"}
    by_file = {d.datastore_path.rsplit("/", 1)[-1]: d for d in vm.disks}
    assert by_file["scratch.vmdk"].disk_mode == "independent_nonpersistent"
    assert by_file["scratch.vmdk"].capacity_bytes == 2 << 30
    assert vm.controller(by_file["scratch.vmdk"].controller_key).kind == "nvme"
    assert by_file["quorum.vmdk"].sharing == "sharingMultiWriter" and by_file["quorum.vmdk"].thin is False
    assert vm.boot_disk().datastore_path.endswith("disk1.vmdk")
    vmx3 = [n for n in vm.nics if n.model == "vmxnet3"]
    assert vmx3 and vmx3[0].mac == SHARED_MAC and vmx3[0].address_type == "manual"
    assert (vm.cluster, vm.datacenter) == ("DC0_C0", "DC0")
    assert vm.affinity["cpu_affinity"] == [0, 1]
    assert vm.affinity["rules"][0]["name"] == "keep-dcs-apart"
    assert vm.affinity["rules"][0]["type"] == "vm-anti-affinity"


def test_rules_on_shaped_vm_and_negative_control(fleet):
    failing = lambda vm: {f.check_id for f in evaluate("vm", vm, vm.name) if f.status is Status.FAIL}  # noqa: E731
    shaped = failing(fleet["DC0_C0_RP0_VM0"])
    assert {"VM-SNAPSHOTS", "VM-DISK-INDEPENDENT", "VM-DISK-SHARED", "VM-PASSTHROUGH", "VM-VTPM",
            "VM-SECURE-BOOT", "VM-EFI-FIRMWARE", "VM-USB", "VM-HOTADD", "VM-AFFINITY"} <= shaped
    assert "VM-CBT" not in shaped and "VM-GUEST-IP" not in shaped and "VM-TOOLS-RUNNING" not in shaped
    plain = failing(fleet["DC0_H0_VM3"])  # untouched simulator VM: negative control
    assert not {"VM-SNAPSHOTS", "VM-VTPM", "VM-PASSTHROUGH", "VM-DISK-SHARED", "VM-AFFINITY"} & plain
    assert {"VM-CBT", "VM-GUEST-IP", "VM-OSTYPE"} <= plain  # otherGuest, no Tools, no CBT


def test_fleet_mac_collision(fleet):
    findings = [f for f in fleet_findings(list(fleet.values())) if f.status is Status.FAIL]
    assert {f.guest for f in findings if f.resource == SHARED_MAC} == {"DC0_C0_RP0_VM0", "DC0_C0_RP0_VM1"}


def test_fast_parser_matches_pyvmomi(session, fleet):
    """fastsoap's records map to exactly the facts pyVmomi's own deserializer gives."""
    slow = {v.name: v.to_dict() for v in fetch_all(session, fast=False)}
    assert slow == {n: v.to_dict() for n, v in fleet.items()}


def test_fast_mapper_matches_on_the_shaped_fleet(session, fleet, monkeypatch):
    """fastmap (device lists read straight from the answer's XML) gives the same facts as mapping."""
    from guestprep.vsphere import fastmap, inventory, mapping

    monkeypatch.setattr(inventory, "to_source_vm", fastmap.to_source_vm)
    fast = {v.name: v.to_dict() for v in fetch_all(session, page_size=3)}
    monkeypatch.setattr(inventory, "to_source_vm", mapping.to_source_vm)
    assert fast == {v.name: v.to_dict() for v in fetch_all(session, page_size=3)}
    assert fast["DC0_C0_RP0_VM0"]["vgpu"] == ["grid_t4-4q"] and fast["DC0_C0_RP0_VM0"]["snapshot_count"] == 2


def test_fetch_one_matches_fetch_all(session, fleet):
    one = fetch_one(session, find_vm(session, "DC0_C0_RP0_VM0"))
    assert one.to_dict() == fleet["DC0_C0_RP0_VM0"].to_dict()


def test_a_constant_number_of_calls_for_the_whole_fleet(session, shaped, monkeypatch):
    """Count SOAP calls: the inventory makes a constant number, however many VMs there are: one
    retrieval names the VMs, one more reads them (at most pipeline.PARTS for a large fleet,
    tests/vsphere/test_pipeline.py)."""
    stub = session.si._stub
    calls = []
    real = stub.SerializeRequest  # every SOAP request, pyVmomi's or fastsoap's, is serialized here

    def counting(mo, info, args, *a, **kw):
        calls.append(info.name)
        return real(mo, info, args, *a, **kw)

    monkeypatch.setattr(stub, "SerializeRequest", counting)
    fetch_all(session)
    assert calls.count("RetrievePropertiesEx") == 2 and "RetrieveProperties" not in calls
    assert len(calls) <= 6, calls  # content, view create/destroy, two retrievals
    assert "config.hardware.device" in VM_PROPERTIES


def test_fleet_file_loads_in_preflight(fleet, tmp_path):
    from guestprep import inventory
    from guestprep.preflight import load_vm_facts

    out = tmp_path / "fleet.yaml"
    summary = write(list(fleet.values()), out, tmp_path / "facts", server="vc.test")
    assert summary["guests"] == 8
    doc = yaml.safe_load(out.read_text())
    by_name = {g["name"]: g for g in doc["guests"]}
    win = by_name["DC0_C0_RP0_VM0"]
    assert (win["os"], win["transport"], win["address"]) == ("windows", "winrm", "10.1.2.3")
    assert by_name["DC0_H0_VM3"]["transport"] == "ssh"
    facts = json.loads((out.parent / win["vars"]["vm_facts"]).read_text())
    assert facts["moref"] == win["vars"]["vsphere_moref"]
    guests = {g.name: g for g in inventory.load(out)}  # the lead's loader accepts it
    loaded = load_vm_facts(guests["DC0_C0_RP0_VM0"])
    assert loaded.to_dict() == fleet["DC0_C0_RP0_VM0"].to_dict()
