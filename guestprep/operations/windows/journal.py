"""Windows rollback: restore what C:\\ProgramData\\guestprep\\journal.json recorded."""

from __future__ import annotations

from typing import Any

from guestprep.connectors import windows_common as wc


def rollback(conn: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Newest first: registry values back to their old value, tasks and files removed,
    BitLocker resumed. Driver installs are reported as not reversed."""
    where = f"guest {options.get('guest')}" if options.get("guest") else ""
    out = wc.call_script(conn, "rollback.ps1", {}, timeout=float(options.get("timeout") or 300.0), where=where)
    done = []
    for entry in out.get("restored") or []:
        # "action"/"target" is what `guestprep rollback` prints for every OS
        entry = dict(entry)
        entry["action"] = _action(entry)
        done.append(entry)
    return done


def _action(entry: dict[str, Any]) -> str:
    if entry.get("skipped"):
        return f"kept({entry.get('kind')}: {entry['skipped']})"
    if entry.get("kind") == "registry_set":
        return f"restored(={entry.get('restored')})"
    if entry.get("resumed"):
        return "resumed"
    return "removed"
