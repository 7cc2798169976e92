"""The disk-image checks of ``guestprep-host audit``, registered like every other check.

hostside/audit.py owns their metadata and verdicts because it ships stdlib-only in the
zipapp; this module only adapts them, so ``guestprep checks list --os image`` shows them and
a registry evaluation of an :class:`~hostside.audit.AuditResult` gives what the audit reports.
"""

from __future__ import annotations

from typing import Any, Iterator

from guestprep.checks.base import Outcome
from guestprep.checks.registry import check
from guestprep.models import Status
from hostside.audit import IMAGE_CHECKS, AuditResult, verdicts


def _metadata(check_id: str) -> dict[str, Any]:
    meta = IMAGE_CHECKS[check_id]
    return {"id": meta.id, "title": meta.title, "severity": meta.severity, "os": "image",
            "rationale": meta.rationale, "remediation": meta.remediation,
            "references": meta.references, "tags": ("disk", "offline")}


def _outcomes(audit: AuditResult, check_id: str) -> Iterator[Outcome]:
    for v in verdicts(audit):
        if v.check_id == check_id:
            yield Outcome(Status.PASS if v.ok else Status.FAIL, v.message, v.resource, v.evidence)


@check(**_metadata("IMG-PART-TABLE"))
def partition_table(audit: AuditResult) -> Iterator[Outcome]:
    return _outcomes(audit, "IMG-PART-TABLE")


@check(**_metadata("IMG-PART-LEGACY-63"))
def no_legacy_sector_63(audit: AuditResult) -> Iterator[Outcome]:
    return _outcomes(audit, "IMG-PART-LEGACY-63")


@check(**_metadata("IMG-PART-ALIGN-4K"))
def aligned_4k(audit: AuditResult) -> Iterator[Outcome]:
    return _outcomes(audit, "IMG-PART-ALIGN-4K")


@check(**_metadata("IMG-PART-ALIGN-1M"))
def aligned_1m(audit: AuditResult) -> Iterator[Outcome]:
    return _outcomes(audit, "IMG-PART-ALIGN-1M")


@check(**_metadata("IMG-GPT-BACKUP"))
def gpt_backup_header(audit: AuditResult) -> Iterator[Outcome]:
    return _outcomes(audit, "IMG-GPT-BACKUP")


@check(**_metadata("IMG-FIRMWARE-UEFI"))
def implied_firmware(audit: AuditResult) -> Iterator[Outcome]:
    return _outcomes(audit, "IMG-FIRMWARE-UEFI")
