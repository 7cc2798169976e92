"""guestId -> Proxmox ostype, from the one data table guestprep/data/ostype_map.json
(shared by the VM checks, the vSphere inventory writer and the finalizer)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources


@dataclass(frozen=True)
class OsType:
    ostype: str
    family: str  # windows | linux | other
    q35: bool


def normalise_guest_id(guest_id: str) -> str:
    g = guest_id.strip().lower().replace("-", "_")
    return g[:-5] if g.endswith("guest") else g


@lru_cache(maxsize=1)
def _table() -> dict:
    text = resources.files("guestprep").joinpath("data", "ostype_map.json").read_text("utf-8")
    return json.loads(text)


def lookup(guest_id: str) -> OsType | None:
    """The table's entry for ``guest_id``, or None when no rule knows the OS."""
    g = normalise_guest_id(guest_id or "")
    for rule in _table()["rules"]:
        if re.search(rule["match"], g):
            return OsType(rule["ostype"], rule["family"], bool(rule["q35"]))
    return None


def ostype_for(guest_id: str) -> OsType:
    """Like :func:`lookup`, falling back to the table's default for unknown OSes."""
    found = lookup(guest_id)
    if found is not None:
        return found
    d = _table()["default"]
    return OsType(d["ostype"], d["family"], bool(d["q35"]))
