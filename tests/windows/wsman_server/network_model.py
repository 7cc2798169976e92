"""A model of a Windows guest's network stack across the move, for capture/restore tests.

PowerShell cannot run here, so the model reads what the scripts *do* from their syntax trees
(tree-sitter-powershell): which APIs they call, whether they poll, whether they skip DHCP
adapters. It then applies the documented effect of those calls to a modelled network state:
- before the move: the vmxnet3 adapters with their configuration (what capture-network reads);
- the first boot on KVM: every vmxnet3 becomes a non-present device keeping its old TCP/IP
  settings (a "ghost": Win32_PnPEntity ConfigManagerErrorCode 45), NetKVM adapters with the
  same MACs appear with DHCP, possibly only after some seconds (PnP installs them during boot);
- what restore-network would leave behind.
It proves the scripts call the right things in the right order; only a real guest proves
the calls succeed (docs/windows-validation.md).
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from typing import Any

from tests.windows import ps_lint


@dataclass
class Features:
    commands: set[str] = field(default_factory=set)      # lower-case command names
    strings: str = ""                                    # string literals and bare words, lower-case
    members: set[str] = field(default_factory=set)       # lower-case member names
    skips_dhcp: bool = False                             # `if (... DHCPEnabled ...) { continue }`
    polls: bool = False                                  # Start-Sleep inside a loop with a bound


def features(text: str) -> Features:
    tree = ps_lint.parse(text)
    src = text.encode("utf-8")
    f = Features()
    strings = []
    for n in ps_lint._walk(tree.root_node):
        t = ps_lint._text(n, src)
        if n.type == "command_name":
            f.commands.add(t.lower())
        elif n.type in ("string_literal", "generic_token"):     # 'x' and bare words (-MethodName X)
            strings.append(t.lower())
        elif n.type == "member_name":
            f.members.add(t.lower())
        elif n.type == "if_statement":
            cond = next((c for c in n.children if c.type == "pipeline"), None)
            body = next((c for c in n.children if c.type == "statement_block"), None)
            if cond is not None and body is not None and "dhcpenabled" in ps_lint._text(cond, src).lower() \
                    and re.sub(r"[\s{}]", "", ps_lint._text(body, src)).lower() == "continue":
                f.skips_dhcp = True
        elif n.type in ("while_statement", "do_statement", "for_statement"):
            body = ps_lint._text(n, src).lower()
            # bounded: the loop compares against a deadline or a count
            if "start-sleep" in body and ("deadline" in body or "-ge" in body or "-lt" in body):
                f.polls = True
    f.strings = "\n".join(strings)
    return f


def _has(f: Features, *needles: str) -> bool:
    return any(n in f.strings or n in f.commands or n in f.members for n in needles)


def _adapter(**kw: Any) -> dict[str, Any]:
    a = {"mac": "00:50:56:9a:10:01", "guid": "{11111111-1111-1111-1111-111111111111}",
         "pnp_instance_id": "PCI\\VEN_15AD&DEV_07B0&SUBSYS_07B015AD&REV_01\\FF565000A6D9A4FE00",
         "description": "vmxnet3 Ethernet Adapter", "present": True, "dhcp": False,
         "ipv4": [{"address": "10.20.0.15", "prefix": 24}], "ipv6": [], "gateways": ["10.20.0.1"],
         "dns": ["10.20.0.10"], "static_dns": True, "dns_suffix": "corp.example", "routes": []}
    a.update(kw)
    return a


def vmware_state(adapters: list[dict[str, Any]] | None = None, search_list: list[str] | None = None) -> dict[str, Any]:
    return {"adapters": adapters if adapters is not None else [_adapter()],
            "search_list": search_list if search_list is not None else ["corp.example", "example"]}


def capture(state: dict[str, Any], script: str) -> dict[str, Any]:
    """The document capture-network.ps1 writes, given what the script reads."""
    f = features(script)
    reads_v6_static = _has(f, "get-netipaddress") and _has(f, "manual", "prefixorigin")
    reads_static_dns = "nameserver" in f.strings            # the Tcpip interface key's value
    reads_pnp_id = "pnpdeviceid" in f.members
    reads_search_list = "searchlist" in f.strings
    out = []
    for a in state["adapters"]:
        static = not a["dhcp"] or bool(a["ipv6"]) or (a["static_dns"] and bool(a["dns"]))
        if a["dhcp"] and (f.skips_dhcp or not reads_static_dns):
            continue                     # the old script's `if (... DHCPEnabled) { continue }`
        if not static:
            continue
        out.append({"mac": a["mac"], "guid": a["guid"], "dhcp": a["dhcp"],
                    "pnp_instance_id": a["pnp_instance_id"] if reads_pnp_id else None,
                    "ipv4": [] if a["dhcp"] else a["ipv4"],
                    # Win32_NetworkAdapterConfiguration.IPAddress mixes every v6 address in (also
                    # link-local/SLAAC); without PrefixOrigin the statics are not told apart
                    "ipv6": a["ipv6"] if reads_v6_static else [],
                    "gateways": a["gateways"], "dns": a["dns"] if (a["static_dns"] or not a["dhcp"]) else [],
                    "dns_suffix": a["dns_suffix"], "routes": a["routes"]})
    return {"adapters": out, "dns_search_list": state["search_list"] if reads_search_list else []}


@dataclass
class BootResult:
    state: dict[str, Any]
    log: list[str]
    task_removed: bool


def first_kvm_boot(state: dict[str, Any], doc: dict[str, Any], restore_script: str,
                   appears_after_s: int = 0, wait_s: int = 600) -> BootResult:
    """The first boot on Proxmox: hardware swapped, then restore-network.ps1 runs once."""
    f = features(restore_script)
    new = copy.deepcopy(state)
    log: list[str] = []
    nics = []
    for a in new["adapters"]:
        a["present"] = False                          # the ghost keeps its old settings
        nics.append({"mac": a["mac"], "guid": "{NEW-" + a["guid"][1:], "description": "Red Hat VirtIO Ethernet Adapter",
                     "present": True, "dhcp": True, "ipv4": [], "ipv6": [], "gateways": [], "dns": [],
                     "static_dns": False, "dns_suffix": None, "routes": [], "pnp_instance_id": "PCI\\VEN_1AF4&DEV_1000"})
    seen = 0 if appears_after_s <= 0 else None
    if seen is None and f.polls and appears_after_s <= wait_s:
        seen = appears_after_s
    applies_v4 = _has(f, "enablestatic", "new-netipaddress")
    applies_v6 = _has(f, "new-netipaddress") or ("netsh" in " ".join(f.commands) and "ipv6" in f.strings)
    applies_dns = _has(f, "setdnsserversearchorder", "set-dnsclientserveraddress")
    applies_suffix = _has(f, "setdnsdomain", "connectionspecificsuffix")
    # interface routes: New-NetRoute (Windows 8+), else `netsh interface ipv4 add route` (netsh
    # interface ipv4 reference, learn.microsoft.com/windows-server/networking/technologies/netsh/netsh-interface)
    applies_routes = _has(f, "new-netroute") or ("netsh" in " ".join(f.commands) and "add" in f.strings
                                                 and "route" in f.strings)
    dhcp_aware = "dhcp" in f.members                  # DNS-only for an adapter captured on DHCP
    removes_ghost = "/remove-device" in f.strings or "setupdicallclassinstaller" in f.strings
    pending = 0
    for cap in doc["adapters"]:
        nic = next(n for n in nics if n["mac"] == cap["mac"])
        if seen is None:
            pending += 1
            log.append(f"{cap['mac']}: no adapter yet (PnP not finished), nothing applied")
            continue
        if cap["dhcp"] and not dhcp_aware:
            pending += 1
            continue
        if not cap["dhcp"] and applies_v4:
            nic["dhcp"] = False
            nic["ipv4"] = cap["ipv4"]
            nic["gateways"] = [g for g in cap["gateways"] if ":" not in g]
        if applies_v6:
            nic["ipv6"] = cap["ipv6"]
            nic["gateways"] += [g for g in cap["gateways"] if ":" in g]
        if applies_dns:
            nic["dns"] = cap["dns"]
            nic["static_dns"] = bool(cap["dns"])
        if applies_suffix:
            nic["dns_suffix"] = cap["dns_suffix"]
        if applies_routes:
            nic["routes"] = cap.get("routes") or []
        if removes_ghost and cap.get("pnp_instance_id"):
            new["adapters"] = [a for a in new["adapters"] if a["mac"] != cap["mac"] or a["present"]]
            log.append(f"{cap['mac']}: ghost {cap['pnp_instance_id']} removed")
        log.append(f"{cap['mac']}: applied")
    new["adapters"] += nics
    return BootResult(new, log, task_removed=pending == 0)


def active(result: BootResult, mac: str) -> dict[str, Any]:
    return next(a for a in result.state["adapters"] if a["mac"] == mac and a["present"])


def ghosts(result: BootResult) -> list[dict[str, Any]]:
    return [a for a in result.state["adapters"] if not a["present"]]
