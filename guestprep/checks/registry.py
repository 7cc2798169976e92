"""The check registry: one place that knows every check, refuses duplicates.

Check modules register with the :func:`check` decorator at import time;
:func:`load_all` imports every check package so the registry is complete. A check with
``sources`` reads more than one facts record (EFI-FIRMWARE-AGREE): it is listed like any
other, but :func:`evaluate` leaves it to the caller that holds those sources (the fleet runner).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Iterable

from guestprep.checks.base import CHECK_ID_RE, OS_VALUES, PHASES, Check, CheckMeta, Outcome
from guestprep.models import Finding, Severity


class RegistryError(Exception):
    pass


_REGISTRY: dict[str, Check] = {}
_CHECK_PACKAGES = ("guestprep.checks.linux", "guestprep.checks.windows", "guestprep.checks.vm",
                   "guestprep.checks.image")
_CHECK_MODULES = ("guestprep.checks.reachability", "guestprep.checks.firmware")


def check(
    *,
    id: str,
    title: str,
    severity: Severity,
    os: str,
    rationale: str,
    remediation: str,
    phase: str = "pre",
    fixed_by: str | None = None,
    references: Iterable[str] = (),
    tags: Iterable[str] = (),
    sources: Iterable[str] = (),
) -> Callable[[Callable[[Any], Iterable[Outcome]]], Callable[[Any], Iterable[Outcome]]]:
    meta = CheckMeta(
        id=id, title=title, severity=severity, os=os, phase=phase, rationale=rationale,
        remediation=remediation, fixed_by=fixed_by, references=tuple(references), tags=tuple(tags),
        sources=tuple(sources),
    )
    validate_meta(meta)

    def register(func: Callable[[Any], Iterable[Outcome]]) -> Callable[[Any], Iterable[Outcome]]:
        if meta.id in _REGISTRY and _REGISTRY[meta.id].func.__qualname__ != func.__qualname__:
            raise RegistryError(f"duplicate check id {meta.id!r}")
        _REGISTRY[meta.id] = Check(meta, func)
        return func

    return register


def validate_meta(meta: CheckMeta) -> None:
    problems = []
    if not CHECK_ID_RE.match(meta.id):
        problems.append("id must look like LNX-INITRAMFS-VIRTIO")
    if meta.os not in OS_VALUES:
        problems.append(f"os must be one of {sorted(OS_VALUES)}")
    if meta.phase not in PHASES:
        problems.append(f"phase must be one of {sorted(PHASES)}")
    if not isinstance(meta.severity, Severity):
        problems.append("severity must be a Severity")
    for attr in ("title", "rationale", "remediation"):
        if not getattr(meta, attr).strip():
            problems.append(f"{attr} is empty")
    if problems:
        raise RegistryError(f"check {meta.id!r}: " + "; ".join(problems))


def load_all() -> dict[str, Check]:
    for mod_name in _CHECK_MODULES:
        importlib.import_module(mod_name)
    for pkg_name in _CHECK_PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for mod in pkgutil.iter_modules(pkg.__path__):
            importlib.import_module(f"{pkg_name}.{mod.name}")
    return dict(_REGISTRY)


def all_checks(os: str | None = None, phase: str | None = None) -> list[Check]:
    load_all()
    out = [c for c in _REGISTRY.values() if (os is None or c.meta.os == os)]
    if phase:
        out = [c for c in out if c.meta.phase in (phase, "any")]
    return sorted(out, key=lambda c: c.id)


def get(check_id: str) -> Check:
    load_all()
    try:
        return _REGISTRY[check_id]
    except KeyError:
        raise RegistryError(f"unknown check id {check_id!r}") from None


def evaluate(os: str, facts: Any, guest: str, phase: str = "pre") -> list[Finding]:
    """Every check of ``os`` on its one facts record; cross-source checks run where their sources meet."""
    findings: list[Finding] = []
    for c in all_checks(os, phase):
        if not c.meta.cross_source:
            findings.extend(c.evaluate(facts, guest))
    return findings
