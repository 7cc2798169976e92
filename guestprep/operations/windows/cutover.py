"""Steps that belong to the cutover: VMware Tools removal at first KVM boot, BitLocker suspension."""

from __future__ import annotations

import re
from typing import Any

from guestprep.connectors import windows_common as wc
from guestprep.connectors.windows_common import truthy
from guestprep.models import Change, Plan
from guestprep.operations.base import Applied, operation
from guestprep.operations.windows._common import WindowsOperation, apply_plan, script_change, setting

TOOLS_TASK = "guestprep-remove-vmware-tools"
PRODUCT_CODE_RE = re.compile(r"^\{[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}$")


@operation
class VmwareToolsRemoval(WindowsOperation):
    id = "windows.vmware_tools_removal"
    title = "Schedule VMware Tools removal for the first boot on KVM (never before cutover)"
    fixes = ("WIN-VMWARE-TOOLS",)
    order = 60

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="WIN-VMWARE-TOOLS")
        tools = facts.vmware_tools if facts.supported else None
        if not tools or not tools.get("installed"):
            plan.reason = "VMware Tools not installed"
            return plan
        code = tools.get("product_code")
        if (facts.guestprep_state.get("vmware_tools_removal") or {}).get("product_code") == code:
            plan.reason = "removal already scheduled"
            return plan
        if not code or not PRODUCT_CODE_RE.match(str(code)):
            # it ends up in a scheduled task's command line: only a GUID is acceptable
            plan.reason = f"VMware Tools product code {code!r} is not an MSI GUID; remove it by hand after the move"
            return plan
        plan.changes.append(Change("scheduled_task", TOOLS_TASK, {"trigger": "ONSTART", "product_code": code},
                                   diff=f"+ at startup, only off VMware: msiexec /x {code} /qn, then delete task\n"))
        plan.changes.append(script_change("schedule-vmware-tools-removal.ps1", {"task": TOOLS_TASK, "product_code": code},
                                          "install task; VMware Tools stays until the first boot on KVM\n"))
        plan.reason = f"schedule removal of VMware Tools {tools.get('version')}"
        return plan

    def execute(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        for c in plan.changes:
            if c.kind == "script":
                # with lib.ps1 in front: Invoke-Native and the task helpers (no native redirection)
                c.detail["params"]["removal_script"] = wc.windows_script("remove-vmware-tools.ps1")
        return apply_plan(conn, plan, options)


@operation
class BitLockerSuspend(WindowsOperation):
    id = "windows.bitlocker_suspend"
    title = "Suspend BitLocker for the cutover (reboot count), only once the recovery key is confirmed escrowed"
    fixes = ("WIN-BITLOCKER",)
    order = 90

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="WIN-BITLOCKER")
        vols = [v for v in facts.bitlocker or [] if v.protection_status == "on"] if facts.supported else []
        if not vols:
            plan.reason = "no BitLocker volume with active protectors"
            return plan
        mounts = [v.mount for v in vols]
        if not truthy(setting(facts, options, "cutover", False)):
            plan.reason = (f"BitLocker on {', '.join(mounts)}: suspension is a cutover step "
                           "(set guestprep_cutover=true when the move starts)")
            return plan
        if not truthy(setting(facts, options, "bitlocker_recovery_key_escrowed", False)):
            plan.reason = ("BitLocker recovery key escrow not confirmed: set guestprep_bitlocker_recovery_key_escrowed=true "
                           "after checking AD/Entra has the key")
            plan.warnings.append("not suspending without a confirmed recovery key")
            return plan
        count = int(setting(facts, options, "bitlocker_reboot_count", 2))
        for m in mounts:
            plan.changes.append(Change("bitlocker_suspend", m, {"reboot_count": count},
                                       diff=f"~ {m}: protectors suspended for {count} reboot(s), then resume\n"))
        plan.changes.append(script_change("suspend-bitlocker.ps1", {"mounts": mounts, "reboot_count": count},
                                          "Suspend-BitLocker -RebootCount\n"))
        plan.reason = f"suspend BitLocker on {', '.join(mounts)} for {count} reboot(s)"
        return plan
