"""The fast inventory path (fastscan + fastmap) gives exactly the SourceVMs of the generic
path (ElementTree + fastsoap records + mapping.to_source_vm) and of pyVmomi's own
deserializer, over a whole simulated fleet shaped through the real API: snapshots, several
disks on SCSI/SATA/NVMe controllers, several NICs, a CD-ROM, USB/serial/TPM/vGPU,
extraConfig, CPU affinity and a DRS rule.

Its own simulator (the session one's 8 VMs are shaped by other modules, and this one
clones more): DC0_C0_RP0_VM0..2 and DC0_H0_VM0..2, plus clones of the shaped VM.
"""

from __future__ import annotations

import secrets

import pytest
import simulator as simlib
from pyVmomi import vim
from vsphere_support import reconfig, set_guest

from guestprep.vsphere import fastmap, fastscan, fastsoap, inventory, mapping
from guestprep.vsphere.actions import find_vm, run_task

pytestmark = pytest.mark.integration

D = vim.vm.device
Op = D.VirtualDeviceSpec.Operation


@pytest.fixture(scope="module")
def own_session(vcsim_binary, tmp_path_factory):
    certs = simlib.make_certs(tmp_path_factory.mktemp("fastmap-certs"))
    sim = simlib.Simulator(vcsim_binary, certs, "pw-" + secrets.token_hex(8), vms_per_pool=3)
    s = sim.connect()
    yield s
    s.close()
    sim.close()


def _add(device, **kw):
    return D.VirtualDeviceSpec(operation=Op.add, device=device, **kw)


