"""UEFI guests: can a fresh EFI vars store (Proxmox's new efidisk0) find the bootloader?

A VMware UEFI guest boots through an NVRAM entry kept in VMware's .nvram file, which
does not come along. OVMF with an empty vars store only tries the removable-media
fallback \\EFI\\BOOT\\BOOTX64.EFI.
"""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, error, fail, ok, skip
from guestprep.checks.efi_common import REFS, efi_or_reason, loader_evidence, on_efi
from guestprep.checks.registry import check
from guestprep.facts.efi import FALLBACK_PATH, MOK_NAMES, SECOND_STAGE, SHIM_NAMES, EfiFacts, basename, parent
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Severity



def evidence(efi: EfiFacts) -> dict:
    return {"esp": efi.esp_mount, "active_loader": efi.active_loader(), "boot_current": efi.boot_current,
            **loader_evidence(efi, entry_prefix="Boot")}


def _efi_or_reason(facts: LinuxFacts) -> tuple[EfiFacts | None, Outcome | None]:
    return efi_or_reason(facts.boot_mode == "uefi", facts.efi, "reported no 'efi' section (an older collect.sh?)",
                         unreadable="not mounted", advice="; mount it and re-run")


@check(
    id="LNX-EFI-FALLBACK", severity=Severity.BLOCKER, os="linux", phase="pre",
    title="UEFI guest has a removable-media fallback loader (\\EFI\\BOOT\\BOOTX64.EFI)",
    rationale="The guest boots through an NVRAM entry stored in VMware's .nvram, which does not move. The new "
              "Proxmox EFI disk starts empty, so OVMF only tries \\EFI\\BOOT\\BOOTX64.EFI; without it the VM "
              "stops in the UEFI shell or PXE.",
    remediation="Run `guestprep prepare --apply`: it installs the fallback the distribution's way "
                "(grub-install --force-extra-removable on Debian/Ubuntu) or as a verified copy of the active "
                "loader set, backing up whatever was there.",
    fixed_by="linux.efi_fallback", references=REFS,
)
@on_efi(_efi_or_reason)
def efi_fallback_present(efi: EfiFacts) -> Iterable[Outcome]:
    fb = efi.fallback
    if fb is None:
        via = efi.active_loader() or "an NVRAM entry"
        yield fail(FALLBACK_PATH, f"no {FALLBACK_PATH} on the ESP: the guest boots via {via}, which a fresh "
                                  "EFI vars store does not know", **evidence(efi))
    elif not fb.size:
        yield fail(FALLBACK_PATH, f"{FALLBACK_PATH} is empty", **evidence(efi))
    else:
        yield ok(FALLBACK_PATH, f"{FALLBACK_PATH} present ({fb.size} bytes)", sha256=fb.sha256)


def expected_set(efi: EfiFacts) -> tuple[str | None, list]:
    """The directory of the active loader and the loaders a fallback may legitimately be a copy of."""
    active = efi.active_loader()
    if active is None:
        return None, efi.loaders()
    d = parent(active).lower()
    names = {basename(active).lower(), *SECOND_STAGE, *SHIM_NAMES}
    return parent(active), [f for f in efi.loaders() if parent(f.path).lower() == d and basename(f.path).lower() in names]


