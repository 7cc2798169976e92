"""fastscan's raw properties (RawProps: kept as the answer's bytes, decoded when read) give the
values of the generic decoder (one ElementTree, fastsoap._decode) for every shape the VM
properties take, and whole answers it does not read go the generic way.

The answers are written by pyVmomi's own SOAP serializer (vmware/pyvmomi pyVmomi/SoapAdapter.py),
as in test_fastmap_shapes.py; a continued page carries its token first, as the WSDL's
RetrieveResult sequence (token, objects) and so vCenter and pyVmomi write it.
"""

from __future__ import annotations

import pytest
from pyVmomi import vim
from test_fastmap_shapes import D, answer, normal, props_of

from guestprep.vsphere import fastscan, fastsoap

pytestmark = pytest.mark.unit


def shaped_props() -> dict:
    nic = vim.vm.GuestInfo.NicInfo
    return props_of(
        [D.VirtualIDEController(key=200, busNumber=0)],
        **{
            "config.extraConfig": vim.option.OptionValue.Array([
                vim.option.OptionValue(key="disk.EnableUUID", value="TRUE"),
                vim.option.OptionValue(key="numa.nodeAffinity", value="0, 1 & 2"),
                vim.option.OptionValue(key="scsi0:0.ctkEnabled", value=True),   # xsd:boolean
                vim.option.OptionValue(key="answer", value=42),                 # xsd:int
                vim.option.OptionValue(key="empty", value="")]),
            "guest.net": vim.vm.GuestInfo.NicInfo.Array([
                nic(macAddress="00:50:56:aa:00:01", connected=True, deviceConfigId=4000,
                    ipAddress=["10.0.0.5", "fe80::1"], network="VM Network"),
                nic(macAddress="00:50:56:aa:00:02", connected=False, deviceConfigId=4001,
                    ipConfig=vim.net.IpConfigInfo(ipAddress=[vim.net.IpConfigInfo.IpAddress(
                        ipAddress="10.0.0.6", prefixLength=24)]))]),  # nested: read by an ElementTree
            "config.bootOptions": vim.vm.BootOptions(efiSecureBootEnabled=True, bootDelay=0, bootOrder=[
                vim.vm.BootOptions.BootableDiskDevice(deviceKey=2001)]),
            "config.cpuAffinity": vim.vm.AffinityInfo(affinitySet=[1, 3]),
            "config.ftInfo": vim.vm.FaultToleranceConfigInfo(role=1, instanceUuids=["a-1"], configPaths=["[ds] x.vmx"]),
            "config.template": False,
            "config.hardware.memoryMB": 4096,
            "guest.hostName": "db & <web>\r\nx",
            "guest.toolsRunningStatus": "guestToolsRunning",
            "runtime.powerState": vim.VirtualMachinePowerState.poweredOff,
        })


def test_a_page_with_its_token_first_is_scanned():
    """The continuation token comes before the objects: the page is read by the scanner, not handed whole
    to the generic decoder (before, every page but the last of a paged vCenter answer was)."""
    body = answer([(vim.VirtualMachine("vm-9"), shaped_props())], token="page-2")
    assert body.index(b"<token>") < body.index(b"<objects>")
    scanned = fastscan.scan_result(body)
    assert scanned.token == "page-2"
    assert isinstance(scanned.objects[0], fastscan.RawObject)
    assert normal(scanned) == normal(fastsoap.decode_result(body))


@pytest.mark.parametrize("name", sorted(shaped_props()))
def test_each_raw_property_decodes_like_the_generic_decoder(name):
    body = answer([(vim.VirtualMachine("vm-9"), shaped_props())])
    props = fastscan.scan_result(body).objects[0].props
    generic = {p.name: p.val for p in fastsoap.decode_result(body).objects[0].propSet}
    assert set(props) == set(generic)
    assert normal(props.get(name)) == normal(generic[name])
    assert props.get(name) is props[name]  # decoded once, then kept


def test_flat_structures_are_read_without_a_tree(monkeypatch):
    """extraConfig and a guest NIC list of leaves are read by the scanner's own reader."""
    props = props_of([], **{"config.extraConfig": shaped_props()["config.extraConfig"],
                            "guest.net": vim.vm.GuestInfo.NicInfo.Array([vim.vm.GuestInfo.NicInfo(
                                macAddress="m", ipAddress=["10.0.0.5", "10.0.0.7"], deviceConfigId=4000)])})
    body = answer([(vim.VirtualMachine("vm-9"), props)])
    trees = []
    monkeypatch.setattr(fastscan, "decode_one", lambda *a: trees.append(a))
    raw = fastscan.scan_result(body).objects[0].props
    assert [o.key for o in raw["config.extraConfig"]][:2] == ["disk.EnableUUID", "numa.nodeAffinity"]
    assert raw["config.extraConfig"][1].value == "0, 1 & 2" and raw["config.extraConfig"][2].value is True
    assert raw["guest.net"][0].ipAddress == ["10.0.0.5", "10.0.0.7"] and raw["guest.net"][0].deviceConfigId == 4000
    assert trees == []


def test_answers_it_does_not_read_go_the_generic_way():
    vm = (vim.VirtualMachine("vm-9"), props_of([], **{"config.hardware.memoryMB": 4096}))
    body = answer([vm])
    generic = normal(fastsoap.decode_result(body))
    nested = body.replace(b"<propSet><name>config.hardware.memoryMB</name>",
                          b"<propSet><name>x</name><val><propSet><name>y</name><val>1</val></propSet></val></propSet>"
                          b"<propSet><name>config.hardware.memoryMB</name>")
    nameless = body.replace(b"<propSet><name>config.hardware.memoryMB</name>", b"<propSet><val>1</val></propSet>"
                            b"<propSet><name>config.hardware.memoryMB</name>")
    rv, rv_end = body.index(b"<returnval"), body.index(b"</returnval>") + 12
    twice = body[:rv_end] + body[rv:rv_end] + body[rv_end:]
    inner = body.replace(b"<propSet><name>config.hardware.memoryMB</name>",
                         b"<propSet><name>x</name><val>" + body[body.index(b"<objects>"):body.index(b"</objects>") + 10]
                         + b"</val></propSet><propSet><name>config.hardware.memoryMB</name>")
    for odd in (nested, nameless, twice, inner, body.replace(b"</objects>", b"</objects><objects>", 1),
                body.replace(b"</objects>", b"<missingSet><path>snapshot</path></missingSet></objects>", 1),
                body.replace(b"<propSet>", b"<missingSet><path>snapshot</path></missingSet><propSet>", 1)):
        with pytest.raises(fastscan.NotUnderstood):
            fastscan.scan_result(odd)
    assert normal(fastscan.retrieve_result(body)) == generic
