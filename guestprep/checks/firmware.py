"""Cross-source firmware agreement: the guest, the VM configuration and the disk image.

Three witnesses say how a VM boots: the guest itself (/sys/firmware/efi, $env:firmware_type),
the VM's configuration (vSphere ``config.firmware`` or the .vmx ``firmware`` key) and the
offline image audit (GPT + ESP implies UEFI; MBR implies BIOS: ``guestprep-host audit
--json``). The finalizer creates the Proxmox VM from the VM configuration; when the
witnesses disagree, someone is about to create the wrong firmware, and that blocks.

A registry check with ``sources`` (``checks list``/``show`` and reports carry its metadata),
evaluated only by the fleet runner, which holds all three witnesses: :func:`for_report` once
per guest with VM facts. Fewer than two known witnesses: skipped, saying which are missing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from guestprep.checks import registry
from guestprep.checks.base import Outcome, error, ok
from guestprep.models import Finding, Severity, Status

CHECK_ID = "EFI-FIRMWARE-AGREE"
_NORMAL = {"uefi": "uefi", "efi": "uefi", "ovmf": "uefi", "bios": "bios", "legacy": "bios", "seabios": "bios"}


@dataclass(frozen=True)
class FirmwareWitnesses:
    """What each source says (raw values, as reported) and a problem reading the image audit."""

    guest_boot_mode: str | None = None
    vm_firmware: str | None = None
    image_firmware: str | None = None
    image_problem: Outcome | None = None

    def evidence(self) -> dict[str, Any]:
        return {"guest_boot_mode": self.guest_boot_mode, "vm_firmware": self.vm_firmware,
                "image_firmware": self.image_firmware}


def normalise(value: Any) -> str | None:
    """uefi | bios | None (unknown)."""
    return _NORMAL.get(str(value).strip().lower()) if value not in (None, "") else None


@registry.check(
    id=CHECK_ID, severity=Severity.BLOCKER, os="vm", phase="pre",
    title="Guest, VM configuration and disk image agree on the firmware (UEFI or BIOS)",
    rationale="The Proxmox VM gets its firmware (OVMF or SeaBIOS) from the VM configuration. A guest that boots "
              "UEFI from a GPT+ESP disk but sits in a VM configured for BIOS (or the reverse: a .vmx edited, an "
              "image restored from elsewhere) lands in a VM that cannot boot it.",
    remediation="Find out which witness is wrong before the cutover: the guest's own boot mode is the truth for "
                "what it can boot; correct the VM configuration / hand-off firmware (bios=ovmf + efidisk0 for "
                "UEFI) or the disk image.",
    references=("https://pve.proxmox.com/pve-docs/chapter-qm.html#qm_bios_and_uefi",
                "https://pve.proxmox.com/wiki/OVMF/UEFI_Boot_Entries"),
    tags=("firmware", "uefi"),
    sources=("guest facts (boot mode)", "VM configuration (vSphere config.firmware / .vmx)",
             "image audit (guestprep-host audit --json, inventory var image_audit)"),
)
def firmware_agree(w: Any) -> Iterable[Outcome]:
    if not isinstance(w, FirmwareWitnesses):  # one facts record alone (e.g. the VM's) is not enough to judge
        yield Outcome(Status.SKIPPED, "not applicable: compares the guest, the VM configuration and the image "
                      "audit; the fleet runner evaluates it when it has VM facts", "firmware", {})
        return
    if w.image_problem is not None:
        yield w.image_problem
        return
    witnesses = {"guest": normalise(w.guest_boot_mode), "vm": normalise(w.vm_firmware),
                 "image": normalise(w.image_firmware)}
    known = {k: v for k, v in witnesses.items() if v}
    if len(known) < 2:
        yield Outcome(Status.SKIPPED, "fewer than two sources know the firmware "
                      f"({', '.join(f'{k}={v}' for k, v in known.items()) or 'none'})", "firmware", w.evidence())
        return
    if len(set(known.values())) == 1:
        yield ok("firmware", f"{' and '.join(known)} agree: {next(iter(known.values()))}", **w.evidence())
        return
    said = ", ".join(f"{k} says {v}" for k, v in known.items())
    truth = known.get("guest")
    hint = f"; the guest really boots {truth}, so the Proxmox VM must be {'OVMF + efidisk0' if truth == 'uefi' else 'SeaBIOS'}" \
        if truth else ""
    yield Outcome(Status.FAIL, f"firmware disagreement: {said}{hint}", "firmware", w.evidence())


def firmware_agreement(guest_boot_mode: str | None, vm_firmware: str | None, image_firmware: str | None,
                       guest: str) -> list[Finding]:
    return registry.get(CHECK_ID).evaluate(FirmwareWitnesses(guest_boot_mode, vm_firmware, image_firmware), guest)


def image_audit_firmware(path: str | Path) -> tuple[str | None, Outcome | None]:
    """The firmware a ``guestprep-host audit --json`` document implies, or an error outcome naming the file."""
    p = Path(path)
    where = {"image_audit": str(p)}
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        return None, error(f"cannot read the image audit {p}: {exc}", "firmware", **where)
    except json.JSONDecodeError as exc:
        return None, error(f"image audit {p} is not JSON ({exc.msg} at line {exc.lineno})", "firmware", **where)
    fw = doc.get("firmware") if isinstance(doc, Mapping) else None
    if fw not in ("uefi", "bios", "unknown"):
        return None, error(f"image audit {p}: 'firmware' is {fw!r}, expected uefi, bios or unknown (the output of "
                           "`guestprep-host audit --json`)", "firmware", **where)
    return (None if fw == "unknown" else fw), None


def for_report(facts_summary: Mapping[str, Any], vm: Any, guest: Any) -> list[Finding]:
    """The fleet runner's call: guest boot mode from the facts summary, the VM's firmware, and the
    image audit named by the guest's inventory var ``image_audit`` (optional)."""
    guest_mode = facts_summary.get("boot_mode") or facts_summary.get("firmware")
    image_fw, problem = None, None
    audit_path = (getattr(guest, "vars", None) or {}).get("image_audit")
    if audit_path:
        if not Path(audit_path).is_absolute():  # relative to the inventory file, like vm_facts
            audit_path = guest.inventory_dir / audit_path
        image_fw, problem = image_audit_firmware(audit_path)
    witnesses = FirmwareWitnesses(guest_mode, getattr(vm, "firmware", None), image_fw, problem)
    return registry.get(CHECK_ID).evaluate(witnesses, guest.name)
