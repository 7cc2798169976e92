"""Windows rollback: restore what C:\\ProgramData\\guestprep\\journal.json recorded."""

from __future__ import annotations

from typing import Any

from guestprep.connectors import windows_common as wc


def rollback(conn: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Newest first: registry values back to their old value, tasks and files removed,
    BitLocker resumed. Driver installs are reported as not reversed."""
    where = f"guest {options.get('guest')}" if options.get("guest") else ""
    out = wc.call_script(conn, "rollback.ps1", {}, timeout=float(options.get("timeout") or 300.0), where=where)
    return list(out.get("restored") or [])
