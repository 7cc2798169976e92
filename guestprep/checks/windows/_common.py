"""Shared by the Windows checks: registration with the 'unsupported guest' guard."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from guestprep.checks.base import Outcome, fail, ok, skip
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


@dataclass(frozen=True)
class StateCheck:
    """A check of one collected fact with three answers: not collected (None) -> skipped with the
    collector's reason for ``section``; ``bad(value)`` -> fail; else pass."""

    meta: dict[str, Any]                       # windows_check metadata: id, severity, title, ...
    section: str                               # the collector section that holds the fact
    resource: str
    read: Callable[[Any], Any]                 # facts -> the value, None when unknown
    bad: Callable[[Any], bool]
    fail_message: Callable[[Any], str]         # facts -> message
    ok_message: str
    evidence: Callable[[Any], dict[str, Any]] = field(default=lambda facts: {})


def register_state_checks(module: str, specs: Iterable[StateCheck]) -> None:
    """Register each StateCheck as a Windows check owned by ``module`` (its fixtures and listings
    name that module, as if the check were written out there)."""
    for spec in specs:
        def judge(facts: Any, spec: StateCheck = spec) -> Iterable[Outcome]:
            value = spec.read(facts)
            if value is None:
                return [unknown(facts, spec.section)]
            if spec.bad(value):
                return [fail(spec.resource, spec.fail_message(facts), **spec.evidence(facts))]
            return [ok(spec.resource, spec.ok_message)]

        judge.__module__ = module
        judge.__name__ = judge.__qualname__ = spec.meta["id"].lower().replace("-", "_")
        windows_check(**spec.meta)(judge)


def load_matrix() -> dict[str, Any]:
    return json.loads(MATRIX_PATH.read_text(encoding="utf-8"))


def version_key(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))
