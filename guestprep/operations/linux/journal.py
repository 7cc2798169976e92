"""The guest's journal (/var/lib/guestprep/journal.json) and rollback from it.

Every step appends entries: ``backup`` (path, backup copy or "did not exist"),
``write``/``delete``/``initramfs``/``run`` (what changed), ``package`` (what was
installed), ``service`` (what was enabled). Rollback walks the entries of the runs not
yet rolled back, newest first: restores backed-up files, removes files that did not
exist, disables enabled units and removes installed packages.
"""

from __future__ import annotations

import json
from typing import Any

from guestprep.errors import CollectorError, OperationError
from guestprep.operations.linux.steps import run_step

JOURNAL = "/var/lib/guestprep/journal.json"


def read(conn: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    path = options.get("root", "") + JOURNAL
    res = conn.run(["cat", path], timeout=60, sudo=bool(options.get("sudo")))
    if res.rc != 0:
        if b"No such file" in res.stderr:
            return []
        raise OperationError(f"cannot read {JOURNAL}: {res.err_text().strip()}", where=f"guest {options.get('guest', '?')}")
    try:
        entries = json.loads(res.text() or "[]")
    except json.JSONDecodeError as exc:
        raise CollectorError(f"{JOURNAL} is not valid JSON ({exc.msg} at byte {exc.pos}); restore by hand from "
                             "/var/lib/guestprep/backup/", where=f"guest {options.get('guest', '?')}") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CollectorError(f"{JOURNAL} is not a list of entries", where=f"guest {options.get('guest', '?')}")
    return entries


def pending(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries after the last completed rollback."""
    last = max((i for i, e in enumerate(entries) if e.get("action") == "rollback" and not e.get("failed")), default=-1)
    return entries[last + 1:]


def undo_lines(entries: list[dict[str, Any]]) -> list[tuple[str, ...]]:
    """The restore actions, newest first; a path restores to its oldest backup."""
    lines: list[tuple[str, ...]] = []
    for e in reversed(entries):
        act = e.get("action")
        if act == "backup" and e.get("path"):
            if e.get("existed") and e.get("backup"):
                lines.append(("restore", e["path"], e["backup"]))
            elif not e.get("existed"):
                lines.append(("remove", e["path"]))
        elif act == "service" and e.get("did") == "enable" and e.get("before") not in ("enabled", "static"):
            lines.append(("disable", e["unit"]))
        elif act == "package" and e.get("installed"):
            lines.append(("purge", e.get("manager", ""), e["installed"]))
    for ln in lines:
        for field in ln:
            if "\t" in field or "\n" in field:
                raise OperationError(f"journal entry with a tab/newline in {field!r}: refusing to roll back")
    return lines


def rollback(conn: Any, options: dict[str, Any]) -> list[dict[str, Any]]:
    """Undo every journaled change not yet rolled back; returns what was done."""
    entries = pending(read(conn, options))
    lines = undo_lines(entries)
    if not lines:
        return []
    data = "".join("\t".join(ln) + "\n" for ln in lines).encode()
    res = run_step(conn, "restore", [], options, op="rollback", stdin=data, check=False)
    done = [{"line": " ".join(ln[:2])} for ln in lines]
    if res.rc != 0:
        raise OperationError("rollback incomplete: " + "; ".join(res.err_text().strip().splitlines()[-5:]),
                             where=f"guest {options.get('guest', '?')}")
    return [{"action": l.split(" ", 1)[0], "target": l.split(" ", 1)[1]} for l in res.text().strip().splitlines()] or done
