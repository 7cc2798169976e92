"""Check metadata and results (prowler/checkov style).

A check is a pure function of facts that yields :class:`Outcome` values. It does no
I/O. Its metadata is data: id, title, severity, OS, phase, rationale, remediation,
the operation that fixes it, references. The registry validates metadata and refuses
duplicate ids.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from guestprep.models import Finding, Severity, Status

CHECK_ID_RE = re.compile(r"^(LNX|WIN|VM|IMG|EFI|PVE)-[A-Z0-9]+(-[A-Z0-9]+)*$")
OS_VALUES = {"linux", "windows", "vm", "image"}
PHASES = {"pre", "post", "any"}


@dataclass(frozen=True)
class Outcome:
    """What a check says about one resource (a kernel, a mount, a NIC...)."""

    status: Status
    message: str
    resource: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


def ok(resource: str = "", message: str = "ok", **evidence: Any) -> Outcome:
    return Outcome(Status.PASS, message, resource, evidence)


def fail(resource: str = "", message: str = "", **evidence: Any) -> Outcome:
    return Outcome(Status.FAIL, message, resource, evidence)


def skip(message: str, resource: str = "") -> Outcome:
    return Outcome(Status.SKIPPED, message, resource, {})


def error(message: str, resource: str = "", **evidence: Any) -> Outcome:
    return Outcome(Status.ERROR, message, resource, evidence)


@dataclass(frozen=True)
class CheckMeta:
    id: str
    title: str
    severity: Severity
    os: str
    phase: str
    rationale: str
    remediation: str
    fixed_by: str | None = None
    references: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # A cross-source check reads several sources (not the one facts record of its os): the
    # caller holding them all evaluates it, registry.evaluate() leaves it out.
    sources: tuple[str, ...] = ()

    @property
    def cross_source(self) -> bool:
        return bool(self.sources)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title,
            "severity": self.severity.value,
            "os": self.os,
            "phase": self.phase,
            "rationale": self.rationale,
            "remediation": self.remediation,
            "fixed_by": self.fixed_by,
            "references": list(self.references),
            "tags": list(self.tags),
            "sources": list(self.sources),
        }


@dataclass(frozen=True)
class Check:
    meta: CheckMeta
    func: Callable[[Any], Iterable[Outcome]]

    @property
    def id(self) -> str:
        return self.meta.id

    def evaluate(self, facts: Any, guest: str) -> list[Finding]:
        """Run the check; a bug or a missing fact becomes an ``error`` finding, never a crash."""
        try:
            outcomes = list(self.func(facts))
        except Exception as exc:  # a check must never take the fleet run down
            tb = traceback.extract_tb(exc.__traceback__)[-1]
            outcomes = [
                error(
                    f"check could not evaluate the facts: {type(exc).__name__}: {exc}",
                    evidence={"at": f"{tb.filename.rsplit('/', 1)[-1]}:{tb.lineno}"},
                )
            ]
        if not outcomes:
            outcomes = [skip("not applicable")]
        return [self._finding(o, guest) for o in outcomes]

    def _finding(self, o: Outcome, guest: str) -> Finding:
        return Finding(
            guest=guest,
            check_id=self.meta.id,
            severity=self.meta.severity,
            status=o.status,
            title=self.meta.title,
            message=o.message,
            resource=o.resource,
            evidence=o.evidence,
            remediation=self.meta.remediation if o.status is not Status.PASS else "",
            fixed_by=self.meta.fixed_by if o.status is Status.FAIL else None,
        )