@pytest.fixture(scope="module")
def fleet_shaped(own_session):
    s = own_session
    vm = find_vm(s, "DC0_C0_RP0_VM0")
    ds = "[LocalDS_0] DC0_C0_RP0_VM0"
    flat = D.VirtualDisk.FlatVer2BackingInfo
    reconfig(s, vm, vim.vm.ConfigSpec(
        firmware="efi", changeTrackingEnabled=True, cpuAffinity=vim.vm.AffinityInfo(affinitySet=[1]),
        extraConfig=[vim.option.OptionValue(key="disk.EnableUUID", value="TRUE"),
                     vim.option.OptionValue(key="scsi0:0.ctkEnabled", value="TRUE")],
        deviceChange=[
            _add(D.VirtualAHCIController(key=-1, busNumber=0)),
            _add(D.VirtualNVMEController(key=-2, busNumber=0)),
            _add(D.VirtualLsiLogicSASController(key=-3, busNumber=1, sharedBus="physicalSharing")),
            _add(D.VirtualDisk(key=-4, controllerKey=-1, unitNumber=0, capacityInKB=4096,
                               backing=flat(fileName=f"{ds}/sata.vmdk", diskMode="independent_persistent",
                                            thinProvisioned=True)), fileOperation="create"),
            _add(D.VirtualDisk(key=-5, controllerKey=-2, unitNumber=0, capacityInKB=8192,
                               backing=flat(fileName=f"{ds}/nvme.vmdk", diskMode="persistent",
                                            thinProvisioned=False)), fileOperation="create"),
            _add(D.VirtualDisk(key=-6, controllerKey=-3, unitNumber=2, capacityInKB=2048,
                               backing=flat(fileName=f"{ds}/shared & co.vmdk", diskMode="persistent",
                                            sharing="sharingMultiWriter", eagerlyScrub=True)), fileOperation="create"),
            _add(D.VirtualCdrom(key=-7, controllerKey=-1, unitNumber=1,
                                backing=D.VirtualCdrom.RemotePassthroughBackingInfo(deviceName="", exclusive=False))),
            _add(D.VirtualVmxnet3(key=-8, macAddress="00:50:56:0A:0B:0C", addressType="manual",
                                  backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))),
            _add(D.VirtualE1000e(key=-9, backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network"))),
            _add(D.VirtualUSBXHCIController(key=-10)),
            _add(D.VirtualSerialPort(key=-11, backing=D.VirtualSerialPort.FileBackingInfo(fileName=f"{ds}/com1"))),
            _add(D.VirtualTPM(key=-12)),
            _add(D.VirtualPCIPassthrough(key=-13, backing=D.VirtualPCIPassthrough.VmiopBackingInfo(vgpu="grid_a"))),
        ]))
    set_guest(s, vm, ipAddress="10.9.8.7", hostName="db & web", toolsRunningStatus="guestToolsRunning")
    for name in ("base", "patched"):  # a snapshot chain: the disks' backings get parents
        run_task(s, "snapshot", lambda name=name: vm.CreateSnapshot_Task(name=name, description="", memory=False,
                                                                          quiesce=False))
    cluster = vm.runtime.host.parent
    rule = vim.cluster.AffinityRuleSpec(name="together", enabled=True, mandatory=False,
                                        vm=[vm, find_vm(s, "DC0_C0_RP0_VM1")])
    run_task(s, "drs rule", lambda: cluster.ReconfigureComputeResource_Task(
        spec=vim.cluster.ConfigSpecEx(rulesSpec=[vim.cluster.RuleSpec(operation="add", info=rule)]), modify=True))
    folder = vm.parent
    for i in range(3):  # more VMs of the same shape, and a name that needs escaping in XML
        run_task(s, "clone", lambda i=i: vm.CloneVM_Task(folder=folder, name=f"clone-{i} <&>",
                                                     spec=vim.vm.CloneSpec(location=vim.vm.RelocateSpec())))
    return vm


def _fetch(session, monkeypatch, path: str):
    with monkeypatch.context() as m:
        if path == "fast":
            m.setattr(inventory, "to_source_vm", fastmap.to_source_vm)
        else:
            m.setattr(inventory, "to_source_vm", mapping.to_source_vm)
        if path == "elements":
            m.setattr(fastscan, "retrieve_result", fastsoap.decode_result)
        return [v.to_dict() for v in inventory.fetch_all(session, fast=path != "pyvmomi")]


def test_fast_path_equals_generic_over_the_fleet(own_session, fleet_shaped, monkeypatch):
    loads = []
    real_load = fastscan.DeferredArray._load
    monkeypatch.setattr(fastscan.DeferredArray, "_load", lambda self: (loads.append(1), real_load(self))[1])
    parsed = []
    real_parse = fastmap.parse_devices
    monkeypatch.setattr(fastmap, "parse_devices", lambda raw: (parsed.append(1), real_parse(raw))[1])
    fast = _fetch(own_session, monkeypatch, "fast")
    assert loads == []  # every device list was read straight, none decoded the generic way
    assert len(parsed) == len(fast) == 9  # ... from the raw answer, for every VM
    elements = _fetch(own_session, monkeypatch, "elements")
    assert fast == elements
    assert fast == _fetch(own_session, monkeypatch, "pyvmomi")

    by_name = {v["name"]: v for v in fast}
    assert len(by_name) == 9 and {"clone-0 <&>", "clone-2 <&>"} <= set(by_name)
    shaped = by_name["DC0_C0_RP0_VM0"]
    assert shaped["snapshot_count"] == 2 and shaped["affinity"]["rules"][0]["type"] == "vm-affinity"
    assert {c["kind"] for c in shaped["controllers"]} >= {"sata", "nvme", "lsisas", "pvscsi", "ide"}
    assert len(shaped["disks"]) == 4 and len(shaped["nics"]) == 3 and shaped["vgpu"] == ["grid_a"]
    # vcsim 0.24's clone renames the source's disk files after the clone ("clone-2 <&>/..."): text to escape
    assert all("<&>" in d["datastore_path"] for d in shaped["disks"])
    assert [c["backing"] for c in shaped["cdroms"]] == ["host", "client"]
    assert shaped["cdroms"] and shaped["vtpm"] and shaped["serial_ports"] == 1
