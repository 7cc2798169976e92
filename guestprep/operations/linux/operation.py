"""What every Linux operation shares: its OS, and the executor that applies its plan step by step."""

from __future__ import annotations

from typing import Any

from guestprep.models import Plan
from guestprep.operations.base import Applied, GuestOperation
from guestprep.operations.linux import changes


class LinuxOperation(GuestOperation):
    os = "linux"

    def execute(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        return changes.execute(conn, plan, options)
