"""Operations on the VM itself (os="vm"): ``conn`` is a vSphere Session, ``facts`` a SourceVM."""

from __future__ import annotations

from typing import Any

from guestprep.models import Plan, SourceVM
from guestprep.operations.base import Applied, operation
from guestprep.vsphere import coexist
from guestprep.vsphere.actions import find_vm


def _vm_of(conn: Any, plan: Plan, options: dict[str, Any]) -> Any:
    return options.get("vm_object") or find_vm(conn, options.get("moref") or plan.guest)


class CoexistenceDisk:
    id = coexist.OPERATION
    os = "vm"
    title = "Attach a small thin disk on a second controller type (controller coexistence)"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        return coexist.plan_attach(facts, controller=options.get("controller"),
                                   size_bytes=int(options.get("size_bytes") or coexist.DEFAULT_SIZE))

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        return coexist.apply_attach(conn, _vm_of(conn, plan, options), plan)


class CoexistenceDiskDetach:
    id = coexist.DETACH
    os = "vm"
    title = "Detach the coexistence disk and delete its file"
    fixes: tuple[str, ...] = ()

    def plan(self, facts: SourceVM, guest: str, options: dict[str, Any]) -> Plan:
        return coexist.plan_detach(facts)

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        return coexist.apply_detach(conn, _vm_of(conn, plan, options), plan)


operation(CoexistenceDisk())
operation(CoexistenceDiskDetach())
