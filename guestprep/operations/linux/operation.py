"""What every Linux operation shares: its OS, and an apply that executes its plan step by step."""

from __future__ import annotations

from typing import Any

from guestprep.errors import GuestprepError
from guestprep.models import Plan
from guestprep.operations.base import Applied
from guestprep.operations.linux import changes


class LinuxOperation:
    """Subclasses say what to change (``plan``); applying is always the same executor (changes.execute)."""

    os = "linux"
    order = 100
    id = ""
    title = ""
    fixes: tuple[str, ...] = ()

    def apply(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        if plan.operation != self.id:
            raise GuestprepError(f"plan for {plan.operation} given to {self.id}")
        return changes.execute(conn, plan, options)
