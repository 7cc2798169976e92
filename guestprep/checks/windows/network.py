"""Network configuration that a new NIC would lose."""

from __future__ import annotations

from typing import Any, Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.windows._common import unknown, windows_check
from guestprep.models import Severity


@windows_check(
    id="WIN-STATIC-IP", severity=Severity.WARNING,
    title="Static IP configuration is captured and re-applied to the VirtIO NIC",
    rationale="virtio-net is a new adapter to Windows: the static IP, gateway and DNS stay bound to the "
              "vanished vmxnet3 adapter and the guest comes up on DHCP/APIPA.",
    remediation="guestprep prepare --apply captures the configuration per MAC (guest and controller) and installs "
                "a first-boot task that re-applies it to the adapter with the same MAC, then removes itself. "
                "Keep the MAC on Proxmox (net0 macaddr).",
    fixed_by="windows.network_capture",
)
def static_ip(facts: Any) -> Iterable[Outcome]:
    if facts.adapters is None:
        yield unknown(facts, "network")
        return
    captured = set((facts.guestprep_state.get("network_capture") or {}).get("macs") or [])
    for a in facts.adapters:
        if not a.static:
            yield ok(a.mac, f"{a.name}: DHCP")
        elif a.mac in captured:
            yield ok(a.mac, f"{a.name}: static configuration captured, restore task installed")
        else:
            addrs = ", ".join(f"{i.address}/{i.prefix}" for i in a.ipv4 + a.ipv6)
            yield fail(a.mac, f"{a.name}: static {addrs} would be lost on the new NIC",
                       addresses=addrs, gateways=a.gateways, dns=a.dns)


@windows_check(
    id="WIN-FIREWALL-PROFILE", severity=Severity.INFO,
    title="The new NIC starts in the Public firewall profile",
    rationale="Windows puts an unknown network in the Public profile; rules scoped to Domain/Private stop "
              "applying until the network is identified again.",
    remediation="After the move, check the profile (domain members re-identify the domain network once a DC answers).",
)
def firewall_profile(facts: Any) -> Iterable[Outcome]:
    if facts.firewall_profiles is None or facts.adapters is None:
        yield unknown(facts, "firewall")
        return
    public_on = facts.firewall_profiles.get("Public", True)
    for a in facts.adapters:
        if a.profile in ("Private", "DomainAuthenticated") and public_on:
            yield fail(a.mac, f"{a.name} is {a.profile} now; the new NIC starts Public with a stricter firewall",
                       profile=a.profile)
        else:
            yield ok(a.mac, f"{a.name}: profile {a.profile or 'unknown'}")
