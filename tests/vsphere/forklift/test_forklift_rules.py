"""Forklift's own VMware rule tests, run through guestprep (issue 18).

Each file in cases/ is one Forklift rule (kubev2v/forklift, validation/policies/io/konveyor/forklift/
vmware/<rule>.rego) with every test case of its _test.rego: the case name, Forklift's input and how
many concerns Forklift expects, and, where guestprep can express it, the same VM as vSphere
properties (on top of cases/_base.json) with the guestprep check that answers it. Each translated
case goes the way a real inventory goes: the properties become a PropertyCollector answer, read once
as pyVmomi objects and once as the SOAP body the fast path parses (fastsoap/fastscan, then both
mappers), through inventory.source_vms, then the check (and the fleet pass where the case has a
second VM). The verdict must agree with Forklift's, or the case says in 'differs' why guestprep
deliberately answers otherwise. A case guestprep cannot express says why in 'reason'.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pyVmomi import SoapAdapter, VmomiSupport, vim, vmodl

from guestprep.checks.registry import get
from guestprep.checks.vm.fleet import fleet_findings
from guestprep.models import SourceVM, Status
from guestprep.vsphere import fastmap, fastscan, fastsoap, inventory, mapping

pytestmark = pytest.mark.unit

CASES = Path(__file__).resolve().parent / "cases"
BASE = json.loads((CASES / "_base.json").read_text())
RULES = {p.stem: json.loads(p.read_text()) for p in sorted(CASES.glob("*.json")) if not p.name.startswith("_")}
TRANSLATED = [(r, c) for r, doc in RULES.items() for c in doc["cases"] if c.get("translated", True)]
PC = vmodl.query.PropertyCollector
# top-level properties whose value is an array: the SOAP answer names the array type
ARRAYS = {"config.hardware.device": vim.vm.device.VirtualDevice.Array,
          "config.extraConfig": vim.option.OptionValue.Array, "guest.net": vim.vm.GuestInfo.NicInfo.Array}
# the fast path's mappers: what inventory.fetch_all(fast=True) may use on fastsoap's records
MAPPERS = {"records": mapping.to_source_vm, "fastmap": fastmap.to_source_vm}


def vim_type(name: str) -> Any:
    return VmomiSupport.GetWsdlType("urn:vim25", name)


def build(value: Any) -> Any:
    """The cases' JSON as pyVmomi data: {"_type": wsdl name, field: ...}, {"_moref": "Type:id"}."""
    if isinstance(value, list):
        return [build(v) for v in value]
    if not isinstance(value, dict):
        return value
    if "_moref" in value:
        kind, moid = value["_moref"].split(":", 1)
        return vim_type(kind)(moid)
    cls = vim_type(value["_type"])
    fields = {}
    for name, raw in value.items():
        if name == "_type":
            continue
        ptype = cls._GetPropertyInfo(name).type
        v = datetime.fromisoformat(raw) if ptype is datetime else build(raw)
        fields[name] = ptype(v) if isinstance(v, list) and issubclass(ptype, list) else v
    return cls(**fields)


def vm_object(moref: str, properties: dict[str, Any]) -> Any:
    props = []
    for name, raw in sorted(properties.items()):
        val = build(raw)
        if name in ARRAYS:
            val = ARRAYS[name](val)
        props.append(vmodl.DynamicProperty(name=name, val=val))
    return PC.ObjectContent(obj=vim.VirtualMachine(moref), propSet=props)


def context_objects(context: dict[str, Any]) -> list[Any]:
    """host-1 in cluster domain-c1, with the case's cluster services, rules and groups."""
    c = {**BASE["context"]["cluster"], **context.get("cluster", {})}
    C = vim.cluster
    cfg = C.ConfigInfoEx(rule=build(c["rules"]), group=build(c["groups"]),
                         drsConfig=C.DrsConfigInfo(enabled=c["drs"]), dpmConfigInfo=C.DpmConfigInfo(enabled=c["dpm"]),
                         dasConfig=C.DasConfigInfo(enabled=c["ha"]))
    prop = vmodl.DynamicProperty
    return [PC.ObjectContent(obj=vim.HostSystem("host-1"), propSet=[
                prop(name="name", val="esx-1"), prop(name="parent", val=vim.ClusterComputeResource("domain-c1"))]),
            PC.ObjectContent(obj=vim.ClusterComputeResource("domain-c1"), propSet=[
                prop(name="name", val=c["name"]), prop(name="configurationEx", val=cfg)])]


