"""Network configuration that survives vmxnet3 -> virtio-net."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, ok, fail
from guestprep.checks.registry import check
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Severity


@check(
    id="LNX-NIC-NAME-BOUND", severity=Severity.WARNING, os="linux", phase="any",
    title="Network configuration is not bound to an interface name that changes on virtio-net",
    rationale="Predictable names follow the PCI slot and driver (vmxnet3 at ens192 becomes ens18 on Proxmox): "
              "a config bound to the old name leaves the guest without network after the move.",
    remediation="Run `guestprep prepare --apply`: it pins each configured name to its MAC (systemd .link file "
                "or udev rule), so the virtio NIC that keeps the MAC keeps the name.",
    fixed_by="linux.nic_name_pinning",
)
def nic_name_bound(facts: LinuxFacts) -> Iterable[Outcome]:
    macs = {i.name: i.mac for i in facts.interfaces}
    any_cfg = False
    for cfg in facts.net_configs:
        for name in cfg.interfaces:
            any_cfg = True
            pinned = facts.nic_pins.get(name)
            if pinned and (macs.get(name) in (None, pinned)):
                yield ok(f"{cfg.path}:{name}", f"{name} is pinned to {pinned}", interface=name, mac=pinned)
            else:
                yield fail(f"{cfg.path}:{name}", f"{cfg.path} ({cfg.kind}) configures {name} by name"
                           + (" with a static address" if cfg.static else ""),
                           interface=name, mac=macs.get(name), config=cfg.path, static=cfg.static)
        for mac in cfg.macs:
            any_cfg = True
            yield ok(f"{cfg.path}:{mac}", f"{cfg.path} matches the NIC by MAC {mac}", mac=mac)
    if not any_cfg:
        yield ok("", "no interface-bound network configuration found")
