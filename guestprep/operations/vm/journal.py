"""The journal of VM operations: one JSON line per applied change, on the controller.

A guest operation journals on the guest (/var/lib/guestprep/journal.json); a VM operation
changes vSphere, so its record is kept where guestprep runs: ``options["journal"]`` or
$GUESTPREP_STATE_DIR (else ~/.local/state/guestprep)/vm-journal.jsonl. The engine calls
:func:`record` after every apply.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from guestprep.models import Plan
from guestprep.operations.base import Applied


def journal_path(journal: str | Path | None) -> Path:
    if journal:
        return Path(journal)
    base = os.environ.get("GUESTPREP_STATE_DIR") or os.path.expanduser("~/.local/state/guestprep")
    return Path(base) / "vm-journal.jsonl"


def record(conn: Any, plan: Plan, applied: Applied, options: dict[str, Any]) -> None:
    """Append what was applied; an apply that found nothing to do leaves no line."""
    if plan.empty and not (applied.steps and applied.steps[0].get("action") != "none"):
        return
    path = journal_path(options.get("journal"))
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "server": options.get("server"), "moref": options.get("moref"), **applied.to_dict()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")
