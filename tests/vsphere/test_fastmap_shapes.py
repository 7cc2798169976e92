"""fastscan + fastmap on answers the simulator cannot produce (RDM backings make vcsim 0.24
panic; SR-IOV, DVS VLANs, opaque networks, an explicit boot order, a snapshot's parent
chain, escaped text), and on answers they must hand to the generic decoder.

The answers are written by pyVmomi's own SOAP serializer (vmware/pyvmomi
pyVmomi/SoapAdapter.py, _SerializeToStr: the xsi:type-tagged encoding of the vSphere Web
Services API), wrapped in the RetrievePropertiesExResponse envelope of the WSDL. Each
result is compared with mapping.to_source_vm over the original pyVmomi objects.
"""

from __future__ import annotations

import pytest
from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl
from pyVmomi.VmomiSupport import Object

from guestprep.vsphere import fastmap, fastscan, fastsoap
from guestprep.vsphere.mapping import Context, to_source_vm

pytestmark = pytest.mark.unit
D = vim.vm.device
PC = vmodl.query.PropertyCollector


def answer(objects: list[tuple[object, dict]], *, token: str | None = None) -> bytes:
    """A RetrievePropertiesEx answer for [(managed object, {property: value})]."""
    version = VmomiSupport.newestVersions.GetName("vim")
    ns = VmomiSupport.GetWsdlNamespace(version)
    ns_map = dict(SoapAdapter.SOAP_NSMAP, **{ns: ""})
    result = PC.RetrieveResult(token=token, objects=[
        PC.ObjectContent(obj=mo, propSet=[vmodl.DynamicProperty(name=k, val=v) for k, v in props.items()])
        for mo, props in objects])
    returnval = SoapAdapter._SerializeToStr(
        result, Object(name="returnval", type=PC.RetrieveResult, version=version, flags=0), version, ns_map)
    return "".join([SoapAdapter.XML_HEADER, "\n", SoapAdapter.SOAP_ENVELOPE_START, SoapAdapter.SOAP_BODY_START,
                    f'<RetrievePropertiesExResponse xmlns="{ns}">', returnval, "</RetrievePropertiesExResponse>",
                    SoapAdapter.SOAP_BODY_END, SoapAdapter.SOAP_ENVELOPE_END]).encode()


def ctx() -> Context:
    c = Context()
    c.hosts["host-1"] = {"name": "esx1", "parent": "domain-c1"}
    c.computes["domain-c1"] = {"name": "prod", "parent": "group-h1", "cluster": True, "rules": [], "groups": []}
    c.folders["group-h1"] = {"name": "host", "parent": "datacenter-1"}
    c.datacenters["datacenter-1"] = {"name": "Lisbon", "parent": None}
    c.dvportgroups["dvportgroup-7"] = {"name": "pg-app", "vlan": 120}
    c.networks["network-9"] = "VM Network"
    c.host_vlans["host-1"] = {"VM Network": 30}
    return c


def props_of(devices: list, **extra) -> dict:
    base = {"name": "db01 & <co>", "config.hardware.device": D.VirtualDevice.Array(devices),
            "runtime.powerState": vim.VirtualMachinePowerState.poweredOn, "config.guestId": "rhel8_64Guest",
            "runtime.host": vim.HostSystem("host-1"), "config.hardware.numCPU": 2}
    base.update(extra)
    return base


def fast_and_expected(props: dict) -> tuple[dict, dict, fastscan.DeferredArray]:
    """(fastmap's SourceVM, mapping's SourceVM over the pyVmomi objects, the scanned device value)."""
    scanned = fastscan.retrieve_result(answer([(vim.VirtualMachine("vm-9"), props)]))
    got = {p.name: p.val for p in scanned.objects[0].propSet}
    fast = fastmap.to_source_vm("vm-9", got, ctx()).to_dict()
    return fast, to_source_vm("vm-9", props, ctx()).to_dict(), got["config.hardware.device"]


def disk(key, ctl, unit, backing, **kw):
    return D.VirtualDisk(key=key, controllerKey=ctl, unitNumber=unit, capacityInKB=kw.pop("kb", 1024),
                         backing=backing, deviceInfo=vim.Description(label=f"Hard disk {key}", summary="x"), **kw)


