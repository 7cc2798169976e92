"""Regenerate tests/checks/WIN-*/ fixtures (run by hand, output committed).

Each case names a guest profile, an optional mutation and the expected outcomes,
written by hand from the profile (not computed by running the check).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

from build_profiles import prepared, profiles

OUT = Path(__file__).resolve().parents[2] / "checks"
MiB = 1 << 20


def set_path(doc, path, value):
    keys = path.split(".")
    for k in keys[:-1]:
        doc = doc[int(k)] if isinstance(doc, list) else doc[k]
    last = keys[-1]
    if isinstance(doc, list):
        doc[int(last)] = value
    else:
        doc[last] = value


P, F, S = "pass", "fail", "skipped"


def _stub(d: dict) -> None:
    """install-virtio.ps1 before the fix: vioscsi/viostor staged, Services\\vioscsi created by
    New-Item -Force with Start=0 only, no .sys, no PCI ID mapping."""
    d["driver_store"] = [{"inf": "oem7.inf", "original_name": "vioscsi.inf", "provider": None, "version": "100.95.104.26600",
                          "class": None, "folder": "vioscsi.inf_amd64_0000000000000007", "arch": "amd64"},
                         {"inf": "oem8.inf", "original_name": "viostor.inf", "provider": None, "version": "100.95.104.26600",
                          "class": None, "folder": "viostor.inf_amd64_0000000000000008", "arch": "amd64"}]
    d["services"]["vioscsi"] = {"start": 0, "image_path": None, "group": None}
    d["boot_storage"]["vioscsi"]["service"] = {"type": None, "start": 0, "error_control": None, "group": None, "image_path": None}
CASES = [
    # (check, fixture, profile, mutations {path: value} or callable, expect [(status, resource)])
    ("WIN-VIRTIO-STORAGE-DRIVER", "ws2019-vmware-only", "ws2019-en-US", {}, [(F, "vioscsi.inf"), (F, "viostor.inf")]),
    ("WIN-VIRTIO-STORAGE-DRIVER", "ws2025-prepared", "ws2025-en-US", {}, [(P, "vioscsi.inf"), (P, "viostor.inf")]),
    ("WIN-VIRTIO-STORAGE-DRIVER", "only-viostor", "ws2025-en-US", lambda d: d.__setitem__("driver_store", [x for x in d["driver_store"] if x["original_name"] != "vioscsi.inf"]), [(F, "vioscsi.inf"), (P, "viostor.inf")]),
    ("WIN-VIRTIO-STORAGE-DRIVER", "store-unreadable", "ws2016-de-DE", {"driver_store": None, "unknown": {"driver_store": "access denied"}}, [(S, "")]),
    ("WIN-VIOSCSI-BOOTSTART", "demand-start", "ws2025-en-US", {"services.vioscsi.start": 3, "boot_storage.vioscsi.service.start": 3}, [(F, "vioscsi"), (P, "viostor")]),
    ("WIN-VIOSCSI-BOOTSTART", "boot-start", "ws2025-en-US", {}, [(P, "vioscsi"), (P, "viostor")]),
    ("WIN-VIOSCSI-BOOTSTART", "not-installed-2012r2", "ws2012r2-en-US", {}, [(F, "vioscsi"), (S, "viostor")]),
    # what the pre-fix install-virtio.ps1 left: the package staged, a key holding only Start=0
    ("WIN-VIOSCSI-BOOTSTART", "stub-key-start-only", "ws2019-en-US", lambda d: _stub(d), [(F, "vioscsi"), (S, "viostor")]),
    ("WIN-VIOSCSI-BOOTSTART", "no-device-id-mapping", "ws2025-en-US", {"boot_storage.vioscsi.device_ids": []}, [(F, "vioscsi"), (P, "viostor")]),
    ("WIN-VIOSCSI-BOOTSTART", "sys-file-missing", "ws2025-en-US", {"boot_storage.vioscsi.file.present": False, "boot_storage.vioscsi.file.sha256": None}, [(F, "vioscsi"), (P, "viostor")]),
    ("WIN-VIOSCSI-BOOTSTART", "collector-could-not-read", "ws2019-en-US", {"boot_storage": None, "unknown": {"boot_storage": "access denied"}}, [(S, "")]),
    ("WIN-QEMU-GA", "missing-win11", "win11-en-US", {}, [(F, "QEMU-GA")]),
    ("WIN-QEMU-GA", "installed", "ws2025-en-US", {}, [(P, "QEMU-GA")]),
    ("WIN-QEMU-GA", "installed-manual-start", "ws2025-en-US", {"qemu_ga.start_mode": "Manual"}, [(F, "QEMU-GA")]),
    ("WIN-VIRTIO-MEDIA", "prepared-0.1.262", "ws2025-en-US", {}, [(P, "virtio-win")]),
    ("WIN-VIRTIO-MEDIA", "mixed-releases", "ws2025-en-US", {"driver_store.1.version": "100.94.104.24000"}, [(F, "virtio-win")]),
    ("WIN-VIRTIO-MEDIA", "nothing-staged", "ws2019-en-US", {}, [(S, "virtio-win")]),
    ("WIN-STATIC-IP", "two-static-nics", "ws2019-en-US", {}, [(F, "00:50:56:9a:10:01"), (F, "00:50:56:9a:10:02")]),
    ("WIN-STATIC-IP", "dhcp-de", "ws2016-de-DE", {}, [(P, "00:50:56:9a:20:02")]),
    ("WIN-STATIC-IP", "captured", "ws2025-en-US", {}, [(P, "00:50:56:9a:10:01")]),
    ("WIN-STATIC-IP", "japanese-adapter-name", "ws2022-ja-JP", {}, [(F, "00:50:56:9a:30:03")]),
    ("WIN-BITLOCKER", "protection-on", "ws2019-en-US", {}, [(F, "C:")]),
    ("WIN-BITLOCKER", "suspended-escrowed", "win11-en-US", {}, [(P, "C:")]),
    ("WIN-BITLOCKER", "suspended-not-escrowed", "win11-en-US", {"bitlocker.0.recovery_key_escrowed": None}, [(F, "C:")]),
    ("WIN-BITLOCKER", "no-volumes", "ws2016-de-DE", {}, [(P, "BitLocker")]),
    ("WIN-BITLOCKER", "feature-absent", "ws2012r2-en-US", {}, [(S, "")]),
    ("WIN-FAST-STARTUP", "both-on-ru", "win10-ru-RU", {}, [(F, "power")]),
    ("WIN-FAST-STARTUP", "fast-startup-only", "win11-en-US", {}, [(F, "power")]),
    ("WIN-FAST-STARTUP", "server-off", "ws2019-en-US", {}, [(P, "power")]),
    ("WIN-PENDING-REBOOT", "windows-update", "ws2016-de-DE", {}, [(F, "reboot")]),
    ("WIN-PENDING-REBOOT", "none", "ws2022-ja-JP", {}, [(P, "reboot")]),
    ("WIN-PARTITION-ALIGNMENT", "sector-63-data-disk", "ws2012r2-en-US", {}, [(P, "disk0/partition1"), (P, "disk0/partition2 (C:)"), (F, "disk1/partition1 (D:)")]),
    ("WIN-PARTITION-ALIGNMENT", "gpt-aligned", "ws2022-ja-JP", {}, [(P, "disk0/partition1"), (P, "disk0/partition2"), (P, "disk0/partition3"), (P, "disk0/partition4 (C:)")]),
    ("WIN-SYSTEM-FREE-SPACE", "80-mib-free", "win10-ru-RU", {}, [(F, "C:")]),
    ("WIN-SYSTEM-FREE-SPACE", "plenty", "ws2019-en-US", {}, [(P, "C:")]),
    ("WIN-SYSTEM-FREE-SPACE", "exactly-100-mib", "ws2019-en-US", {"volumes.0.free": 100 * MiB}, [(P, "C:")]),
    ("WIN-DEVICE-INSTALL-POLICY", "deny-virtio-ja", "ws2022-ja-JP", {}, [(F, "DeviceInstall\\Restrictions")]),
    ("WIN-DEVICE-INSTALL-POLICY", "no-policy", "ws2019-en-US", {}, [(P, "DeviceInstall\\Restrictions")]),
    ("WIN-DEVICE-INSTALL-POLICY", "deny-scsi-class", "ws2019-en-US", {"device_install_policy.deny_device_classes": ["{4D36E97B-E325-11CE-BFC1-08002BE10318}"]}, [(F, "DeviceInstall\\Restrictions")]),
    ("WIN-ANTIVIRUS", "symantec", "ws2012r2-en-US", {}, [(F, "Symantec Endpoint Protection")]),
    ("WIN-ANTIVIRUS", "defender-only", "ws2019-en-US", {}, [(P, "antivirus")]),
    ("WIN-ANTIVIRUS", "defender-and-crowdstrike", "ws2022-ja-JP", {}, [(F, "CrowdStrike Falcon")]),
    ("WIN-UEFI", "uefi", "ws2019-en-US", {}, [(F, "firmware")]),
    ("WIN-UEFI", "bios", "ws2016-de-DE", {}, [(P, "firmware")]),
    ("WIN-SECURE-BOOT", "on", "win11-en-US", {}, [(F, "secure-boot")]),
    ("WIN-SECURE-BOOT", "uefi-off", "ws2022-ja-JP", {}, [(P, "secure-boot")]),
    ("WIN-SECURE-BOOT", "unknown", "ws2022-ja-JP", {"firmware.secure_boot": None, "unknown": {"secure_boot": "command Confirm-SecureBootUEFI is not available"}}, [(S, "")]),
    ("WIN-VTPM", "tpm-2", "ws2019-en-US", {}, [(F, "TPM")]),
    ("WIN-VTPM", "no-tpm", "ws2012r2-en-US", {}, [(P, "TPM")]),
    ("WIN-SAN-POLICY", "offline-shared-with-data-disk", "ws2012r2-en-US", {}, [(F, "san-policy")]),
    ("WIN-SAN-POLICY", "online-all", "win10-ru-RU", {}, [(P, "san-policy")]),
    ("WIN-SAN-POLICY", "data-disk-offline-now", "ws2012r2-en-US", {"storage.san_policy": "OnlineAll", "storage.disks.1.is_offline": True}, [(F, "disk1"), (P, "san-policy")]),
    ("WIN-VIRTIO-WIN-SUPPORT", "2012r2-on-current", "ws2012r2-en-US", {}, [(F, "virtio-win 0.1.266")]),
    ("WIN-VIRTIO-WIN-SUPPORT", "2019-on-current", "ws2019-en-US", {}, [(P, "virtio-win 0.1.266")]),
    ("WIN-VIRTIO-WIN-SUPPORT", "2025-unknown-build", "ws2025-en-US", {"os.build": 27000}, [(F, "virtio-win 0.1.262")]),
    # the version read from the media (state.json) beats the default
    ("WIN-VIRTIO-WIN-SUPPORT", "2012r2-media-0.1.240", "ws2012r2-en-US", {"guestprep": {"virtio_win": {"version": "0.1.240", "source": "iso volume label virtio-win-0.1.240"}}}, [(P, "virtio-win 0.1.240")]),
    ("WIN-VMWARE-TOOLS", "installed-no-removal", "ws2016-de-DE", {}, [(F, "VMware Tools")]),
    ("WIN-VMWARE-TOOLS", "removal-scheduled", "ws2025-en-US", {}, [(P, "VMware Tools")]),
    ("WIN-VMWARE-TOOLS", "not-installed", "ws2025-en-US", {"vmware_tools": {"installed": False, "product_code": None, "version": None, "service_state": None}}, [(P, "VMware Tools")]),
    ("WIN-OS-SUPPORTED", "server-2008r2", "ws2008r2-en-US", {}, [(F, "Microsoft Windows Server 2008 R2 Standard")]),
    ("WIN-OS-SUPPORTED", "server-2012r2", "ws2012r2-en-US", {}, [(P, "Microsoft Windows Server 2012 R2 Standard")]),
    ("WIN-FIREWALL-PROFILE", "domain-profile", "ws2019-en-US", {}, [(F, "00:50:56:9a:10:01"), (P, "00:50:56:9a:10:02")]),
    ("WIN-FIREWALL-PROFILE", "already-public", "win10-ru-RU", {}, [(P, "00:0c:29:ab:cd:ef")]),
    # issue 12 "New checks" (guestprep/checks/windows/policy.py)
("WIN-EXECUTION-POLICY-GPO", "not-set-by-gpo", "ws2019-en-US", {}, [(P, "MachinePolicy"), (P, "SystemUserPolicy")]),
    ("WIN-EXECUTION-POLICY-GPO", "gpo-allsigned", "ws2022-ja-JP", {"execution_policy.MachinePolicy": "AllSigned"}, [(F, "MachinePolicy"), (P, "SystemUserPolicy")]),
    # the connecting account's UserPolicy does not bind the SYSTEM first-boot tasks: shown, never a failure
    ("WIN-EXECUTION-POLICY-GPO", "user-policy-restricted", "win10-ru-RU", {"execution_policy.UserPolicy": "Restricted"}, [(P, "MachinePolicy"), (P, "SystemUserPolicy"), (P, "UserPolicy")]),
    # 'Turn on Script Execution' disabled for SYSTEM's user policy (EnableScripts=0): Restricted for the tasks
    ("WIN-EXECUTION-POLICY-GPO", "system-user-policy-restricted", "ws2019-en-US", {"execution_policy.SystemUserPolicy": "Restricted"}, [(P, "MachinePolicy"), (F, "SystemUserPolicy")]),
    ("WIN-EXECUTION-POLICY-GPO", "remotesigned-by-gpo", "ws2016-de-DE", {"execution_policy.MachinePolicy": "RemoteSigned"}, [(P, "MachinePolicy"), (P, "SystemUserPolicy")]),
    # a collector from before SystemUserPolicy existed: that scope cannot be told, never passes
    ("WIN-EXECUTION-POLICY-GPO", "collector-without-system-scope", "ws2019-en-US", {"execution_policy": {"MachinePolicy": "Undefined", "UserPolicy": "Undefined", "LocalMachine": "RemoteSigned"}}, [(P, "MachinePolicy"), (S, "SystemUserPolicy")]),
    ("WIN-EXECUTION-POLICY-GPO", "unknown", "ws2019-en-US", {"execution_policy": None, "unknown": {"execution_policy": "command Get-ExecutionPolicy is not available"}}, [(S, "")]),
    ("WIN-BITLOCKER-RECOVERY-PASSWORD", "tpm-and-recovery-password", "ws2019-en-US", {}, [(P, "C:")]),
    ("WIN-BITLOCKER-RECOVERY-PASSWORD", "tpm-only", "win11-en-US", {"bitlocker.0.protectors": ["Tpm"]}, [(F, "C:")]),
    ("WIN-BITLOCKER-RECOVERY-PASSWORD", "tpm-pin-and-decrypted-data", "ws2019-en-US", lambda d: d["bitlocker"].__setitem__(slice(None), [dict(d["bitlocker"][0], protectors=["TpmPin"]), {"mount": "D:", "protection_status": "Off", "volume_status": "FullyDecrypted", "encryption_percentage": 0, "protectors": [], "recovery_key_escrowed": None}]), [(F, "C:"), (P, "D:")]),
    ("WIN-BITLOCKER-RECOVERY-PASSWORD", "feature-absent", "ws2012r2-en-US", {}, [(S, "")]),
    ("WIN-DOMAIN-CONTROLLER", "member-server", "ws2019-en-US", {}, [(P, "domain-controller")]),
    ("WIN-DOMAIN-CONTROLLER", "dc", "ws2025-en-US", {"os.product_type": 2, "domain.role": 5}, [(F, "domain-controller")]),
    ("WIN-DOMAIN-CONTROLLER", "product-type-unknown", "ws2019-en-US", {"os.product_type": None}, [(S, "")]),
    ("WIN-LANGUAGE-MODE", "full", "ws2019-en-US", {}, [(P, "language-mode")]),
    ("WIN-LANGUAGE-MODE", "constrained", "win11-en-US", {"language_mode": "ConstrainedLanguage"}, [(F, "language-mode")]),
    ("WIN-LANGUAGE-MODE", "not-reported", "ws2019-en-US", {"language_mode": None, "unknown": {"language_mode": "access denied"}}, [(S, "")]),
    ("WIN-32BIT", "x86-win10", "win10x86-en-US", {}, [(F, "architecture")]),
    ("WIN-32BIT", "x64", "ws2022-ja-JP", {}, [(P, "architecture")]),
    ("WIN-32BIT", "architecture-not-reported", "ws2022-ja-JP", {"os.architecture": None}, [(S, "")]),
    # every check skips a guest the collector called unsupported
    ("WIN-STATIC-IP", "unsupported-guest-skips", "ws2008r2-en-US", {}, [(S, "")]),
]


def main() -> None:
    profs = profiles()
    for check_id, name, prof, mut, expect in CASES:
        facts = copy.deepcopy(profs[prof])
        if callable(mut):
            mut(facts)
        else:
            for path, value in mut.items():
                set_path(facts, path, value)
        d = OUT / check_id
        d.mkdir(parents=True, exist_ok=True)
        doc = {"profile": prof, "facts": facts, "expect": [{"status": s, "resource": r} for s, r in expect]}
        (d / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(len(CASES), "fixtures")


if __name__ == "__main__":
    main()
