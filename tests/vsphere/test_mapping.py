"""Mapping pyVmomi property values to SourceVM for shapes the simulator cannot produce
(RDM backings make vcsim 0.24 panic; SR-IOV, DVS VLANs, explicit boot order), plus the
ostype table and locator URLs. Pure functions on real pyVmomi data objects."""

from __future__ import annotations

import pytest
from pyVmomi import vim

from guestprep.errors import ConfigError
from guestprep.models import SourceVM, VMDisk
from guestprep.vsphere.locator import cookie_header, folder_url, locate
from guestprep.vsphere.mapping import Context, to_source_vm
from guestprep.target_policy import valid_proxmox_name
from guestprep.vsphere.ostype import os_family, proxmox_ostype, suggest_proxmox_name

pytestmark = pytest.mark.unit
D = vim.vm.device


def _props(devices, **extra):
    base = {"name": "db01", "config.hardware.device": devices, "runtime.powerState": "poweredOn",
            "config.guestId": "rhel8_64Guest", "runtime.host": vim.HostSystem("host-1")}
    base.update(extra)
    return base


def _ctx():
    ctx = Context()
    ctx.hosts["host-1"] = {"name": "esx1", "parent": "domain-c1"}
    ctx.computes["domain-c1"] = {"name": "prod", "parent": "group-h1", "cluster": True, "rules": [], "groups": []}
    ctx.folders["group-h1"] = {"name": "host", "parent": "datacenter-1"}
    ctx.folders["group-d1"] = {"name": "Datacenters", "parent": None}
    ctx.folders["group-f1"] = {"name": "EMEA", "parent": "group-d1"}
    ctx.datacenters["datacenter-1"] = {"name": "Lisbon", "parent": "group-f1"}
    ctx.dvportgroups["dvportgroup-7"] = {"name": "pg-app", "vlan": 120}
    return ctx


def test_rdm_sriov_dvs_and_boot_order():
    scsi = D.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing")
    sas = D.VirtualLsiLogicSASController(key=1001, busNumber=1, sharedBus="physicalSharing")
    os_disk = D.VirtualDisk(key=2000, controllerKey=1000, unitNumber=0, capacityInBytes=40 << 30,
                            backing=D.VirtualDisk.FlatVer2BackingInfo(fileName="[ds1] db01/db01.vmdk",
                                                                      diskMode="persistent", thinProvisioned=False))
    rdm = D.VirtualDisk(key=2001, controllerKey=1001, unitNumber=0, capacityInKB=100 << 20,
                        backing=D.VirtualDisk.RawDiskMappingVer1BackingInfo(
                            fileName="[ds1] db01/db01_1.vmdk", compatibilityMode="physicalMode",
                            diskMode="independent_persistent", lunUuid="0200000000600"))
    port = vim.dvs.PortConnection(portgroupKey="dvportgroup-7", switchUuid="50 2a")
    sriov = D.VirtualSriovEthernetCard(key=4000, macAddress="00:50:56:AA:00:01", addressType="assigned",
                                       backing=D.VirtualEthernetCard.DistributedVirtualPortBackingInfo(port=port),
                                       deviceInfo=vim.Description(label="Network adapter 1", summary=""))
    boot = vim.vm.BootOptions(bootOrder=[vim.vm.BootOptions.BootableDiskDevice(deviceKey=2001)])
    vm = to_source_vm("vm-9", _props([scsi, sas, os_disk, rdm, sriov], **{"config.bootOptions": boot}), _ctx())
    assert [c.kind for c in vm.controllers] == ["pvscsi", "lsisas"]
    assert vm.controllers[1].sharing == "physicalSharing"
    by_key = {d.key: d for d in vm.disks}
    assert by_key[2001].rdm_mode == "physicalMode" and by_key[2001].independent
    assert by_key[2001].capacity_bytes == 100 << 30 and by_key[2001].is_boot and not by_key[2000].is_boot
    assert by_key[2000].thin is False
    assert vm.nics[0].model == "sriov" and vm.sriov_nics == ["Network adapter 1"]
    assert (vm.nics[0].network, vm.nics[0].vlan, vm.nics[0].mac) == ("pg-app", 120, "00:50:56:aa:00:01")
    assert (vm.host, vm.cluster, vm.datacenter, vm.extra["datacenter_path"]) == ("esx1", "prod", "Lisbon", "EMEA/Lisbon")


