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
