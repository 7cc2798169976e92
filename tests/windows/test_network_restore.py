"""Network restore across the move (issue 12, item 5), against the network model.

The model (wsman_server/network_model.py) reads what capture-network.ps1 and restore-network.ps1
call from their syntax trees and applies the documented effect to a modelled network stack: the
vmxnet3 adapter turns into a ghost at the first KVM boot and a NetKVM adapter with the same MAC
appears, possibly late. Each test fails on the scripts before the fix.
"""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace
from typing import Any

import pytest

from guestprep.connectors import windows_common as wc
from tests.windows.wsman_server import network_model as nm

pytestmark = pytest.mark.unit

MAC = "00:50:56:9a:10:01"


def move(state: dict[str, Any], appears_after_s: int = 0, wait_s: int = 600) -> nm.BootResult:
    doc = nm.capture(state, wc.windows_script("capture-network.ps1"))
    return nm.first_kvm_boot(state, doc, wc.windows_script("restore-network.ps1"), appears_after_s, wait_s)


def test_static_ipv4_kept_baseline():
    res = move(nm.vmware_state())
    nic = nm.active(res, MAC)
    assert nic["dhcp"] is False and nic["ipv4"] == [{"address": "10.20.0.15", "prefix": 24}]
    assert nic["gateways"] == ["10.20.0.1"] and nic["dns"] == ["10.20.0.10"]


def test_ipv6_static_kept():
    """Only IPv4 addresses were re-applied: a static IPv6 address and gateway were lost."""
    st = nm.vmware_state([nm._adapter(ipv6=[{"address": "2001:db8::15", "prefix": 64}],
                                      gateways=["10.20.0.1", "2001:db8::1"])])
    nic = nm.active(move(st), MAC)
    assert nic["ipv6"] == [{"address": "2001:db8::15", "prefix": 64}]
    assert "2001:db8::1" in nic["gateways"]


def test_dns_suffix_kept():
    """The connection-specific suffix was captured but never re-applied."""
    nic = nm.active(move(nm.vmware_state()), MAC)
    assert nic["dns_suffix"] == "corp.example"


def test_dhcp_adapter_with_static_dns_kept():
    """Adapters on DHCP were skipped entirely, so hand-set DNS servers on them were lost."""
    st = nm.vmware_state([nm._adapter(dhcp=True, ipv4=[{"address": "10.20.0.99", "prefix": 24}],
                                      dns=["10.1.1.1", "10.1.1.2"], static_dns=True, dns_suffix=None)])
    nic = nm.active(move(st), MAC)
    assert nic["dhcp"] is True                       # the address stays DHCP
    assert nic["dns"] == ["10.1.1.1", "10.1.1.2"]    # the DNS servers stay static


def test_adapter_appearing_late_is_waited_for():
    """The first boot ran before PnP installed NetKVM: nothing applied, guest on DHCP."""
    res = move(nm.vmware_state(), appears_after_s=45)
    nic = nm.active(res, MAC)
    assert nic["ipv4"] == [{"address": "10.20.0.15", "prefix": 24}]
    assert res.task_removed


def test_wait_is_bounded_and_the_task_stays():
    res = move(nm.vmware_state(), appears_after_s=900, wait_s=600)
    assert nm.active(res, MAC)["dhcp"] is True and not res.task_removed


def test_ghost_vmxnet3_removed():
    """The old adapter stayed as a hidden device holding its static IP."""
    res = move(nm.vmware_state())
    assert nm.ghosts(res) == []


def test_restore_script_is_written_with_the_library(monkeypatch):
    """The first-boot script runs alone under the task scheduler: it is written with lib.ps1."""
    from guestprep.models import Change, Plan
    from guestprep.operations.windows import network

    seen = {}

    def fake_apply(conn, plan, options):
        seen.update(plan.changes[0].detail["params"])
        return SimpleNamespace(steps=[])

    monkeypatch.setattr(network, "apply_plan", fake_apply)
    plan = Plan("windows.network_capture", "g", changes=[Change("script", "capture-network.ps1",
                                                                {"params": {"task": network.TASK}})])
    network.NetworkCapture().apply(None, plan, {})
    assert "function Invoke-Native" in seen["restore_script"]
    assert "# guestprep-script: restore-network" in seen["restore_script"]


def test_plan_captures_a_dhcp_adapter_the_collector_flags_with_static_dns():
    from guestprep.facts import windows as wf
    from guestprep.operations.windows.network import NetworkCapture
    from tests.windows.wsman_server.guest import load_profile

    raw = load_profile("win11-en-US")
    raw["network"]["adapters"][0]["static_dns"] = True
    facts = wf.parse(raw, where="test")
    plan = NetworkCapture().plan(facts, "w11", {})
    assert [c.target for c in plan.changes if c.kind == "capture"] == ["00:50:56:9a:40:04"]
    del raw["network"]["adapters"][0]["static_dns"]
    assert not NetworkCapture().plan(wf.parse(raw, where="test"), "w11", {}).changes