def test_default_boot_disk_follows_bus_order_and_missing_config():
    sata = D.VirtualAHCIController(key=15000, busNumber=0)
    scsi = D.VirtualLsiLogicController(key=1000, busNumber=0)
    d_sata = D.VirtualDisk(key=1, controllerKey=15000, unitNumber=0, capacityInKB=1024,
                           backing=D.VirtualDisk.FlatVer2BackingInfo(fileName="[ds] a/a.vmdk", diskMode="persistent"))
    d_scsi = D.VirtualDisk(key=2, controllerKey=1000, unitNumber=3, capacityInKB=1024,
                           backing=D.VirtualDisk.FlatVer2BackingInfo(fileName="[ds] a/b.vmdk", diskMode="persistent"))
    vm = to_source_vm("vm-1", _props([sata, d_sata, scsi, d_scsi]), _ctx())
    assert vm.boot_disk().key == 2  # SCSI before SATA when no boot order is set
    orphan = to_source_vm("vm-2", {"name": "ghost"}, Context())
    assert orphan.extra["config_unavailable"] and orphan.disks == [] and orphan.power_state == "unknown"


def test_ostype_table():
    assert proxmox_ostype("windows2019srv_64Guest") == "win10"
    assert proxmox_ostype("windows2022srvNext_64Guest") == "win11"
    assert proxmox_ostype("windows8Server64Guest") == "win8"
    assert proxmox_ostype("debian12_64Guest") == "l26"
    assert proxmox_ostype("other24xLinuxGuest") == "l24"
    assert proxmox_ostype("solaris11_64Guest") == "solaris"
    assert proxmox_ostype("otherGuest64") is None
    assert os_family("otherGuest", "Microsoft Windows Server 2016") == "windows"
    assert os_family("freebsd13_64Guest") is None
    assert valid_proxmox_name("web-01.example") and not valid_proxmox_name("-web") and not valid_proxmox_name("a_b")
    assert suggest_proxmox_name("SQL Server (old)") == "SQL-Server-old"
    assert valid_proxmox_name(suggest_proxmox_name("__"))


def test_locator_urls_quote_paths_and_hide_cookie_flags():
    vm = SourceVM(name="app", moref="vm-5", datacenter="DC 1",
                  disks=[VMDisk(key=1, label="Hard disk 1", controller_key=1000, unit_number=0,
                                capacity_bytes=1 << 30, datastore_path="[ssd ds] app vm/app.vmdk")])
    doc = locate(vm, "vc.example", 443, 'vmware_soap_session="abc"; Path=/; HttpOnly')
    d = doc["disks"][0]
    assert d["flat_url"] == "https://vc.example/folder/app%20vm/app-flat.vmdk?dcPath=DC%201&dsName=ssd%20ds"
    assert doc["session_cookie"] == 'vmware_soap_session="abc"'
    assert folder_url("::1", 8443, "DC", "ds", "x.vmdk").startswith("https://[::1]:8443/folder/x.vmdk")
    assert cookie_header("") == ""
    with pytest.raises(ConfigError, match="datacenter unknown"):
        locate(SourceVM(name="x"), "h", 443)
    bad = SourceVM(name="x", datacenter="DC", disks=[VMDisk(1, "d", 1, 0, 1, datastore_path="no-brackets")])
    with pytest.raises(ConfigError, match="not a datastore path"):
        locate(bad, "h", 443)


# ---------------------------------------------------------------- issue 18: Forklift parity defects

def _flat(key, unit, path, mode="persistent", ctl=1000, **kw):
    return D.VirtualDisk(key=key, controllerKey=ctl, unitNumber=unit, capacityInBytes=8 << 30,
                         deviceInfo=vim.Description(label=f"Hard disk {key - 1999}", summary=""),
                         backing=D.VirtualDisk.FlatVer2BackingInfo(fileName=path, diskMode=mode, **kw))


def _failing(vm, check_id):
    from guestprep.checks.registry import get
    return [f for f in get(check_id).evaluate(vm, vm.name) if f.status.value == "fail"]


