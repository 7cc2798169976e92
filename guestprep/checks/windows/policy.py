"""What stops guestprep's own scripts, or the move itself, for policy or role reasons.

Every check answers 'cannot tell' (skipped with the collector's reason) when the fact was not
collected; none passes on a missing fact.
"""

from __future__ import annotations

from typing import Any, Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.windows._common import unknown, windows_check
from guestprep.models import Severity

# Execution policies that stop `powershell.exe -ExecutionPolicy Bypass -File <unsigned script>`
# when set by Group Policy (MachinePolicy/UserPolicy take precedence over the command line).
BLOCKING_POLICIES = ("allsigned", "restricted")
# The first-boot tasks run as SYSTEM (schtasks /RU SYSTEM in lib.ps1): what binds them is the machine
# policy and SYSTEM's own user policy (collect.ps1 reads it from HKEY_USERS\S-1-5-18). The connecting
# account's UserPolicy is shown, but it never applies to those tasks.
GPO_SCOPES = ("MachinePolicy", "SystemUserPolicy")
INFO_SCOPES = ("UserPolicy",)


@windows_check(
    id="WIN-EXECUTION-POLICY-GPO", severity=Severity.BLOCKER,
    references=("https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_execution_policies",
                "https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_group_policy_settings"),
    title="No Group Policy execution policy blocks the first-boot scripts",
    rationale="The first-boot tasks (network restore, VMware Tools removal) run as SYSTEM and start "
              "powershell.exe -ExecutionPolicy Bypass -File <unsigned script>. An execution policy set by Group "
              "Policy takes precedence over -ExecutionPolicy, so AllSigned or Restricted (the 'Turn on Script "
              "Execution' policy disabled) blocks them: in the computer's MachinePolicy scope, or in the user "
              "policy of the account the tasks run as, SYSTEM (about_Execution_Policies, 'Execution policy "
              "precedence'). The connecting account's own UserPolicy does not apply to them.",
    remediation="Exempt the VM from the 'Turn on Script Execution' policy for the move (or set it to "
                "RemoteSigned: local scripts run), gpupdate, re-run preflight; or re-apply the network and "
                "remove VMware Tools by hand after the first KVM boot.",
)
def execution_policy_gpo(facts: Any) -> Iterable[Outcome]:
    if facts.execution_policy is None:
        yield unknown(facts, "execution_policy")
        return
    for scope in GPO_SCOPES:
        value = facts.execution_policy.get(scope)
        if value is None:
            yield unknown(facts, "execution_policy", scope)
        elif value.lower() in BLOCKING_POLICIES:
            whose = "the computer's" if scope == "MachinePolicy" else "SYSTEM's (the account the first-boot tasks run as)"
            yield fail(scope, f"Group Policy sets {value} in {whose} {scope} scope: the unsigned first-boot scripts "
                              "would be blocked despite -ExecutionPolicy Bypass", scope=scope, policy=value)
        else:
            yield ok(scope, f"{scope}: {value}")
    for scope in INFO_SCOPES:
        value = facts.execution_policy.get(scope)
        if value is not None and value.lower() in BLOCKING_POLICIES:
            yield ok(scope, f"{scope}: {value} for the connecting account only; the first-boot tasks run as "
                            "SYSTEM, which it does not bind", scope=scope, policy=value)


@windows_check(
    id="WIN-BITLOCKER-RECOVERY-PASSWORD", severity=Severity.BLOCKER,
    references=("https://learn.microsoft.com/windows/security/operating-system-security/data-protection/bitlocker/recovery-overview",),
    title="Every BitLocker volume has a RecoveryPassword protector",
    rationale="The first boot on KVM changes firmware, TPM and disk controller: BitLocker enters recovery "
              "and asks for the 48-digit recovery password. A volume protected only by the TPM (or a "
              "startup key/PIN) has no recovery password anyone could type "
              "(https://learn.microsoft.com/windows/security/operating-system-security/data-protection/"
              "bitlocker/recovery-overview).",
    remediation="Add a recovery password and escrow it before the move: manage-bde -protectors -add C: "
                "-RecoveryPassword, then back it up to AD DS / Entra ID (BackupToAAD-BitLockerKeyProtector or "
                "manage-bde -protectors -adbackup).",
)
def bitlocker_recovery_password(facts: Any) -> Iterable[Outcome]:
    if facts.bitlocker is None:
        yield unknown(facts, "bitlocker")
        return
    for v in facts.bitlocker:
        encrypted = (v.volume_status or "").lower() not in ("", "fullydecrypted")
        if not encrypted:
            yield ok(v.mount, "not encrypted")
        elif any(p.lower() == "recoverypassword" for p in v.protectors):
            yield ok(v.mount, "recovery password protector present")
        else:
            yield fail(v.mount, f"encrypted, protectors {', '.join(v.protectors) or 'none listed'}: no recovery "
                                "password for the recovery screen of the first KVM boot", protectors=v.protectors)
    if not facts.bitlocker:
        yield ok("BitLocker", "no BitLocker volumes")


