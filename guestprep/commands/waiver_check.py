"""Waivers that cannot apply are mistakes, found before any guest is touched.

A waiver for a misspelled check id or for guests that match nothing in the run did nothing,
silently: the finding stayed open and nobody knew why. Both are bad input (exit 2), named by
the waivers file and line, with the closest check id as a suggestion.
"""

from __future__ import annotations

import datetime as dt
import difflib
import fnmatch
from pathlib import Path
from typing import Iterable

import yaml

from guestprep.errors import ConfigError

GLOB_CHARS = set("*?[")


def waiver_lines(path: Path) -> list[int]:
    """The line of each entry of the file's ``waivers`` list (1-based), in order."""
    try:
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return []
    if not isinstance(root, yaml.MappingNode):
        return []
    for key, value in root.value:
        if getattr(key, "value", None) == "waivers" and isinstance(value, yaml.SequenceNode):
            return [item.start_mark.line + 1 for item in value.value]
    return []


def validate(path: Path, waivers: list, guest_names: Iterable[str], check_ids: Iterable[str]) -> None:
    """Raise ConfigError (exit 2) for the first waiver whose check id or guest pattern matches nothing."""
    lines = waiver_lines(Path(path))
    ids = sorted(set(check_ids))
    names = list(guest_names)
    for i, w in enumerate(waivers):
        where = f"{path}:{lines[i]}" if i < len(lines) else w.where
        if GLOB_CHARS & set(w.check):
            if not any(fnmatch.fnmatchcase(c, w.check) for c in ids):
                raise ConfigError(f"waiver check pattern {w.check!r} matches no check guestprep knows "
                                  "(see `guestprep checks list`)", where=where)
        elif w.check not in ids:
            hint = difflib.get_close_matches(w.check.upper(), ids, n=1, cutoff=0.6)
            raise ConfigError(f"waiver names unknown check {w.check!r}"
                              + (f" (did you mean {hint[0]!r}?)" if hint else " (see `guestprep checks list`)"),
                              where=where)
        if not any(fnmatch.fnmatchcase(n, w.guest) for n in names):
            raise ConfigError(f"waiver guest pattern {w.guest!r} matches none of the {len(names)} guest(s) in this run",
                              where=where)


def expired(waivers: list, today: dt.date | None = None) -> list:
    today = today or dt.date.today()
    return [w for w in waivers if w.expires < today]


def line_of(path: Path, waivers: list, w) -> str:
    lines = waiver_lines(Path(path))
    i = waivers.index(w)
    return f"{path}:{lines[i]}" if i < len(lines) else w.where
