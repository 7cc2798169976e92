"""What the Linux and Windows UEFI checks share: the "can the ESP be judged" guard and the
evidence they attach (the fallback comparer itself is EfiFacts.copy_of in facts/efi.py)."""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable

from guestprep.checks.base import Outcome, error, skip
from guestprep.facts.efi import EfiFacts

# Where the removable-media fallback loader is specified, and why OVMF on Proxmox needs it.
REFS = ("https://uefi.org/specs/UEFI/2.10/03_Boot_Manager.html#removable-media-boot-behavior",
        "https://pve.proxmox.com/wiki/OVMF/UEFI_Boot_Entries")


def efi_or_reason(uefi: bool, efi: EfiFacts | None, no_section: str, unreadable: str,
                  advice: str = "") -> tuple[EfiFacts | None, Outcome | None]:
    """The EFI record when the checks can judge it, else the outcome that says why not."""
    if not uefi:
        return None, skip("guest boots via BIOS: no EFI loader is involved")
    if efi is None:
        return None, error(f"the collector {no_section}: cannot tell", "ESP")
    if efi.files is None:
        return None, error(f"cannot read the ESP: {efi.unknown.get('esp', unreadable)}{advice}", "ESP")
    return efi, None


def loader_evidence(efi: EfiFacts, entry_prefix: str = "") -> dict:
    return {"loaders": [f"{f.path} ({f.size} bytes)" for f in efi.loaders()],
            "boot_entries": [f"{entry_prefix}{e.id} {e.label}: {e.path or e.device}" for e in efi.entries or []]}


Guard = Callable[[Any], "tuple[EfiFacts | None, Outcome | None]"]


def on_efi(guard: Guard) -> Callable[[Callable[[EfiFacts], Iterable[Outcome]]], Callable[[Any], Iterable[Outcome]]]:
    """The check body judges the EFI record; when the guard says it cannot be judged (BIOS guest,
    no efi section, ESP unreadable) the guard's outcome is the check's answer."""

    def wrap(body: Callable[[EfiFacts], Iterable[Outcome]]) -> Callable[[Any], Iterable[Outcome]]:
        @functools.wraps(body)
        def judged(facts: Any) -> Iterable[Outcome]:
            efi, why = guard(facts)
            return [why] if why else list(body(efi))  # type: ignore[arg-type]

        return judged

    return wrap
