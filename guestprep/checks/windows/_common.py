"""Shared by the Windows checks: registration with the 'unsupported guest' guard."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Callable, Iterable

from guestprep.checks.base import Outcome, skip
from guestprep.checks.registry import check

MATRIX_PATH = Path(__file__).resolve().parents[2] / "data" / "virtio_win_matrix.json"


def windows_check(**meta: Any) -> Callable[[Callable[[Any], Iterable[Outcome]]], Callable[[Any], Iterable[Outcome]]]:
    """``@check(os="windows", ...)`` that skips guests the collector called unsupported
    (WIN-OS-SUPPORTED reports those) so no check reads facts that were never gathered."""

    def wrap(func: Callable[[Any], Iterable[Outcome]]) -> Callable[[Any], Iterable[Outcome]]:
        @functools.wraps(func)
        def guarded(facts: Any) -> Iterable[Outcome]:
            if not facts.supported:
                return [skip(f"guest not supported: {facts.unsupported_reason}")]
            return list(func(facts))

        return check(os="windows", **meta)(guarded)

    return wrap


def unknown(facts: Any, section: str, resource: str = "") -> Outcome:
    reason = facts.unknown.get(section, "not reported by the collector")
    return skip(f"cannot tell: {section} unknown ({reason})", resource)


def load_matrix() -> dict[str, Any]:
    return json.loads(MATRIX_PATH.read_text(encoding="utf-8"))


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))