def test_rdm_sriov_dvs_opaque_boot_order_and_parent_chain_read_straight():
    scsi = D.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing",
                                       deviceInfo=vim.Description(label="SCSI controller 0", summary=""))
    sas = D.VirtualLsiLogicSASController(key=1001, busNumber=1, sharedBus="physicalSharing")
    sata = D.VirtualAHCIController(key=15000, busNumber=0)
    delta = D.VirtualDisk.FlatVer2BackingInfo(  # after a snapshot: the disk writes to -000001, its parent is the base
        fileName="[ds1] db01/db01-000001.vmdk", diskMode="persistent", thinProvisioned=True, uuid="6000C29a-1",
        changeId="52 1a/8", parent=D.VirtualDisk.FlatVer2BackingInfo(
            fileName="[ds1] db01/db01.vmdk", diskMode="independent_persistent", uuid="6000C29a-0"))
    rdm = D.VirtualDisk.RawDiskMappingVer1BackingInfo(fileName="[ds1] db01/db01_1.vmdk", compatibilityMode="physicalMode",
                                                      diskMode="independent_persistent", lunUuid="0200000000600")
    sriov = D.VirtualSriovEthernetCard(
        key=4000, macAddress="00:50:56:AA:00:01", addressType="assigned",
        backing=D.VirtualEthernetCard.DistributedVirtualPortBackingInfo(
            port=vim.dvs.PortConnection(portgroupKey="dvportgroup-7", switchUuid="50 2a")),
        deviceInfo=vim.Description(label="Network adapter 1", summary=""))
    vmx = D.VirtualVmxnet3(key=4001, macAddress="00:50:56:aa:00:02", addressType="Manual",
                           backing=D.VirtualEthernetCard.NetworkBackingInfo(deviceName="VM Network",
                                                                            network=vim.Network("network-9")),
                           connectable=D.VirtualDevice.ConnectInfo(connected=False, startConnected=True,
                                                                   allowGuestControl=True))
    opaque = D.VirtualE1000e(key=4002, macAddress="00:50:56:aa:00:03",
                             backing=D.VirtualEthernetCard.OpaqueNetworkBackingInfo(opaqueNetworkId="ls-1",
                                                                                    opaqueNetworkType="nsx.LogicalSwitch"),
                             connectable=D.VirtualDevice.ConnectInfo(connected=False, startConnected=False,
                                                                     allowGuestControl=True))
    iso = D.VirtualCdrom(key=3000, controllerKey=15000, unitNumber=1,
                         backing=D.VirtualCdrom.IsoBackingInfo(fileName="[iso] rhel & co.iso"),
                         connectable=D.VirtualDevice.ConnectInfo(connected=True, startConnected=True,
                                                                 allowGuestControl=True))
    remote = D.VirtualCdrom(key=3001, controllerKey=200, unitNumber=0,
                            backing=D.VirtualCdrom.RemotePassthroughBackingInfo(deviceName="", exclusive=False))
    gpu = D.VirtualPCIPassthrough(key=13000, backing=D.VirtualPCIPassthrough.VmiopBackingInfo(vgpu="grid_t4-4q"))
    nic_pci = D.VirtualPCIPassthrough(key=13001, deviceInfo=vim.Description(label="PCI device 1", summary=""),
                                      backing=D.VirtualPCIPassthrough.DeviceBackingInfo(
                                          id="0000:3b:00.0", deviceId="1", systemId="s", vendorId=1, deviceName="nic"))
    devices = [D.VirtualIDEController(key=200, busNumber=0), scsi, sas, sata, D.VirtualKeyboard(key=600),
               disk(2000, 1000, 0, delta, capacityInBytes=40 << 30), disk(2001, 1001, 0, rdm, kb=100 << 20),
               disk(2002, 15000, 0, D.VirtualDisk.SeSparseBackingInfo(fileName="[ds1] db01/se.vmdk", diskMode="persistent")),
               sriov, vmx, opaque, iso, remote, D.VirtualUSBXHCIController(key=14000), D.VirtualUSB(key=14001),
               gpu, nic_pci, D.VirtualSerialPort(key=9000), D.VirtualTPM(key=11000),
               D.VirtualSCSIPassthrough(key=8000, controllerKey=1001, unitNumber=3)]
    boot = vim.vm.BootOptions(bootOrder=[vim.vm.BootOptions.BootableDiskDevice(deviceKey=2001)])
    extra = vim.option.OptionValue.Array([vim.option.OptionValue(key="disk.EnableUUID", value="TRUE"),
                                          vim.option.OptionValue(key="scsi0:0.ctkEnabled", value="false"),
                                          vim.option.OptionValue(key="guestinfo.secret", value="not-read")])
    props = props_of(devices, **{"config.bootOptions": boot, "config.extraConfig": extra,
                                 "config.changeTrackingEnabled": True})
    fast, expected, scanned = fast_and_expected(props)
    assert not scanned.decoded  # read straight: the generic decoder never saw the device list
    assert fast == expected
    assert fastmap.to_source_vm("vm-9", props, ctx()).to_dict() == expected  # pyVmomi objects (fast=False)
    by_key = {d["key"]: d for d in fast["disks"]}
    assert by_key[2000]["datastore_path"] == "[ds1] db01/db01-000001.vmdk"  # not the parent's file
    assert by_key[2000]["disk_mode"] == "persistent" and by_key[2001]["rdm_mode"] == "physicalMode"
    assert by_key[2001]["is_boot"] and fast["cdroms"][0]["file"] == "[iso] rhel & co.iso"
    assert [n["network"] for n in fast["nics"]] == ["pg-app", "VM Network", "ls-1"]
    assert fast["vgpu"] == ["grid_t4-4q"] and fast["pci_passthrough"] == ["PCI device 1"]


