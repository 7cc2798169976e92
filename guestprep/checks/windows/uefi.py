"""UEFI Windows guests: a fresh EFI vars store must find \\EFI\\Boot\\bootx64.efi.

VMware keeps the "Windows Boot Manager" NVRAM entry (\\EFI\\Microsoft\\Boot\\bootmgfw.efi)
in the VM's .nvram file, which does not move; Proxmox's new efidisk0 starts empty.
Facts come from the ``efi`` member of the Windows collector document (collect.ps1).
"""

from __future__ import annotations

from typing import Any, Iterable

from guestprep.checks.base import Outcome, error, fail, ok, skip
from guestprep.checks.efi_common import REFS, efi_or_reason, loader_evidence, on_efi
from guestprep.checks.registry import check
from guestprep.facts.efi import EfiFacts, windows_efi
from guestprep.models import Severity

FALLBACK = "\\EFI\\Boot\\bootx64.efi"
BOOTMGFW = "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"


def _efi_or_reason(facts: Any) -> tuple[EfiFacts | None, Outcome | None]:
    return efi_or_reason(getattr(facts, "firmware", None) == "uefi", windows_efi(facts),
                         "document has no 'efi' section (an older collect.ps1?)", unreadable="not readable")


@check(
    id="WIN-EFI-FALLBACK", severity=Severity.BLOCKER, os="windows", phase="pre",
    title="UEFI guest has the removable-media fallback \\EFI\\Boot\\bootx64.efi",
    rationale="Windows boots through the 'Windows Boot Manager' NVRAM entry kept in VMware's .nvram; the new "
              "Proxmox EFI disk starts empty and OVMF then only tries \\EFI\\Boot\\bootx64.efi. Without it the "
              "VM stops in the UEFI shell or PXE.",
    remediation="Run `guestprep prepare --apply`: it copies bootmgfw.efi to \\EFI\\Boot\\bootx64.efi on the ESP "
                "and verifies the copy (or run `bcdboot C:\\Windows /f UEFI` yourself).",
    fixed_by="windows.efi_fallback", references=REFS,
)
@on_efi(_efi_or_reason)
def win_efi_fallback(efi: EfiFacts) -> Iterable[Outcome]:
    fb = efi.file(FALLBACK)
    if fb is None or not fb.size:
        yield fail(FALLBACK, f"no {FALLBACK} on the ESP" + (" (empty file)" if fb else "") +
                   ": only the NVRAM entry points at Windows Boot Manager", **loader_evidence(efi))
    else:
        yield ok(FALLBACK, f"{FALLBACK} present ({fb.size} bytes)", sha256=fb.sha256)


@check(
    id="WIN-EFI-FALLBACK-STALE", severity=Severity.WARNING, os="windows", phase="pre",
    title="\\EFI\\Boot\\bootx64.efi is today's Windows Boot Manager",
    rationale="Servicing updates bootmgfw.efi but not always the fallback copy; an old boot manager may be "
              "revoked (Secure Boot DBX) or not read today's BCD, and the first boot on Proxmox uses it.",
    remediation="Run `guestprep prepare --apply` to replace it with a verified copy of bootmgfw.efi (the old file "
                "is backed up).",
    fixed_by="windows.efi_fallback", references=REFS,
)
@on_efi(_efi_or_reason)
def win_efi_fallback_current(efi: EfiFacts) -> Iterable[Outcome]:
    fb = efi.file(FALLBACK)
    if fb is None:
        yield skip("no fallback loader (WIN-EFI-FALLBACK reports it)", FALLBACK)
        return
    active = efi.entry("{bootmgr}")
    src = efi.file(active.path) if active and active.path else None
    src = src or efi.file(BOOTMGFW)
    if src is None:
        yield error(f"{BOOTMGFW} not found on the ESP: cannot tell what the fallback should be", FALLBACK)
        return
    verdict, _ = efi.copy_of(fb, [src])
    if verdict == "undecided":
        yield error("no SHA-256 of the loaders: cannot compare", FALLBACK)
    elif verdict == "copy":
        yield ok(FALLBACK, f"{FALLBACK} is a copy of {src.path}", source=src.path)
    else:
        yield fail(FALLBACK, f"{FALLBACK} differs from {src.path} (the boot manager Windows uses)",
                   fallback_sha256=fb.sha256, bootmgfw_sha256=src.sha256)