def answer(c: dict[str, Any]) -> list[Any]:
    """The case as one retrieval's ObjectContents (pyVmomi): its VM, the fleet's other VMs, the context."""
    def merged(overrides: dict[str, Any]) -> dict[str, Any]:
        props = copy.deepcopy(BASE["properties"])
        for name, value in overrides.items():
            props.pop(name, None) if value is None else props.__setitem__(name, value)
        return props

    objects = [vm_object(c.get("moref", BASE["moref"]), merged(c["properties"]))]
    objects += [vm_object(o["moref"], merged(o["properties"])) for o in c.get("fleet", [])]
    return objects + context_objects(c.get("context", {}))


def soap_body(objects: list[Any]) -> bytes:
    """What vCenter sends for this answer, serialized by pyVmomi (the reader under test is not)."""
    info = VmomiSupport.Object(name="returnval", type=PC.RetrieveResult, version="vim.version.version9", flags=0)
    xml = SoapAdapter.Serialize(PC.RetrieveResult(objects=objects), info, VmomiSupport.newestVersions.Get("vim"))
    xml = xml.decode() if isinstance(xml, bytes) else xml
    return ('<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/'
            'soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/'
            'XMLSchema-instance"><soapenv:Body><RetrievePropertiesExResponse xmlns="urn:vim25">' + xml +
            "</RetrievePropertiesExResponse></soapenv:Body></soapenv:Envelope>").encode()


def mapped(c: dict[str, Any], monkeypatch) -> list[SourceVM]:
    """The case's VMs through every path; all paths must agree to the last field."""
    objects = answer(c)
    slow = inventory.source_vms(objects)
    for name, mapper in MAPPERS.items():
        monkeypatch.setattr(inventory, "to_source_vm", mapper)
        fast = inventory.source_vms(fastscan.retrieve_result(soap_body(objects)).objects)
        assert [v.to_dict() for v in fast] == [v.to_dict() for v in slow], f"{name} differs from pyVmomi"
    return slow


def verdict(c: dict[str, Any], check_id: str, vms: list[SourceVM]) -> tuple[str, list[str]]:
    vm = next(v for v in vms if v.moref == c.get("moref", BASE["moref"]))
    findings = get(check_id).evaluate(vm, vm.name)
    if c.get("fleet"):
        findings += [f for f in fleet_findings(vms) if f.guest == vm.name and f.check_id == check_id]
    assert not [f for f in findings if f.status is Status.ERROR], [f.message for f in findings]
    failed = [f.message for f in findings if f.status is Status.FAIL]
    return ("fail" if failed else "pass"), [f.message for f in findings]


@pytest.mark.parametrize("rule,c", TRANSLATED, ids=[f"{r}:{c['case']}" for r, c in TRANSLATED])
def test_forklift_case(rule, c, monkeypatch):
    doc = RULES[rule]
    forklift = "fail" if c["forklift_concerns"] else "pass"
    if c.get("differs"):
        assert c["guestprep"] != forklift, "a case that agrees must not claim to differ"
    else:
        assert c["guestprep"] == forklift, "a case that differs must say why ('differs')"
    got, messages = verdict(c, doc["check"], mapped(c, monkeypatch))
    assert got == c["guestprep"], messages


def test_every_case_of_every_rule_is_accounted_for():
    """Each rule names its files; every case is translated (with a check) or gives its reason."""
    assert len(RULES) == 38  # every vmware/*_test.rego of Forklift (validate/debug/rules_version have none)
    for rule, doc in RULES.items():
        assert doc["rule"].endswith(f"/{rule}.rego") and doc["test_file"].endswith("test.rego"), rule
        for c in doc["cases"]:
            assert c["case"].startswith("test_"), (rule, c)
            if c.get("translated", True):
                assert doc["check"] and get(doc["check"]), rule
            else:
                assert len(c["reason"]) > 40, (rule, c["case"])
    total = sum(len(d["cases"]) for d in RULES.values())
    agree = sum(1 for r, c in TRANSLATED if not c.get("differs"))
    # 151 cases, 91 expressible as a VM's vSphere properties; 81 agree, 10 differ on purpose
    # (8 unsupported-by-MTV OSes that map to a Proxmox ostype, KubeVirt's 165-disk limit, an NVMe data disk)
    assert (total, len(TRANSLATED), agree) == (151, 91, 81)
