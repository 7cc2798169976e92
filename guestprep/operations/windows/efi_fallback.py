"""windows.efi_fallback: \\EFI\\Boot\\bootx64.efi as a verified copy of bootmgfw.efi.

Proxmox's new efidisk0 has no "Windows Boot Manager" NVRAM entry, so OVMF only tries
\\EFI\\Boot\\bootx64.efi. The copy (guest_scripts/windows/install-efi-fallback.ps1)
checks bootmgfw.efi still has the planned SHA-256, writes under a temporary name,
verifies the copy's hash, backs up and journals the old file, then renames. Unlike
``bcdboot C:\\Windows /f UEFI`` it leaves the BCD store and the NVRAM entries alone.
"""

from __future__ import annotations

from typing import Any

from guestprep.checks import registry as checks
from guestprep.errors import OperationError
from guestprep.facts.efi import windows_efi
from guestprep.models import Change, Plan, Status
from guestprep.operations.base import operation
from guestprep.operations.windows._common import WindowsOperation, script_change

FALLBACK = "\\EFI\\Boot\\bootx64.efi"
BOOTMGFW = "\\EFI\\Microsoft\\Boot\\bootmgfw.efi"
MIB = 1024 * 1024


@operation
class WindowsEfiFallback(WindowsOperation):
    id = "windows.efi_fallback"
    title = "UEFI fallback \\EFI\\Boot\\bootx64.efi (boots from a fresh EFI vars store)"
    fixes = ("WIN-EFI-FALLBACK", "WIN-EFI-FALLBACK-STALE")
    order = 90

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="WIN-EFI-FALLBACK")
        if getattr(facts, "firmware", None) != "uefi":
            plan.reason = "guest boots via BIOS: no EFI fallback needed"
            return plan
        efi = windows_efi(facts)
        if efi is None:
            raise OperationError("the Windows facts have no 'efi' section (an older collect.ps1?); "
                                 "nothing was changed")
        if efi.files is None:
            raise OperationError(f"cannot read the ESP ({efi.unknown.get('esp', 'not readable')}); nothing was changed")
        failing = [f for cid in self.fixes for f in checks.get(cid).evaluate(facts, guest) if f.status is Status.FAIL]
        if not failing:
            plan.reason = f"{FALLBACK} present and current"
            return plan
        src = efi.file(BOOTMGFW)
        if src is None or not src.sha256:
            raise OperationError(f"{BOOTMGFW} not found (or not hashed) on the ESP: cannot make the fallback from it; "
                                 "nothing was changed")
        old = efi.file(FALLBACK)
        need = (src.size or 0) + MIB
        if efi.esp_free_bytes is not None and efi.esp_free_bytes < need - (old.size or 0 if old else 0):
            raise OperationError(f"the ESP has {efi.esp_free_bytes // 1024} KiB free; the copy needs "
                                 f"{need // 1024} KiB (nothing was changed)")
        kind = "file_replace" if old else "file_write"
        plan.changes.append(Change(kind, FALLBACK, {"source": BOOTMGFW, "sha256": src.sha256,
                                                    "before_sha256": old.sha256 if old else None},
                                   f"- {FALLBACK} {old.sha256 if old else '(absent)'}\n+ {FALLBACK} {src.sha256}\n"))
        plan.changes.append(script_change("install-efi-fallback.ps1", {
            "source_sha256": src.sha256, "operation": self.id,
            "run": options.get("run_id", "adhoc")}, f"copy {BOOTMGFW} -> {FALLBACK}, verified by SHA-256\n"))
        plan.reason = ("replace the stale " if old else "install ") + f"{FALLBACK} with a verified copy of {BOOTMGFW}"
        return plan