def test_cpu_hot_remove_is_read_and_flagged():
    vm = to_source_vm("vm-1", _props([], **{"config.cpuHotRemoveEnabled": True}), _ctx())
    (f,) = _failing(vm, "VM-HOTADD")  # the old mapper never read it: "hot-add disabled" passed
    assert "cpu hot-remove" in f.message
    assert vm.cpu_hot_remove and not vm.cpu_hot_add


def test_disabled_affinity_rule_is_not_flagged_and_says_disabled():
    ctx = _ctx()
    group = vim.cluster.VmGroup(name="sql-vms", vm=[vim.VirtualMachine("vm-1")])
    off = vim.cluster.VmHostRuleInfo(name="old-licence", enabled=False, mandatory=True, vmGroupName="sql-vms",
                                     affineHostGroupName="licensed")
    on = vim.cluster.VmHostRuleInfo(name="licensed", enabled=True, mandatory=False, vmGroupName="sql-vms",
                                    affineHostGroupName="licensed")
    ctx.computes["domain-c1"].update(rules=[off], groups=[group])
    vm = to_source_vm("vm-1", _props([]), ctx)
    from guestprep.checks.registry import get
    (f,) = get("VM-AFFINITY").evaluate(vm, vm.name)
    assert f.status.value == "pass" and f.resource == "old-licence" and "disabled" in f.message
    ctx.computes["domain-c1"]["rules"] = [off, on]  # negative control: the enabled rule still fails
    assert [f.resource for f in _failing(to_source_vm("vm-1", _props([]), ctx), "VM-AFFINITY")] == ["licensed"]


def test_legacy_disk_modes_are_flagged():
    scsi = D.ParaVirtualSCSIController(key=1000, busNumber=0)
    disks = [_flat(2000 + i, i, f"[ds1] db01/d{i}.vmdk", mode) for i, mode in
             enumerate(("nonpersistent", "undoable", "append", "persistent"))]
    vm = to_source_vm("vm-1", _props([scsi, *disks]), _ctx())
    assert [d.disk_mode for d in vm.disks] == ["nonpersistent", "undoable", "append", "persistent"]
    assert [f.resource for f in _failing(vm, "VM-DISK-INDEPENDENT")] == ["Hard disk 1", "Hard disk 2", "Hard disk 3"]


def test_ostype_uses_the_tools_name_when_the_guest_id_is_empty_or_generic():
    rhel = to_source_vm("vm-1", _props([], **{"config.guestId": "",
                                              "guest.guestFullName": "Red Hat Enterprise Linux 9 (64-bit)"}), _ctx())
    assert not _failing(rhel, "VM-OSTYPE")
    assert rhel.tools_guest_full_name == "Red Hat Enterprise Linux 9 (64-bit)"
    win = to_source_vm("vm-2", _props([], **{"config.guestId": "otherGuest64",
                                             "guest.guestFullName": "Microsoft Windows Server 2022 (64-bit)"}), _ctx())
    from guestprep.checks.vm.target import resolve_ostype
    assert resolve_ostype(win)[0].ostype == "win11"
    bare = to_source_vm("vm-3", _props([], **{"config.guestId": "otherGuest"}), _ctx())  # negative control
    assert _failing(bare, "VM-OSTYPE")


def test_per_disk_cbt_from_extra_config_and_change_id():
    scsi = D.ParaVirtualSCSIController(key=1000, busNumber=0)
    sata = D.VirtualAHCIController(key=15000, busNumber=1)
    tracked = _flat(2000, 0, "[ds1] db01/a.vmdk", changeId="52 3c 7f/12")
    untracked = _flat(2001, 1, "[ds1] db01/b.vmdk")
    on_sata = _flat(2002, 0, "[ds1] db01/c.vmdk", ctl=15000)
    extra = [vim.option.OptionValue(key="scsi0:1.ctkEnabled", value="FALSE"),
             vim.option.OptionValue(key="sata1:0.ctkEnabled", value="TRUE"),
             vim.option.OptionValue(key="guestinfo.userdata", value="secret-token")]
    vm = to_source_vm("vm-1", _props([scsi, sata, tracked, untracked, on_sata], **{
        "config.changeTrackingEnabled": True, "config.extraConfig": extra}), _ctx())
    assert [f.resource for f in _failing(vm, "VM-CBT")] == ["Hard disk 2"]
    assert [d.cbt_enabled for d in vm.disks] == [True, False, True]
    assert "secret-token" not in repr(vm.to_dict())  # extraConfig is filtered on read: guestinfo never kept


