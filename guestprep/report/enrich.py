"""What every report format shows beyond the findings: the run id, the input files (path and
SHA-256), each guest's groups and a stable id per finding. One place, so the four formats agree.

``annotate`` is called by the command with what only it knows (the inventory and waiver files,
the selected guests); ``complete`` runs inside ``write_reports`` and fills whatever is missing,
so a document built elsewhere (tests, older callers) still gets a run id and finding ids."""

from __future__ import annotations

import hashlib
import time
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from guestprep.models import Status

# Statuses whose finding is not open. Anything else (a status this version does not know, such as
# a later "unknown" or "not_checked") counts as open: a report never hides what it cannot judge.
CLOSED_STATUSES = frozenset({"pass", "skipped", "waived"})


def new_run_id() -> str:
    """Same shape as prepare's run ids: 20260131T120000-1a2b3c."""
    return time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


def finding_id(guest: str, check_id: str, resource: str) -> str:
    """Stable across runs: the same guest, check and resource give the same id (12 hex digits)."""
    return hashlib.sha256("\x1f".join((guest, check_id, resource)).encode("utf-8", "backslashreplace")).hexdigest()[:12]


def status_open(status: str) -> bool:
    try:
        return Status(status).is_open
    except ValueError:
        return status not in CLOSED_STATUSES


def file_ref(path: str | Path | None) -> dict[str, Any] | None:
    """A file the run used: its path as given and the SHA-256 of its bytes (null if unreadable)."""
    if path is None:
        return None
    p = Path(path)
    try:
        digest: str | None = hashlib.sha256(p.read_bytes()).hexdigest()
    except OSError:
        digest = None
    return {"path": str(path), "sha256": digest}


def annotate(doc: Mapping[str, Any], *, guests: Iterable[Any] = (), inventory: str | Path | None = None,
             waivers: str | Path | None = None, run_id: str | None = None) -> dict[str, Any]:
    """A copy of ``doc`` with ``run_id``, ``inputs`` (inventory and waiver files: path + SHA-256)
    and each guest's inventory ``groups`` (from ``guests``, the selected ``models.Guest`` records)."""
    out = dict(doc)
    out["run_id"] = run_id or out.get("run_id") or new_run_id()
    out["inputs"] = {"inventory": file_ref(inventory), "waivers": file_ref(waivers)}
    groups = {g.name: list(g.groups) for g in guests}
    out["guests"] = [{**g, "groups": groups.get(g["guest"], g.get("groups", []))} for g in doc.get("guests", [])]
    return complete(out)


def complete(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Fill what annotate adds when it was not called, and give every finding its id."""
    out = dict(doc)
    out.setdefault("run_id", new_run_id())
    out.setdefault("inputs", {"inventory": None, "waivers": None})
    guests = []
    for g in doc.get("guests", []):
        findings = [{"id": finding_id(str(f.get("guest", g["guest"])), str(f["check_id"]), str(f.get("resource", ""))),
                     **{k: v for k, v in f.items() if k != "id"}} for f in g.get("findings", [])]
        guests.append({**g, "groups": list(g.get("groups", [])), "findings": findings})
    out["guests"] = guests
    return out


def waiver_of(f: Mapping[str, Any]) -> tuple[dict[str, Any] | None, str]:
    """The waiver a finding carries and its state: ("active" | "expired" | "")."""
    if f.get("waiver"):
        return f["waiver"], "active"
    expired = (f.get("evidence") or {}).get("expired_waiver") if isinstance(f.get("evidence"), dict) else None
    if isinstance(expired, dict):
        return expired, "expired"
    return None, ""
