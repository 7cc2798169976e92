"""The cutover mark as plan/apply operations: "migrated, do not power on" on the source VM while
its copy runs on Proxmox, removed again by a rollback. The mark itself is read by the caller
(``options["current"]``, guestprep.vsphere.marks.current) because SourceVM does not carry the
VM's notes; the client calls are guestprep.vsphere.marks'.
"""

from __future__ import annotations

from typing import Any

from guestprep.models import Change, Plan, SourceVM
from guestprep.operations.base import Applied, operation
from guestprep.operations.vm.target import vm_object
from guestprep.vsphere import marks


class MarkSource:
    id = "vm.cutover_mark"
    os = "vm"
    title = "Mark the source VM: migrated, do not power on"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        text = f"{marks.PREFIX} {options['text']}"
        plan = Plan(self.id, guest)
        if options.get("current") == text:
            plan.reason = "already marked"
        else:
            plan.changes.append(Change("annotate", facts.moref or guest, {"text": text},
                                       diff=f"+ notes: {text}; custom field {marks.FIELD}"))
        return plan

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        if plan.empty:
            return Applied(self.id, plan.guest, True, [], plan.reason)
        step = marks.mark(conn, vm_object(conn, plan, options), plan.changes[0].detail["text"])
        return Applied(self.id, plan.guest, True, [step], "marked: migrated, do not power on")


class UnmarkSource:
    id = "vm.cutover_unmark"
    os = "vm"
    title = "Remove the cutover mark from the source VM (rollback)"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest)
        if not options.get("current") and not options.get("field"):
            plan.reason = "not marked"
        else:
            plan.changes.append(Change("unannotate", facts.moref or guest, {},
                                       diff=f"- notes: {options.get('current') or ''}; clear {marks.FIELD}"))
        return plan

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        if plan.empty:
            return Applied(self.id, plan.guest, True, [], plan.reason)
        import datetime as dt

        when = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        step = marks.unmark(conn, vm_object(conn, plan, options), when)
        return Applied(self.id, plan.guest, True, [step], "mark removed")


for _op in (MarkSource(), UnmarkSource()):
    operation(_op)