def test_default_boot_disk_and_missing_parts():
    """No boot order, no deviceInfo, no connectable, no backing: the same defaults as mapping."""
    lsi = D.VirtualLsiLogicController(key=1000, busNumber=0, sharedBus="noSharing")
    ahci = D.VirtualAHCIController(key=15000, busNumber=0)
    bare = D.VirtualDisk(key=7, controllerKey=1000, unitNumber=3, capacityInKB=2048)
    devices = [ahci, disk(1, 15000, 0, D.VirtualDisk.FlatVer2BackingInfo(fileName="[ds] a/a.vmdk", diskMode="x")),
               lsi, bare, D.VirtualCdrom(key=3000), D.VirtualE1000(key=4000)]
    fast, expected, scanned = fast_and_expected(props_of(devices))
    assert not scanned.decoded and fast == expected
    assert [d["is_boot"] for d in fast["disks"]] == [False, True]  # SCSI before SATA


def test_unknown_shapes_go_the_generic_way():
    """A device type newer than our pyVmomi, or an element written <empty/>: same facts, generic path."""
    devices = [D.ParaVirtualSCSIController(key=1000, busNumber=0, sharedBus="noSharing"),
               disk(2000, 1000, 0, D.VirtualDisk.FlatVer2BackingInfo(fileName="[ds] a/a.vmdk", diskMode="persistent"))]
    body = answer([(vim.VirtualMachine("vm-9"), props_of(devices))])
    for altered in (body.replace(b'xsi:type="VirtualDisk"', b'xsi:type="VirtualDiskFromTheFuture"'),
                    body.replace(b"<label>Hard disk 2000</label>", b"<label/>")):
        got = {p.name: p.val for p in fastscan.retrieve_result(altered).objects[0].propSet}
        fast = fastmap.to_source_vm("vm-9", got, ctx())
        assert got["config.hardware.device"].decoded  # handed to the generic decoder
        generic = {p.name: p.val for p in fastsoap.decode_result(altered).objects[0].propSet}
        assert fast.to_dict() == to_source_vm("vm-9", generic, ctx()).to_dict()


def test_scan_matches_the_element_decoder_and_falls_back_whole():
    host = (vim.HostSystem("host-1"), {"name": "esx&1", "parent": vim.ClusterComputeResource("domain-c1"),
                                       "config.network.portgroup": vim.host.PortGroup.Array([vim.host.PortGroup(
                                           computedPolicy=vim.host.NetworkPolicy(),
                                           spec=vim.host.PortGroup.Specification(name="VM Network", vlanId=30,
                                                                                  vswitchName="vSwitch0",
                                                                                  policy=vim.host.NetworkPolicy()))])})
    vm = (vim.VirtualMachine("vm-9"), props_of([D.VirtualIDEController(key=200, busNumber=0)],
                                               **{"config.hardware.memoryMB": 4096, "config.template": False}))
    body = answer([host, vm], token="next-7")
    scanned, generic = fastscan.scan_result(body), fastsoap.decode_result(body)  # token first, as vCenter writes it
    assert scanned.token == generic.token == "next-7"
    assert all(isinstance(o, fastscan.RawObject) for o in scanned.objects)  # read by the scanner, not handed on
    assert normal(scanned) == normal(generic)
    assert scanned.objects[0].propSet[0].val == "esx&1"
    for odd in (body.replace(b"<objects>", b"<!-- x --><objects>", 1),
                body.replace(b"</objects>", b"<missingSet><path>snapshot</path></missingSet></objects>", 1)):
        with pytest.raises(fastscan.NotUnderstood):
            fastscan.scan_result(odd)
        assert normal(fastscan.retrieve_result(odd).objects[1]) == normal(generic.objects[1])


def normal(v):
    """A comparable form of fastsoap records (Record, MoRef, Property, DeferredArray)."""
    if isinstance(v, list):
        return [normal(x) for x in v]
    if isinstance(v, fastsoap.MoRef):
        return ("ref", v.__class__, v._moId)
    if isinstance(v, fastscan.Property):
        return ("prop", v.name, normal(v.val))
    if isinstance(v, fastscan.RawObject):
        return (v.__class__, {"obj": normal(v.obj), "propSet": normal(v.propSet)})
    if isinstance(v, fastsoap.Record):
        if v.__class__ is vmodl.DynamicProperty:
            return ("prop", v.name, normal(v.val))
        return (v.__class__, {k: normal(x) for k, x in v._f.items()})
    return (type(v), v)
