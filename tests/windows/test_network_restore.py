"""Network restore across the move (issue 12, item 5), against the network model.

The model (wsman_server/network_model.py) reads what capture-network.ps1 and restore-network.ps1
call from their syntax trees and applies the documented effect to a modelled network stack: the
vmxnet3 adapter turns into a ghost at the first KVM boot and a NetKVM adapter with the same MAC
appears, possibly late. Each test fails on the scripts before the fix.
"""

from __future__ import annotations

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
