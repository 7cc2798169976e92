"""Cross-source firmware agreement: the guest, the VM configuration and the disk image.

Three witnesses say how a VM boots: the guest itself (/sys/firmware/efi, $env:firmware_type),
the VM's configuration (vSphere ``config.firmware`` or the .vmx ``firmware`` key) and the
offline image audit (GPT + ESP implies UEFI; MBR implies BIOS: ``guestprep-host audit
--json``). The finalizer creates the Proxmox VM from the VM configuration; when the
witnesses disagree, someone is about to create the wrong firmware, and that blocks.

Not a registry check (it reads several sources, not one facts record): the fleet runner
calls :func:`firmware_agreement` when VM facts are present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from guestprep.checks.base import CheckMeta
from guestprep.checks.registry import validate_meta
from guestprep.models import Finding, Severity, Status

META = CheckMeta(
    id="EFI-FIRMWARE-AGREE", severity=Severity.BLOCKER, os="vm", phase="pre",
    title="Guest, VM configuration and disk image agree on the firmware (UEFI or BIOS)",
    rationale="The Proxmox VM gets its firmware (OVMF or SeaBIOS) from the VM configuration. A guest that boots "
              "UEFI from a GPT+ESP disk but sits in a VM configured for BIOS (or the reverse: a .vmx edited, an "
              "image restored from elsewhere) lands in a VM that cannot boot it.",
    remediation="Find out which witness is wrong before the cutover: the guest's own boot mode is the truth for "
                "what it can boot; correct the VM configuration / hand-off firmware (bios=ovmf + efidisk0 for "
                "UEFI) or the disk image.",
    references=("seed: UEFI vs BIOS, 'erro número um'", "issue 8: UEFI guests boot after the move"),
)
validate_meta(META)

_NORMAL = {"uefi": "uefi", "efi": "uefi", "ovmf": "uefi", "bios": "bios", "legacy": "bios", "seabios": "bios"}


def normalise(value: Any) -> str | None:
    """uefi | bios | None (unknown)."""
    return _NORMAL.get(str(value).strip().lower()) if value not in (None, "") else None


def _finding(guest: str, status: Status, message: str, evidence: dict) -> Finding:
    return Finding(guest=guest, check_id=META.id, severity=META.severity, status=status, title=META.title,
                   message=message, resource="firmware", evidence=evidence,
                   remediation=META.remediation if status is not Status.PASS else "")


def firmware_agreement(guest_boot_mode: str | None, vm_firmware: str | None, image_firmware: str | None,
                       guest: str) -> list[Finding]:
    witnesses = {"guest": normalise(guest_boot_mode), "vm": normalise(vm_firmware), "image": normalise(image_firmware)}
    evidence = {"guest_boot_mode": guest_boot_mode, "vm_firmware": vm_firmware, "image_firmware": image_firmware}
    known = {k: v for k, v in witnesses.items() if v}
    if len(known) < 2:
        return [_finding(guest, Status.SKIPPED, "fewer than two sources know the firmware "
                         f"({', '.join(f'{k}={v}' for k, v in known.items()) or 'none'})", evidence)]
    if len(set(known.values())) == 1:
        value = next(iter(known.values()))
        return [_finding(guest, Status.PASS, f"{' and '.join(known)} agree: {value}", evidence)]
    said = ", ".join(f"{k} says {v}" for k, v in known.items())
    truth = known.get("guest")
    hint = f"; the guest really boots {truth}, so the Proxmox VM must be {'OVMF + efidisk0' if truth == 'uefi' else 'SeaBIOS'}" \
        if truth else ""
    return [_finding(guest, Status.FAIL, f"firmware disagreement: {said}{hint}", evidence)]


def image_audit_firmware(path: str | Path, guest: str) -> tuple[str | None, Finding | None]:
    """The firmware a ``guestprep-host audit --json`` document implies, or an error finding naming the file."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, _finding(guest, Status.ERROR, f"cannot read the image audit {p}: {exc}", {"image_audit": str(p)})
    except json.JSONDecodeError as exc:
        return None, _finding(guest, Status.ERROR, f"image audit {p} is not JSON ({exc.msg} at line {exc.lineno})",
                              {"image_audit": str(p)})
    fw = doc.get("firmware") if isinstance(doc, Mapping) else None
    if fw not in ("uefi", "bios", "unknown"):
        return None, _finding(guest, Status.ERROR, f"image audit {p}: 'firmware' is {fw!r}, expected uefi, bios or "
                                                   "unknown (the output of `guestprep-host audit --json`)",
                              {"image_audit": str(p)})
    return (None if fw == "unknown" else fw), None


def for_report(facts_summary: Mapping[str, Any], vm: Any, guest: Any) -> list[Finding]:
    """The fleet runner's call: guest boot mode from the facts summary, the VM's firmware, and the
    image audit named by the guest's inventory var ``image_audit`` (optional)."""
    guest_mode = facts_summary.get("boot_mode") or facts_summary.get("firmware")
    image_fw = None
    audit_path = (getattr(guest, "vars", None) or {}).get("image_audit")
    if audit_path:
        source = getattr(guest, "source", "") or ""
        if not Path(audit_path).is_absolute() and ":" in source:  # relative to the inventory file, like vm_facts
            audit_path = Path(source.rsplit(":", 1)[0]).parent / audit_path
        image_fw, problem = image_audit_firmware(audit_path, guest.name)
        if problem:
            return [problem]
    return firmware_agreement(guest_mode, getattr(vm, "firmware", None), image_fw, guest.name)