# ------------------------------------------------------------------ end to end through the fake guest

def _two_nics() -> dict[str, Any]:
    """ws2019-en-US's adapters in the network model: a static dual-stack server NIC with a route,
    and a DHCP NIC whose DNS servers were set by hand."""
    return nm.vmware_state([
        nm._adapter(ipv6=[{"address": "2001:db8::15", "prefix": 64}], gateways=["10.20.0.1", "2001:db8::1"],
                    dns=["10.20.0.10", "10.20.0.11"],
                    routes=[{"destination": "10.200.0.0/16", "next_hop": "10.20.0.254", "metric": 10}]),
        nm._adapter(mac="00:50:56:9a:10:02", guid="{22222222-2222-2222-2222-222222222222}", dhcp=True,
                    ipv4=[{"address": "10.99.0.15", "prefix": 24}], gateways=[], dns=["10.1.1.1", "10.1.1.2"],
                    static_dns=True, dns_suffix="lab.example",
                    pnp_instance_id="PCI\\VEN_15AD&DEV_07B0&SUBSYS_07B015AD&REV_01\\FF565000A6D9A4FE01"),
    ], search_list=["corp.example", "example"])


@pytest.mark.integration
def test_prepare_capture_then_first_kvm_boot_restores_everything(wsman, tmp_path):
    """prepare --apply (capture-network.ps1 through WinRM) -> first KVM boot (vmxnet3 -> ghost, the
    NetKVM adapter appears 45 s late) -> the restore task: every setting is back, no ghost."""
    from guestprep.connectors import open_connector
    from guestprep.operations import engine
    from tests.windows.wsman_server.guest import load_profile

    facts = load_profile("ws2019-en-US")
    facts["network"]["adapters"][1].update({"dhcp": True, "static_dns": True, "dns": ["10.1.1.1", "10.1.1.2"]})
    facts["network_model"] = _two_nics()
    run = wsman(facts)
    g = run.make_guest("winrm", guestprep_capture_dir=str(tmp_path / "captures"))
    res = engine.prepare_guest(g, {"timeout": 60}, lambda g: open_connector(g, run.options()), apply=True)
    op = next(o for o in res.ops if o.operation == "windows.network_capture")
    assert op.applied and op.verified, (op.error, op.problems)

    before = copy.deepcopy(run.guest.doc["network_model"])
    out = run.guest.first_kvm_boot(appears_after_s=45)
    assert out is not None and out.rc == 0, out
    after = run.guest.doc["network_model"]
    res_ = nm.BootResult(after, run.guest.network_boot_log, task_removed=True)
    a = nm.active(res_, MAC)
    old = before["adapters"][0]
    assert (a["dhcp"], a["ipv4"], a["ipv6"]) == (False, old["ipv4"], old["ipv6"])
    assert sorted(a["gateways"]) == sorted(old["gateways"])
    assert (a["dns"], a["dns_suffix"]) == (old["dns"], "corp.example")
    b = nm.active(res_, "00:50:56:9a:10:02")
    assert b["dhcp"] is True and b["dns"] == ["10.1.1.1", "10.1.1.2"] and b["dns_suffix"] == "lab.example"
    assert after["search_list"] == ["corp.example", "example"]
    assert nm.ghosts(res_) == []
    assert "guestprep-restore-network" not in run.guest.tasks       # the task removed itself
    assert a["routes"] == old["routes"]                               # interface routes re-added


@pytest.mark.integration
def test_first_kvm_boot_with_the_pre_fix_restore_script_loses_settings(wsman, tmp_path):
    """Negative control: a restore script that neither waits nor applies IPv6/suffix leaves the
    guest on DHCP with the ghost in place (the model reads what the text calls)."""
    facts = load_profile_with_model()
    run = wsman(facts)
    run.guest.doc["network_model"] = _two_nics()
    run.guest.run_script(wc.windows_script("capture-network.ps1"),
                         [json.dumps({"task": "guestprep-restore-network",
                                      "restore_script": "# guestprep-script: restore-network\n"
                                                        "$c.EnableStatic($a, $m)\n"})], None)
    out = run.guest.first_kvm_boot(appears_after_s=45)
    assert out is not None and out.rc == 0
    res_ = nm.BootResult(run.guest.doc["network_model"], [], True)
    assert nm.active(res_, MAC)["dhcp"] is True and nm.ghosts(res_)
    assert "guestprep-restore-network" in run.guest.tasks


def load_profile_with_model() -> dict[str, Any]:
    from tests.windows.wsman_server.guest import load_profile

    return load_profile("ws2019-en-US")