@check(
    id="LNX-EFI-FALLBACK-STALE", severity=Severity.WARNING, os="linux", phase="pre",
    title="The fallback loader is the distribution's current loader",
    rationale="A \\EFI\\BOOT\\BOOTX64.EFI left from an older GRUB/shim (or another OS) may not read today's "
              "grub.cfg or kernels, or may not be signed with today's keys: the first boot on Proxmox uses "
              "exactly that file.",
    remediation="Run `guestprep prepare --apply` to reinstall the fallback from the active loader set "
                "(the old files are backed up and journaled).",
    fixed_by="linux.efi_fallback", references=REFS,
)
@on_efi(_efi_or_reason)
def efi_fallback_current(efi: EfiFacts) -> Iterable[Outcome]:
    fb = efi.fallback
    if fb is None:
        yield skip("no fallback loader (LNX-EFI-FALLBACK reports it)", FALLBACK_PATH)
        return
    vendor_dir, candidates = expected_set(efi)
    verdict, src = efi.copy_of(fb, candidates)
    if verdict == "undecided" and fb.sha256 is None:
        yield ok(FALLBACK_PATH, "sizes match an active loader (no sha256sum on the guest to compare content)")
        return
    if src is None and fb.sha256 is None:
        yield fail(FALLBACK_PATH, f"{FALLBACK_PATH} has the size of no loader in {vendor_dir or 'the ESP'}",
                   **evidence(efi))
        return
    if src is None:
        yield fail(FALLBACK_PATH, f"{FALLBACK_PATH} matches none of the loaders in {vendor_dir or 'the ESP'}: it is "
                                  "stale or another system's", fallback_sha256=fb.sha256, **evidence(efi))
        return
    if basename(src.path).lower() in SHIM_NAMES and not efi.shim_fallback_set():
        # shim in the fallback path loads grubx64.efi (and mmx64.efi) from its own directory
        stale = []
        for sib in (*SECOND_STAGE, *MOK_NAMES):
            theirs = efi.file(parent(src.path) + "\\" + sib)
            mine = efi.file("\\EFI\\BOOT\\" + sib)
            if theirs and (mine is None or efi.same(mine, theirs) is False):
                stale.append(f"\\EFI\\BOOT\\{sib} " + ("missing" if mine is None else f"differs from {theirs.path}"))
        if stale:
            yield fail(FALLBACK_PATH, f"the fallback is shim but {'; '.join(stale)}", **evidence(efi))
            return
    yield ok(FALLBACK_PATH, f"{FALLBACK_PATH} is a copy of {src.path}", source=src.path)


@check(
    id="LNX-EFI-SHIM", severity=Severity.BLOCKER, os="linux", phase="pre",
    title="Secure Boot on: the fallback path holds shim with GRUB beside it",
    rationale="With Secure Boot on (and Proxmox's efidisk0 with pre-enrolled keys) OVMF only starts a "
              "Microsoft-signed loader: shim. An unsigned GRUB at \\EFI\\BOOT\\BOOTX64.EFI is refused, and shim "
              "there needs grubx64.efi in the same directory.",
    remediation="Run `guestprep prepare --apply`: it installs shim as \\EFI\\BOOT\\BOOTX64.EFI with grubx64.efi "
                "and mmx64.efi beside it (or switch Secure Boot off on the target VM knowingly).",
    fixed_by="linux.efi_fallback", references=REFS,
)
@on_efi(_efi_or_reason)
def efi_shim_in_fallback(efi: EfiFacts) -> Iterable[Outcome]:
    if efi.secure_boot is None:
        yield error("Secure Boot state unknown (SecureBoot EFI variable not readable)", "secure-boot")
        return
    if not efi.secure_boot:
        yield skip("Secure Boot is off: any loader may start", "secure-boot")
        return
    fb = efi.fallback
    if fb is None:
        yield fail(FALLBACK_PATH, "Secure Boot is on and there is no fallback loader; it must be shim",
                   **evidence(efi))
        return
    if fb.sha256 is None:
        yield error("no sha256sum on the guest: cannot tell whether the fallback is shim", FALLBACK_PATH)
        return
    shims = [m.path for m in efi.matches(fb) if basename(m.path).lower() in SHIM_NAMES]
    if not shims:
        yield fail(FALLBACK_PATH, f"Secure Boot is on but {FALLBACK_PATH} is not shim "
                                  f"(it matches {[m.path for m in efi.matches(fb)] or 'no known loader'})",
                   **evidence(efi))
        return
    # shim starts the second stage its vendor ships next to it (grubx64.efi; grub.efi on SUSE)
    wanted = [n for n in SECOND_STAGE if efi.file(parent(shims[0]) + "\\" + n)] or ["grubx64.efi"]
    missing = [n for n in wanted if efi.file("\\EFI\\BOOT\\" + n) is None]
    if missing and efi.shim_fallback_set():
        yield ok(FALLBACK_PATH, f"{FALLBACK_PATH} is shim ({shims[0]}) with its fallback (fbx64.efi + BOOTX64.CSV): "
                                "it recreates the NVRAM entry on the first boot", shim=shims[0])
        return
    if missing:
        yield fail(FALLBACK_PATH, f"the fallback is shim but \\EFI\\BOOT\\{missing[0]} is missing: shim has "
                                  "nothing to start", shim=shims[0])
        return
    yield ok(FALLBACK_PATH, f"{FALLBACK_PATH} is shim ({shims[0]}) with {wanted[0]} beside it", shim=shims[0])
