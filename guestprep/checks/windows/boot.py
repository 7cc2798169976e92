"""Boot-time state: firmware, TPM, BitLocker, Fast Startup, pending reboot, OS support."""

from __future__ import annotations

from typing import Any, Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.checks.windows._common import unknown, windows_check
from guestprep.models import Severity


@check(
    id="WIN-OS-SUPPORTED", severity=Severity.BLOCKER, os="windows",
    title="Windows Server 2012 / Windows 8 or newer with PowerShell 3.0+",
    rationale="Older releases have no current VirtIO drivers and the collector cannot read them reliably.",
    remediation="Upgrade the guest (or WMF) before migrating, or migrate it by hand.",
)
def os_supported(facts: Any) -> Iterable[Outcome]:
    name = facts.os.caption if facts.os else facts.hostname
    if facts.supported:
        yield ok(name, f"{name} is supported")
    else:
        yield fail(name, facts.unsupported_reason or "unsupported")


@windows_check(
    id="WIN-BITLOCKER", severity=Severity.BLOCKER,
    title="BitLocker protectors are suspended and the recovery key is escrowed",
    rationale="New firmware/TPM/disk controller changes the measured boot: BitLocker asks for the recovery key.",
    remediation="Confirm the recovery key is escrowed (AD/Entra), then run the cutover step "
                "windows.bitlocker_suspend (Suspend-BitLocker with a reboot count).",
    fixed_by="windows.bitlocker_suspend",
)
def bitlocker(facts: Any) -> Iterable[Outcome]:
    if facts.bitlocker is None:
        # Server without the BitLocker feature cannot have encrypted volumes.
        yield unknown(facts, "bitlocker")
        return
    for v in facts.bitlocker:
        encrypted = (v.volume_status or "").lower() not in ("", "fullydecrypted")
        if not encrypted:
            yield ok(v.mount, "not encrypted")
        elif v.protection_status == "on":
            yield fail(v.mount, f"BitLocker protection on ({', '.join(v.protectors)})", protectors=v.protectors)
        elif v.recovery_key_escrowed is not True:
            yield fail(v.mount, "protection suspended but recovery key escrow not confirmed")
        else:
            yield ok(v.mount, "protection suspended, recovery key escrowed")
    if not facts.bitlocker:
        yield ok("BitLocker", "no BitLocker volumes")


@windows_check(
    id="WIN-FAST-STARTUP", severity=Severity.BLOCKER,
    title="Fast Startup and hibernation are off",
    rationale="Fast Startup/hibernation leave NTFS volumes dirty and a hibernated kernel image that resumes "
              "against the old hardware: data loss on the converted disk.",
    remediation="guestprep prepare --apply sets HiberbootEnabled=0 and runs powercfg /hibernate off.",
    fixed_by="windows.fast_startup",
)
def fast_startup(facts: Any) -> Iterable[Outcome]:
    if facts.fast_startup is None and facts.hibernation is None:
        yield unknown(facts, "power")
        return
    on = [n for n, v in (("Fast Startup", facts.fast_startup), ("hibernation", facts.hibernation)) if v]
    if on:
        yield fail("power", f"{' and '.join(on)} on", fast_startup=facts.fast_startup, hibernation=facts.hibernation)
    else:
        yield ok("power", "Fast Startup and hibernation off")


@windows_check(
    id="WIN-UEFI", severity=Severity.INFO,
    title="Firmware type (UEFI guests need OVMF and an EFI disk)",
    rationale="A UEFI guest boots on Proxmox only with bios=ovmf and an efidisk; SeaBIOS cannot boot a "
              "GPT/ESP disk.",
    remediation="The finalizer sets bios: ovmf, machine q35 and adds efidisk0.",
)
def uefi_firmware(facts: Any) -> Iterable[Outcome]:
    if facts.firmware is None:
        yield unknown(facts, "firmware")
    elif facts.firmware == "uefi":
        yield fail("firmware", "UEFI: create the VM with OVMF and an EFI disk", firmware="uefi")
    else:
        yield ok("firmware", "BIOS: SeaBIOS boots it")


@windows_check(
    id="WIN-SECURE-BOOT", severity=Severity.INFO,
    title="Secure Boot (needs EFI vars with Microsoft keys enrolled)",
    rationale="With Secure Boot on, the EFI disk must have pre-enrolled keys or Windows will not load.",
    remediation="The finalizer adds efidisk0 with pre-enrolled-keys=1.",
)
def secure_boot(facts: Any) -> Iterable[Outcome]:
    if facts.secure_boot is None:
        yield unknown(facts, "secure_boot")
    elif facts.secure_boot:
        yield fail("secure-boot", "Secure Boot on: use an EFI disk with pre-enrolled keys")
    else:
        yield ok("secure-boot", "Secure Boot off")


@windows_check(
    id="WIN-VTPM", severity=Severity.WARNING,
    title="vTPM state is not migrated",
    rationale="The TPM's keys stay in VMware; BitLocker TPM protectors and Windows Hello keys sealed to it "
              "fail on the new vTPM.",
    remediation="Add tpmstate0 on Proxmox, suspend BitLocker for the cutover and keep the recovery key at "
                "hand.",
)
def vtpm(facts: Any) -> Iterable[Outcome]:
    if facts.tpm_present is None:
        yield unknown(facts, "tpm")
    elif facts.tpm_present:
        yield fail("TPM", f"TPM {facts.tpm_version or ''} present: its state does not move".replace("  ", " "))
    else:
        yield ok("TPM", "no TPM")


@windows_check(
    id="WIN-PENDING-REBOOT", severity=Severity.BLOCKER,
    title="No reboot is pending",
    rationale="Pending updates/renames run at the next boot, which would be the first boot on KVM, "
              "mixing two changes and often failing half-way.",
    remediation="Reboot the guest on VMware, then re-run preflight.",
)
def pending_reboot(facts: Any) -> Iterable[Outcome]:
    if facts.pending_reboot is None:
        yield unknown(facts, "pending_reboot")
    elif facts.pending_reboot:
        yield fail("reboot", f"reboot pending: {', '.join(facts.pending_reboot_reasons)}",
                   reasons=facts.pending_reboot_reasons)
    else:
        yield ok("reboot", "no reboot pending")