@windows_check(
    id="WIN-DOMAIN-CONTROLLER", severity=Severity.BLOCKER,
    references=("https://learn.microsoft.com/troubleshoot/windows-server/active-directory/detect-and-recover-from-usn-rollback",),
    title="The guest is not a domain controller (or the move is waived)",
    rationale="A DC brought back from a copy while the original ran on (or after a rollback to the VMware "
              "VM) replicates with an old invocation ID: USN rollback, the DC quarantines itself and "
              "directory changes are lost (https://learn.microsoft.com/troubleshoot/windows-server/"
              "active-directory/detect-and-recover-from-usn-rollback).",
    remediation="Prefer a new DC on Proxmox (promote, transfer roles, demote the old one). To move it anyway: "
                "power the VMware VM off for good before the first KVM boot, never roll back to it, then waive "
                "this finding (waivers.yaml) with the reason.",
)
def domain_controller(facts: Any) -> Iterable[Outcome]:
    if facts.os is None or facts.os.product_type is None:
        yield unknown(facts, "os")
        return
    if facts.os.product_type == 2:
        yield fail("domain-controller", "the guest is a domain controller (ProductType 2): a copy risks USN "
                                        "rollback", product_type=2)
    else:
        yield ok("domain-controller", f"not a domain controller (ProductType {facts.os.product_type})")


@windows_check(
    id="WIN-LANGUAGE-MODE", severity=Severity.BLOCKER,
    references=("https://learn.microsoft.com/powershell/module/microsoft.powershell.core/about/about_language_modes",),
    title="PowerShell runs in FullLanguage mode",
    rationale="guestprep's scripts create .NET objects (System.Diagnostics.Process for native programs, "
              "encoders, the journal); ConstrainedLanguage mode (AppLocker/WDAC script enforcement or "
              "__PSLockdownPolicy) refuses them (about_Language_Modes, https://learn.microsoft.com/powershell/"
              "module/microsoft.powershell.core/about/about_language_modes).",
    remediation="Run guestprep through an endpoint/account in FullLanguage mode (an AppLocker/WDAC rule for "
                "the administrators running it), or prepare the guest by hand.",
)
def language_mode(facts: Any) -> Iterable[Outcome]:
    if facts.language_mode is None:
        yield unknown(facts, "language_mode")
        return
    if facts.language_mode.lower() == "fulllanguage":
        yield ok("language-mode", "FullLanguage")
    else:
        yield fail("language-mode", f"PowerShell runs in {facts.language_mode}: guestprep's scripts need "
                                    "FullLanguage", language_mode=facts.language_mode)


@windows_check(
    id="WIN-32BIT", severity=Severity.INFO,
    references=("https://github.com/virtio-win/virtio-win-pkg-scripts/blob/master/README.md",),
    title="32-bit Windows uses the x86 drivers and the 32-bit agent",
    rationale="A 32-bit Windows loads only x86 drivers: guestprep takes <driver>\\<os>\\x86 from the virtio-win "
              "media and guest-agent\\qemu-ga-i386.msi; media without them cannot prepare this guest.",
    remediation="Use a virtio-win release that still ships x86 drivers for this Windows version "
                "(guestprep/data/virtio_win_matrix.json).",
)
def windows_32bit(facts: Any) -> Iterable[Outcome]:
    if facts.os is None or facts.os.is_32bit is None:
        yield unknown(facts, "os")
        return
    if facts.os.is_32bit:
        yield fail("architecture", f"{facts.os.architecture}: x86 driver folders and qemu-ga-i386.msi are used",
                   architecture=facts.os.architecture)
    else:
        yield ok("architecture", f"{facts.os.architecture}")
