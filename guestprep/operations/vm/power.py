"""Power control and the pre-cutover snapshot as plan/apply operations on the VM."""

from __future__ import annotations

from typing import Any

from guestprep.models import Change, Plan, SourceVM
from guestprep.operations.base import Applied, operation
from guestprep.operations.vm.target import vm_object as _vm
from guestprep.vsphere import actions


class PowerOn:
    id = "vm.power_on"
    os = "vm"
    title = "Power the VM on (guest preparation, or rollback after a cutover)"
    fixes = ("VM-POWERED-ON",)

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="VM-POWERED-ON")
        if facts.power_state == "poweredOn":
            plan.reason = "already powered on"
        else:
            plan.changes.append(Change("power_on", facts.moref or guest, {"from": facts.power_state},
                                       diff=f"power: {facts.power_state} -> poweredOn"))
        return plan

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        if plan.empty:
            return Applied(self.id, plan.guest, True, [], plan.reason)
        step = actions.power_on(conn, _vm(conn, plan, options))
        return Applied(self.id, plan.guest, True, [step], step["reason"])


class Shutdown:
    id = "vm.shutdown"
    os = "vm"
    title = "Shut the guest down gracefully (hard power-off only with --hard)"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest)
        if facts.power_state == "poweredOff":
            plan.reason = "already powered off"
            return plan
        hard = bool(options.get("hard"))
        how = "guest shutdown via VMware Tools" + (", then hard power-off if it does not stop" if hard else "")
        plan.changes.append(Change("shutdown", facts.moref or guest,
                                   {"timeout_s": options.get("timeout", 300), "hard": hard},
                                   diff=f"power: {facts.power_state} -> poweredOff ({how})"))
        if facts.tools_running != "guestToolsRunning":
            plan.warnings.append("VMware Tools is not running: a graceful shutdown is impossible"
                                 + ("; the VM will be powered off hard" if hard else "; apply will fail without --hard"))
        return plan

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        if plan.empty:
            return Applied(self.id, plan.guest, True, [], plan.reason)
        detail = plan.changes[0].detail
        step = actions.shutdown_guest(conn, _vm(conn, plan, options), timeout=float(detail["timeout_s"]),
                                      hard=bool(detail["hard"]), poll=float(options.get("poll", 1.0)))
        return Applied(self.id, plan.guest, True, [step], step["reason"])


class Snapshot:
    id = "vm.snapshot"
    os = "vm"
    title = "Take a pre-cutover snapshot (quiesced when the guest runs)"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        name = options.get("name") or "guestprep-pre-cutover"
        quiesce = bool(options.get("quiesce", True)) and facts.power_state == "poweredOn"
        plan = Plan(self.id, guest, changes=[Change("snapshot", facts.moref or guest,
                                                    {"name": name, "quiesce": quiesce},
                                                    diff=f"+ snapshot {name!r}{' (quiesced)' if quiesce else ''}")])
        plan.warnings.append("a snapshot makes VM-SNAPSHOTS fail: delete it before converting the disks")
        return plan

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        d = plan.changes[0].detail
        step = actions.snapshot(conn, _vm(conn, plan, options), d["name"], quiesce=d["quiesce"])
        return Applied(self.id, plan.guest, True, [step], f"snapshot {d['name']!r} created")


for _op in (PowerOn(), Shutdown(), Snapshot()):
    operation(_op)
