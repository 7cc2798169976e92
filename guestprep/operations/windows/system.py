"""Power and storage settings: Fast Startup/hibernation off, SAN policy OnlineAll."""

from __future__ import annotations

from typing import Any

from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.windows._common import WindowsOperation, registry_change, script_change

POWER = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Power"
HIBERNATE = "HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Power"
PARTMGR = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\partmgr\\Parameters"
SAN_CODES = {"OnlineAll": 1, "OfflineShared": 2, "OfflineAll": 3, "OfflineInternal": 4}


@operation
class FastStartup(WindowsOperation):
    id = "windows.fast_startup"
    title = "Disable Fast Startup and hibernation (no dirty NTFS at cutover)"
    fixes = ("WIN-FAST-STARTUP",)
    order = 30

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan, supported = self.new_plan(facts, guest, "WIN-FAST-STARTUP")
        if not supported:
            return plan
        if not facts.fast_startup and not facts.hibernation:
            plan.reason = "Fast Startup and hibernation already off" if facts.fast_startup is False else \
                "power settings unknown; nothing planned"
            return plan
        if facts.fast_startup:
            plan.changes.append(registry_change(POWER, "HiberbootEnabled", 1, 0))
        if facts.hibernation:
            plan.changes.append(registry_change(HIBERNATE, "HibernateEnabled", 1, 0))
        plan.changes.append(script_change("disable-fast-startup.ps1", {"hibernate_off": bool(facts.hibernation)},
                                          "HiberbootEnabled=0" + (", powercfg /hibernate off" if facts.hibernation else "") + "\n"))
        plan.reason = "switch off " + " and ".join(n for n, v in (("Fast Startup", facts.fast_startup),
                                                                ("hibernation", facts.hibernation)) if v)
        return plan


@operation
class SanPolicy(WindowsOperation):
    id = "windows.san_policy"
    title = "Set the SAN policy to OnlineAll so data disks come online on the new controller"
    fixes = ("WIN-SAN-POLICY",)
    order = 40

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan, supported = self.new_plan(facts, guest, "WIN-SAN-POLICY")
        if not supported:
            return plan
        if facts.san_policy in (None, "OnlineAll"):
            plan.reason = "SAN policy already OnlineAll" if facts.san_policy else "SAN policy unknown; nothing planned"
            return plan
        plan.changes.append(registry_change(PARTMGR, "SanPolicy", SAN_CODES.get(facts.san_policy), 1))
        plan.changes.append(script_change("set-san-policy.ps1", {"policy": "OnlineAll"},
                                          f"SAN policy {facts.san_policy} -> OnlineAll\n"))
        plan.reason = f"SAN policy {facts.san_policy} -> OnlineAll"
        return plan
