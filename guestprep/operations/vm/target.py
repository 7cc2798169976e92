"""The VM a VM operation acts on: found and read through the vSphere adapter.

``conn`` for os="vm" operations is a vSphere Session; the facts are the VM's SourceVM.
"""

from __future__ import annotations

from typing import Any

from guestprep.models import Plan, SourceVM
from guestprep.vsphere.actions import find_vm
from guestprep.vsphere.inventory import fetch_one


def load(session: Any, ident: str, where: str) -> tuple[Any, SourceVM]:
    """The VM (by name, moref or UUID) and its facts, read now; errors name ``where``."""
    vm = find_vm(session, ident)
    return vm, fetch_one(session, vm, where=where)


def reread(session: Any, vm: Any, where: str) -> SourceVM:
    """The facts of a VM already found, read again (to verify an operation)."""
    return fetch_one(session, vm, where=where)


def vm_object(conn: Any, plan: Plan, options: dict[str, Any]) -> Any:
    """The VM to act on: the one already found for this run, else looked up again."""
    return options.get("vm_object") or find_vm(conn, options.get("moref") or plan.guest)