def test_extra_config_serial_numa_ft_scsi_passthrough_and_cluster_services():
    scsi = D.ParaVirtualSCSIController(key=1000, busNumber=0)
    sata = D.VirtualAHCIController(key=15000, busNumber=0)
    d0 = _flat(2000, 0, "[ds1] db01/a.vmdk", uuid="6000C29d-8a1b-2c3d-4e5f-60718293a4b5")
    d1 = _flat(2001, 0, "[ds1] db01/b.vmdk", ctl=15000, uuid="6000C29e-0000-0000-0000-000000000001")
    tape = D.VirtualSCSIPassthrough(key=9000, controllerKey=1000, unitNumber=5,
                                    deviceInfo=vim.Description(label="SCSI device 5", summary="tape"),
                                    backing=D.VirtualSCSIPassthrough.DeviceBackingInfo(deviceName="/vmfs/devices/genscsi/t"))
    ctx = _ctx()
    ctx.computes["domain-c1"].update(drs=True, dpm=False, ha=True)
    vm = to_source_vm("vm-1", _props([scsi, sata, d0, d1, tape], **{
        "config.extraConfig": [vim.option.OptionValue(key="disk.EnableUUID", value="TRUE"),
                               vim.option.OptionValue(key="numa.nodeAffinity", value="0, 1")],
        "config.ftInfo": vim.vm.FaultToleranceConfigInfo(role=1, instanceUuids=["u1", "u2"], configPaths=["a", "b"])}),
        ctx)
    assert vm.disk_enable_uuid and [d.serial for d in vm.disks] == ["6000c29d8a1b2c3d4e5f60718293a4b5", None]
    assert vm.numa_node_affinity == ["0", "1"] and vm.fault_tolerance and vm.scsi_passthrough == ["SCSI device 5"]
    assert vm.cluster_services == {"drs": True, "dpm": False, "ha": True}
    (serial,) = _failing(vm, "VM-DISK-SERIAL")
    assert "serial=6000c29d8a1b2c3d4e5f" in serial.message and serial.evidence["carried"] == "6000c29d8a1b2c3d4e5f"
    for cid in ("VM-NUMA-AFFINITY", "VM-FAULT-TOLERANCE", "VM-PASSTHROUGH", "VM-CLUSTER-SERVICES"):
        assert _failing(vm, cid), cid
    plain = to_source_vm("vm-2", _props([scsi, d0]), _ctx())  # negative control
    assert not (plain.disk_enable_uuid or plain.fault_tolerance or plain.numa_node_affinity or plain.disks[0].serial)
    for cid in ("VM-DISK-SERIAL", "VM-NUMA-AFFINITY", "VM-FAULT-TOLERANCE", "VM-PASSTHROUGH", "VM-CLUSTER-SERVICES"):
        assert not _failing(plain, cid), cid


def test_disk_without_a_datastore_file_and_too_many_disks():
    scsi = [D.ParaVirtualSCSIController(key=1000 + c, busNumber=c) for c in range(3)]
    host_dev = D.VirtualDisk(key=2100, controllerKey=1000, unitNumber=1, capacityInBytes=1 << 30,
                             deviceInfo=vim.Description(label="Hard disk 99", summary=""),
                             backing=D.VirtualDisk.RawDiskVer2BackingInfo(deviceName="/vmfs/devices/disks/naa.1"))
    vm = to_source_vm("vm-1", _props([*scsi, _flat(2000, 0, "[ds1] db01/a.vmdk"), host_dev]), _ctx())
    assert [f.resource for f in _failing(vm, "VM-DISK-DATASTORE")] == ["Hard disk 99"]
    many = [_flat(3000 + i, i % 15 + (i % 15 >= 7), f"[ds1] db01/m{i}.vmdk", ctl=1000 + i // 15) for i in range(32)]
    big = to_source_vm("vm-2", _props([*scsi, *many]), _ctx())
    (f,) = _failing(big, "VM-DISK-COUNT")
    assert f.evidence["disks"] == 32 and f.evidence["slots"] == 31
    assert not _failing(to_source_vm("vm-3", _props([*scsi, *many[:31]]), _ctx()), "VM-DISK-COUNT")
