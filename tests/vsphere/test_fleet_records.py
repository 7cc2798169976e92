"""Every VM record of the fleet path (fetch_all as guestprep wires it: fastscan's raw properties,
decoded in one pass, devices mapped straight from their XML by fastmap) equals, field by field, the
record of the generic path (the whole answer decoded by fastsoap.decode_result, each VM mapped by
mapping.to_source_vm), over a govmomi-simulated fleet of 60 VMs, some shaped through the real API
(escaped text and a carriage return, several disk controllers and NIC models, snapshots, a template,
CPU and memory settings, extraConfig). A field the fleet path maps differently fails the test with the
VM and the field named.

Its own simulator (2 pools x 30 VMs): DC0_C0_RP0_VM0..29 and DC0_H0_VM0..29; this module alone
shapes them.
"""

from __future__ import annotations

import dataclasses
import secrets

import pytest
import simulator as simlib
from pyVmomi import vim
from vsphere_support import reconfig, set_guest

from guestprep.models import SourceVM
from guestprep.vsphere import fastmap, fastscan, fastsoap, inventory, mapping
from guestprep.vsphere.actions import find_vm, run_task

pytestmark = pytest.mark.integration

D = vim.vm.device
Op = D.VirtualDeviceSpec.Operation
FIELDS = [f.name for f in dataclasses.fields(SourceVM)]


@pytest.fixture(scope="module")
def fleet_session(vcsim_binary, tmp_path_factory):
    certs = simlib.make_certs(tmp_path_factory.mktemp("fleet-records-certs"))
    sim = simlib.Simulator(vcsim_binary, certs, "pw-" + secrets.token_hex(8), vms_per_pool=30)
    s = sim.connect()
    _shape(s)
    yield s
    s.close()
    sim.close()


def _add(device, **kw):
    return D.VirtualDeviceSpec(operation=Op.add, device=device, **kw)


def _shape(s) -> None:
    """A few VMs unlike the simulator's defaults, each set through the vSphere API."""
    vm = find_vm(s, "DC0_C0_RP0_VM3")
    ds = "[LocalDS_0] DC0_C0_RP0_VM3"
    flat = D.VirtualDisk.FlatVer2BackingInfo
    reconfig(s, vm, vim.vm.ConfigSpec(
        firmware="efi", changeTrackingEnabled=True, numCPUs=4, numCoresPerSocket=2, memoryMB=2048,
        cpuHotAddEnabled=True, memoryHotAddEnabled=True, cpuAffinity=vim.vm.AffinityInfo(affinitySet=[0, 1]),
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value="TRUE"),
                     vim.option.OptionValue(key="numa.nodeAffinity", value="0, 1"),
                     vim.option.OptionValue(key="scsi0:0.ctkEnabled", value="false")],
        deviceChange=[
            _add(D.VirtualAHCIController(key=-1, busNumber=0)),
            _add(D.VirtualNVMEController(key=-2, busNumber=0)),
            _add(D.VirtualDisk(key=-4, controllerKey=-1, unitNumber=0, capacityInKB=4096,
                               backing=flat(fileName=f"{ds}/sata.vmdk", diskMode="independent_nonpersistent",
                                            thinProvisioned=False)), fileOperation="create"),
            _add(D.VirtualDisk(key=-5, controllerKey=-2, unitNumber=0, capacityInKB=8192,
                               backing=flat(fileName=f"{ds}/a & b.vmdk", diskMode="persistent")),
                 fileOperation="create"),
            _add(D.VirtualVmxnet3(key=-8, macAddress="00:50:56:0A:0B:0C", addressType="Manual",
                                  backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))),
            _add(D.VirtualE1000e(key=-9, backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))),
            _add(D.VirtualUSBXHCIController(key=-10)),
            _add(D.VirtualSerialPort(key=-11, backing=D.VirtualSerialPort.FileBackingInfo(fileName=f"{ds}/com1"))),
        ]))
    set_guest(s, vm, ipAddress="10.1.2.3", hostName="app & db\r\nrack 3", toolsRunningStatus="guestToolsRunning")
    run_task(s, "snapshot", lambda: vm.CreateSnapshot_Task(name="before", description="", memory=False,
                                                         quiesce=False))
    renamed = find_vm(s, "DC0_H0_VM5")
    run_task(s, "rename", lambda: renamed.Rename_Task(newName="web <01> & co"))
    off = find_vm(s, "DC0_H0_VM7")
    run_task(s, "power off", lambda: off.PowerOffVM_Task())
    off.MarkAsTemplate()


def _fetch(session, monkeypatch, generic: bool) -> dict[str, SourceVM]:
    with monkeypatch.context() as m:
        if generic:  # the path before issue 17's fleet work: one ElementTree, records, mapping
            m.setattr(inventory, "to_source_vm", mapping.to_source_vm)
            m.setattr(fastscan, "retrieve_result", fastsoap.decode_result)
        return {vm.moref: vm for vm in inventory.fetch_all(session)}


def test_fleet_records_equal_the_generic_path_field_by_field(fleet_session, monkeypatch):
    mapped_from = []  # what mapping.to_source_vm was given on the fleet path: a plain dict when read straight
    real_map = mapping.to_source_vm
    monkeypatch.setattr(fastmap.mapping, "to_source_vm",
                        lambda moref, props, ctx: (mapped_from.append(type(props)), real_map(moref, props, ctx))[1])
    fast = _fetch(fleet_session, monkeypatch, generic=False)
    monkeypatch.setattr(fastmap.mapping, "to_source_vm", real_map)
    generic = _fetch(fleet_session, monkeypatch, generic=True)

    assert len(fast) == 60 and sorted(fast) == sorted(generic)
    assert mapped_from == [dict] * 60  # every VM on the direct path, none handed to the generic fallback
    differences = [f"{generic[ref].name} ({ref}) {name}: fleet path {getattr(vm, name)!r}, "
                   f"generic {getattr(generic[ref], name)!r}"
                   for ref, vm in fast.items() for name in FIELDS if getattr(vm, name) != getattr(generic[ref], name)]
    assert differences == []

    by_name = {vm.name: vm for vm in fast.values()}
    shaped = by_name["DC0_C0_RP0_VM3"]  # the shapes above reached the records (the comparison is not vacuous)
    assert shaped.firmware == "efi" and shaped.num_cpu == 4 and shaped.cores_per_socket == 2
    assert shaped.cpu_hot_add and shaped.mem_hot_add and shaped.numa_node_affinity == ["0", "1"]
    assert {c.kind for c in shaped.controllers} >= {"sata", "nvme", "pvscsi", "ide"}
    assert len(shaped.disks) == 3 and [n.model for n in shaped.nics] == ["e1000", "vmxnet3", "e1000e"]
    assert shaped.snapshot_count == 1 and shaped.guest_hostname == "app & db\nrack 3"
    assert any(d.datastore_path.endswith("a & b.vmdk") for d in shaped.disks)
    assert "web <01> & co" in by_name and by_name["DC0_H0_VM7"].extra.get("template")
