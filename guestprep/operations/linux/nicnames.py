"""linux.nic_name_pinning: a NIC whose configuration is bound to its name keeps that name.

vmxnet3 and virtio-net sit in different PCI slots, so predictable names differ (ens192
on VMware, ens18 on Proxmox). Proxmox keeps the MAC when asked; pinning the name to the
MAC (systemd .link file, or a udev rule without systemd) makes the virtio NIC take the
old name, so the existing configuration applies unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from guestprep.errors import OperationError
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation

IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
from guestprep.operations.linux.state import UDEV_RULES


def link_path(name: str) -> str:
    return f"/etc/systemd/network/10-guestprep-{name}.link"


def link_file(name: str, mac: str) -> str:
    return (f"# guestprep: keep the name {name} for the NIC with this MAC after the move to VirtIO\n"
            f"[Match]\nMACAddress={mac}\nType=ether\n\n[Link]\nName={name}\n")


def udev_rule(name: str, mac: str) -> str:
    return (f'SUBSYSTEM=="net", ACTION=="add", DRIVERS=="?*", ATTR{{address}}=="{mac}", ATTR{{type}}=="1", '
            f'NAME="{name}"\n')


def to_pin(facts: LinuxFacts) -> tuple[list[tuple[str, str]], list[str]]:
    """(name, mac) pairs that need a pin, and warnings for names without a known NIC."""
    macs = {i.name: (i.mac or "").lower() for i in facts.interfaces}
    pins, warnings, seen = [], [], set()
    for cfg in facts.net_configs:
        for name in cfg.interfaces:
            if name in seen:
                continue
            seen.add(name)
            mac = macs.get(name)
            pinned = facts.nic_pins.get(name)
            if pinned and mac in (None, "", pinned):
                continue
            if not mac:
                warnings.append(f"{cfg.path} configures {name}, but no NIC of that name exists now: not pinned")
                continue
            if not IFNAME_RE.match(name) or not MAC_RE.match(mac):
                raise OperationError(f"refusing to pin interface {name!r} to MAC {mac!r}: not a plain name/MAC",
                                     where=cfg.path)
            pins.append((name, mac))
    return pins, warnings


@operation
class NicNamePinning(LinuxOperation):
    id = "linux.nic_name_pinning"
    order = 20
    title = "Pin name-bound NICs to their MAC"
    fixes = ("LNX-NIC-NAME-BOUND",)

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="LNX-NIC-NAME-BOUND")
        pins, plan.warnings = to_pin(facts)
        if not pins:
            plan.reason = "no name-bound network configuration needs a pin"
            return plan
        if facts.init_system == "systemd":
            for name, mac in pins:
                plan.changes.append(C.write_file(link_path(name), link_file(name, mac), None))
        else:
            st = options.get("state") or {}
            old = st.get(UDEV_RULES)
            new = (old or "# guestprep: NIC names pinned to MACs for the move to VirtIO\n") + \
                "".join(udev_rule(n, m) for n, m in pins)
            plan.changes.append(C.write_file(UDEV_RULES, new, old))
        plan.reason = "pin " + ", ".join(f"{n} to {m}" for n, m in pins)
        plan.warnings.append("the Proxmox VM must keep these MACs (finalize copies them)")
        return plan
