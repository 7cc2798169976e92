"""guestId -> Proxmox ostype, from the data table guestprep/data/ostype_map.json."""

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


def ostype_for(guest_id: str) -> OsType:
    g = normalise_guest_id(guest_id)
    table = _table()
    for rule in table["rules"]:
        if re.search(rule["match"], g):
            return OsType(rule["ostype"], rule["family"], bool(rule["q35"]))
    d = table["default"]
    return OsType(d["ostype"], d["family"], bool(d["q35"]))
