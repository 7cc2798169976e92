"""Plan-as-data fixtures: collector output (+ overrides) + guest state -> the exact plan.

A fixture names a raw collector document (tests/facts/linux/*.json, shared with the fact
tests), overrides parsed fact fields where a scenario differs, gives the raw guest state
(files, directory writability) and the expected plan of each operation: its changes
(kind, target and the detail fields listed) or the error it must raise.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any

from guestprep.facts import linux_model as M
from guestprep.facts.linux import parse
from guestprep.operations.linux import state as S

REPO = Path(__file__).resolve().parents[2]
PLANS = Path(__file__).resolve().parent / "plans"


def _build(cls, value):
    """Plain JSON -> linux_model dataclasses (sets for module sets)."""
    if dataclasses.is_dataclass(cls) and isinstance(value, dict):
        hints = typing.get_type_hints(cls)
        return cls(**{k: _build(hints[k], v) for k, v in value.items()})
    origin = typing.get_origin(cls)
    args = typing.get_args(cls)
    if origin in (list, typing.List) and isinstance(value, list):
        return [_build(args[0], v) for v in value]
    if origin in (set,) and isinstance(value, list):
        return set(value)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _build(a, value)
            except TypeError:
                continue
    return value


def load(path: Path) -> dict[str, Any]:
    fx = json.loads(path.read_text())
    raw = json.loads((REPO / fx["base"]).read_text())["raw"]
    facts = parse(raw)
    hints = typing.get_type_hints(M.LinuxFacts)
    for k, v in (fx.get("facts") or {}).items():
        if not hasattr(facts, k):
            raise KeyError(f"{path.name}: LinuxFacts has no field {k!r}")
        setattr(facts, k, _build(hints[k], v))
    state: dict[str, Any] = {p: raw["files"].get(p) for p in S.FILES}
    for d in S.DIRS:
        state[f"dir:{d}"] = None if d == "/etc/mkinitcpio.conf.d" else True
    state.update(fx.get("state") or {})
    options = {"state": state, **(fx.get("options") or {})}
    if options.get("package_source"):
        options["package_source"] = str(REPO / options["package_source"])
    return {"name": path.stem, "facts": facts, "options": options, "expect": fx["expect"],
            "description": fx.get("description", "")}


def all_fixtures() -> list[Path]:
    return sorted(PLANS.glob("*.json"))
