"""Capture the network configuration a new NIC would lose, per MAC; a first-boot task re-applies it.

Captured on the guest (capture-network.ps1): IPv4 and IPv6 statics, gateways, routes bound to
the adapter, DNS servers set by hand (also on DHCP adapters), the connection-specific suffix,
the global suffix search list, the old adapter's PnP instance id. restore-network.ps1 waits
(bounded, logged) for the NetKVM adapter with the same MAC, re-applies all of it, removes the
ghost vmxnet3 device and finally its own task.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from guestprep.connectors import windows_common as wc
from guestprep.connectors.windows_common import truthy
from guestprep.errors import ConfigError
from guestprep.models import Change, Plan
from guestprep.operations.base import Applied, operation
from guestprep.operations.windows._common import WindowsOperation, apply_plan, script_change, setting

TASK = "guestprep-restore-network"
RESTORE_WAIT_SECONDS = 600   # PnP installs NetKVM during the first boot; give it time, bounded


def _static_dns_on_dhcp(facts: Any) -> list[Any]:
    """DHCP adapters whose DNS servers were set by hand: the collector says so per adapter
    (``static_dns``, the interface's NameServer value); a collector that does not say leaves them
    to the guest-side capture (``guestprep_network_capture_dhcp=true`` forces a capture)."""
    return [a for a in facts.adapters if not a.static and a.static_dns is True]


def default_capture_dir() -> str:
    return os.path.join(os.path.expanduser("~"), ".local", "share", "guestprep", "network-captures")


@operation
class NetworkCapture(WindowsOperation):
    id = "windows.network_capture"
    title = "Capture static IP configuration per MAC and re-apply it to the VirtIO NIC at first boot"
    fixes = ("WIN-STATIC-IP",)
    order = 50

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="WIN-STATIC-IP")
        if not facts.supported or facts.adapters is None:
            plan.reason = "guest not supported or network unknown"
            return plan
        captured = set((facts.guestprep_state.get("network_capture") or {}).get("macs") or [])
        static = [a for a in facts.adapters if a.static] + _static_dns_on_dhcp(facts)
        if truthy(setting(facts, options, "network_capture_dhcp", False)):
            static += [a for a in facts.adapters if not a.static and a not in static]
        todo = [a for a in static if a.mac not in captured]
        if not todo:
            plan.reason = "no static configuration to capture" if not static else "static configuration already captured"
            return plan
        wait = int(setting(facts, options, "network_restore_wait", RESTORE_WAIT_SECONDS))
        cap_dir = str(setting(facts, options, "capture_dir") or default_capture_dir())
        for a in todo:
            addrs = ", ".join(f"{i.address}/{i.prefix}" for i in a.ipv4 + a.ipv6) if a.static else "DHCP"
            plan.changes.append(Change("capture", a.mac, {"adapter": a.name},
                                       diff=f"+ {a.mac} {a.name}: {addrs} gw {','.join(a.gateways) or '-'} "
                                            f"dns {','.join(a.dns) or '-'} suffix {a.dns_suffix or '-'}\n"))
        plan.changes.append(Change("file_write", "C:\\ProgramData\\guestprep\\network-capture.json"))
        plan.changes.append(Change("scheduled_task", TASK, {"trigger": "ONSTART", "user": "SYSTEM"},
                                   diff=f"+ at startup: wait up to {wait} s for the adapter with the same MAC, re-apply "
                                        "IPv4/IPv6/gateways/routes/DNS/suffix, remove the ghost vmxnet3, then delete itself\n"))
        plan.changes.append(Change("controller_copy", cap_dir, {"dir": cap_dir}))
        plan.changes.append(script_change("capture-network.ps1", {"task": TASK, "wait_seconds": wait},
                                          "capture + install task\n"))
        plan.reason = f"capture static configuration of {', '.join(a.mac for a in todo)}; keep the MAC on Proxmox"
        return plan

    def execute(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        # the restore script travels as data inside the parameters
        for c in plan.changes:
            if c.kind == "script":
                # with lib.ps1 in front: Invoke-Native, task helpers, the log
                c.detail["params"]["restore_script"] = wc.windows_script("restore-network.ps1")
        res = apply_plan(conn, plan, options)
        cap_dir = next((c.detail["dir"] for c in plan.changes if c.kind == "controller_copy"), default_capture_dir())
        capture = next((s["result"].get("capture") for s in res.steps if s.get("script") == "capture-network.ps1"), None)
        if capture is not None:
            res.steps.append({"controller_copy": save_capture(cap_dir, plan.guest, capture)})
        return res


def save_capture(directory: str, guest: str, capture: dict[str, Any]) -> str:
    """Write the controller's copy exclusively (never overwrite an older capture)."""
    d = Path(directory)
    try:
        d.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError(f"cannot create capture directory: {exc.strerror}", where=str(d)) from None
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in guest)
    path = d / f"{safe}-{time.strftime('%Y%m%dT%H%M%S')}-network.json"
    n = 0
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            n += 1
            path = d / f"{safe}-{time.strftime('%Y%m%dT%H%M%S')}-{n}-network.json"
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(capture, fh, indent=1, ensure_ascii=False)
    return str(path)
