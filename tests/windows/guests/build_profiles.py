"""Regenerate the representative collector outputs in this folder (run by hand, output committed).

Each profile is what guest_scripts/windows/collect.ps1 prints on one kind of guest.
They are representative, not captured from real machines (no Windows runs here):
values follow the shapes Windows returns (Win32_* classes, Get-Disk, registry values).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parents[2]))
# the prepared profile's driver files are the model's bytes, so their SHA-256 match what it renders
from tests.windows.wsman_server.guest import driver_file_bytes, driver_ver  # noqa: E402
MiB, GiB = 1 << 20, 1 << 30


def base(hostname: str, caption: str, version: str, build: int, **os_extra) -> dict:
    return {
        "schema": "guestprep.windows.facts/1", "supported": True, "unsupported_reason": None,
        "hostname": hostname, "ps_version": "5.1.17763.5830",
        "os": {"caption": caption, "version": version, "build": build, "ubr": 1000, "edition": "ServerStandard",
               "product_type": 3, "installation_type": "Server", "locale": "en-US", "architecture": "64-bit",
               "system_drive": "C:", **os_extra},
        "firmware": {"type": "bios", "secure_boot": False},
        "efi": None,   # collect.ps1 prints the ESP member for UEFI guests only (see esp())
        "tpm": {"present": False, "version": None},
        "bitlocker": [],
        "storage": {"san_policy": "OfflineShared", "disks": [
            {"number": 0, "size": 60 * GiB, "friendly_name": "VMware Virtual disk SCSI Disk Device", "bus_type": "SAS",
             "partition_style": "MBR", "is_boot": True, "is_system": True, "is_offline": False, "is_read_only": False,
             "logical_sector_size": 512, "partitions": [
                 {"number": 1, "offset": 1 * MiB, "size": 500 * MiB, "drive_letter": None, "type": "IFS"},
                 {"number": 2, "offset": 501 * MiB, "size": 60 * GiB - 502 * MiB, "drive_letter": "C", "type": "IFS"}]}]},
        "volumes": [{"drive_letter": "C", "size": 60 * GiB - 502 * MiB, "free": 21 * GiB, "file_system": "NTFS", "label": ""}],
        "driver_store": [],
        "services": {"vioscsi": None, "viostor": None, "netkvm": None, "vioser": None, "balloon": None},
        "boot_storage": {n: {"service": None, "file": {"path": f"C:\\Windows\\System32\\drivers\\{n}.sys", "present": False,
                                                       "sha256": None}, "device_ids": [], "critical_device_database": []}
                         for n in ("vioscsi", "viostor")},
        "qemu_ga": {"installed": False, "state": None, "start_mode": None},
        "vmware_tools": {"installed": True, "product_code": "{A0BB5E85-0D37-4D2D-B1CB-F41E1B0D2A7F}",
                         "version": "12.3.5.22544099", "service_state": "Running"},
        "pending_reboot": {"pending": False, "reasons": []},
        "power": {"fast_startup": False, "hibernation": False},
        "network": {"adapters": [
            {"name": "Ethernet0", "description": "vmxnet3 Ethernet Adapter", "mac": "00:50:56:9A:10:01",
             "interface_index": 4, "dhcp": False, "ipv4": [{"address": "10.20.0.15", "prefix": 24}], "ipv6": [],
             "gateways": ["10.20.0.1"], "dns": ["10.20.0.10", "10.20.0.11"], "static_dns": True,
             "dns_suffix": "corp.example", "profile": "DomainAuthenticated", "network_name": "corp.example"}],
            "routes": [{"destination": "0.0.0.0/0", "next_hop": "10.20.0.1", "interface_index": None, "metric": 0, "persistent": True}]},
        "firewall": {"Domain": True, "Private": True, "Public": True},
        "device_install_policy": {"deny_unspecified": False, "deny_removable": False, "deny_device_ids": [],
                                  "deny_device_classes": [], "allow_admin_install": False},
        "antivirus": [{"name": "Microsoft Defender Antivirus", "service": "WinDefend", "state": "Running", "vendor_microsoft": True}],
        "domain": {"part_of_domain": True, "domain": "corp.example", "workgroup": None, "role": 3,
                   "manufacturer": "VMware, Inc.", "model": "VMware7,1"},
        "execution_policy": {"MachinePolicy": "Undefined", "UserPolicy": "Undefined", "LocalMachine": "RemoteSigned",
                             "SystemUserPolicy": "Undefined"},
        "language_mode": "FullLanguage",
        "guestprep": None, "unknown": {},
    }


def uefi(p: dict, secure_boot: bool = True, tpm: bool = False) -> None:
    p["firmware"] = {"type": "uefi", "secure_boot": secure_boot}
    p["tpm"] = {"present": tpm, "version": "2.0" if tpm else None}
    d0 = p["storage"]["disks"][0]
    d0["partition_style"] = "GPT"
    d0["partitions"] = [
        {"number": 1, "offset": 1 * MiB, "size": 499 * MiB, "drive_letter": None, "type": "Recovery"},
        {"number": 2, "offset": 500 * MiB, "size": 99 * MiB, "drive_letter": None, "type": "System"},
        {"number": 3, "offset": 599 * MiB, "size": 16 * MiB, "drive_letter": None, "type": "Reserved"},
        {"number": 4, "offset": 615 * MiB, "size": 60 * GiB - 616 * MiB, "drive_letter": "C", "type": "Basic"}]


def esp(p: dict, sha: str) -> None:
    """The collector's `efi` member (UEFI guests: collect.ps1's Get-EfiFacts): ESP files and bcdedit."""
    files = [("\\EFI\\Microsoft\\Boot\\bootmgfw.efi", 1548736, sha), ("\\EFI\\Microsoft\\Boot\\BCD", 32768, None),
             ("\\EFI\\Boot\\bootx64.efi", 1548736, sha)]
    p["efi"] = {
        "firmware": "uefi", "secure_boot": p["firmware"]["secure_boot"],
        "esp": {"disk": 0, "partition": 2, "size": 99 * MiB, "free": 70 * MiB,
                "access_path": "\\\\?\\Volume{0a1b2c3d-0000-0000-0000-100000000000}\\"},
        "files": [{"path": a, "size": b, "sha256": c} for a, b, c in files],
        "bcdedit": {"rc": 0, "err": "", "out": (
            "Windows Boot Manager\n--------------------\nidentifier              {bootmgr}\n"
            "device                  partition=\\Device\\HarddiskVolume2\n"
            "path                    \\EFI\\Microsoft\\Boot\\bootmgfw.efi\ndescription             Windows Boot Manager\n")},
        "unknown": {},
    }


def prepared(p: dict, version: str = "0.1.262", os_dir: str = "2k25") -> None:
    """What a guest looks like after `guestprep prepare --apply` (collect.ps1's view)."""
    ver = driver_ver(version)
    p["driver_store"] = [{"inf": f"oem{n}.inf", "original_name": f"{name}.inf", "provider": None,
                          "version": ver, "class": None, "folder": f"{name}.inf_amd64_{n:016x}", "arch": "amd64"}
                         for n, name in enumerate(["vioscsi", "viostor", "netkvm", "vioser", "balloon"], 3)]
    ids = {"vioscsi": ["PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01"],
           "viostor": ["PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"]}
    for n, name in enumerate(("vioscsi", "viostor"), 3):
        sys_ = driver_file_bytes(name, "amd64", os_dir, version)
        p["boot_storage"][name] = {
            "service": {"type": 1, "start": 0, "error_control": 1, "group": "SCSI miniport",
                        "image_path": f"System32\\drivers\\{name}.sys"},
            "file": {"path": f"C:\\Windows\\System32\\drivers\\{name}.sys", "present": True,
                     "sha256": hashlib.sha256(sys_).hexdigest()},
            "device_ids": [{"id": i, "infs": [f"oem{n}.inf"]} for i in ids[name]], "critical_device_database": []}
    p["guestprep"] = {"virtio_win": {"version": version, "source": f"iso volume label virtio-win-{version}",
                                     "media": "C:\\ProgramData\\guestprep\\media\\virtio-win.iso", "sha256": "ab" * 32}}
    p["services"] = {
        "vioscsi": {"start": 0, "image_path": "System32\\drivers\\vioscsi.sys", "group": "SCSI miniport"},
        "viostor": {"start": 0, "image_path": "System32\\drivers\\viostor.sys", "group": "SCSI miniport"},
        "netkvm": {"start": 3, "image_path": "System32\\drivers\\netkvm.sys", "group": "NDIS"},
        "vioser": {"start": 3, "image_path": "System32\\drivers\\vioser.sys", "group": None},
        "balloon": {"start": 3, "image_path": "System32\\drivers\\balloon.sys", "group": None}}
    p["qemu_ga"] = {"installed": True, "state": "Stopped", "start_mode": "Auto"}
    p["storage"]["san_policy"] = "OnlineAll"
    mac = p["network"]["adapters"][0]["mac"].lower()
    p["guestprep"].update({"network_capture": {"macs": [mac], "task": "guestprep-restore-network"},
                      "vmware_tools_removal": {"task": "guestprep-remove-vmware-tools",
                                               "product_code": p["vmware_tools"]["product_code"]}})


def profiles() -> dict[str, dict]:
    out: dict[str, dict] = {}

    p = base("FS-LEGACY01", "Microsoft Windows Server 2012 R2 Standard", "6.3.9600", 9600)
    p["ps_version"] = "4.0"
    p["os"]["ubr"] = 21620
    # a data disk carried over from a Windows 2003 era array: 63-sector start
    p["storage"]["disks"].append({
        "number": 1, "size": 200 * GiB, "friendly_name": "VMware Virtual disk SCSI Disk Device", "bus_type": "SAS",
        "partition_style": "MBR", "is_boot": False, "is_system": False, "is_offline": False, "is_read_only": False,
        "logical_sector_size": 512, "partitions": [{"number": 1, "offset": 32256, "size": 200 * GiB - 32256,
                                                    "drive_letter": "D", "type": "IFS"}]})
    p["volumes"].append({"drive_letter": "D", "size": 200 * GiB - 32256, "free": 80 * GiB, "file_system": "NTFS", "label": "Daten"})
    p["unknown"] = {"bitlocker": "command Get-BitLockerVolume is not available"}
    p["bitlocker"] = None
    p["antivirus"] = [{"name": "Symantec Endpoint Protection", "service": "SepMasterService", "state": "Running", "vendor_microsoft": False}]
    out["ws2012r2-en-US"] = p

    p = base("APP-DE-2016", "Microsoft Windows Server 2016 Datacenter", "10.0.14393", 14393, edition="ServerDatacenter", locale="de-DE")
    p["ps_version"] = "5.1.14393.6343"
    p["pending_reboot"] = {"pending": True, "reasons": ["windows-update", "pending-file-rename"]}
    p["network"]["adapters"][0].update({"name": "Ethernet0", "dhcp": True, "static_dns": False, "profile": "Private",
                                        "network_name": "Netzwerk 2",
                                        "dns_suffix": None, "ipv4": [{"address": "192.168.40.23", "prefix": 24}],
                                        "gateways": ["192.168.40.1"], "dns": ["192.168.40.1"], "mac": "00-50-56-9A-20-02"})
    p["domain"] = {"part_of_domain": False, "domain": None, "workgroup": "ARBEITSGRUPPE", "role": 2,
                   "manufacturer": "VMware, Inc.", "model": "VMware Virtual Platform"}
    out["ws2016-de-DE"] = p

    p = base("SQL-PROD-19", "Microsoft Windows Server 2019 Standard", "10.0.17763", 17763)
    uefi(p, secure_boot=True, tpm=True)
    p["bitlocker"] = [{"mount": "C:", "protection_status": "On", "volume_status": "FullyEncrypted",
                       "encryption_percentage": 100, "protectors": ["Tpm", "RecoveryPassword"], "recovery_key_escrowed": None}]
    p["network"]["adapters"].append({"name": "Ethernet1", "description": "vmxnet3 Ethernet Adapter #2", "mac": "00:50:56:9a:10:02",
                                     "interface_index": 7, "dhcp": False, "ipv4": [{"address": "10.99.0.15", "prefix": 24}],
                                     "ipv6": [], "gateways": [], "dns": [], "static_dns": False, "dns_suffix": None,
                                     "profile": "Public",
                                     "network_name": "Unidentified network"})
    p["network"]["routes"].append({"destination": "10.200.0.0/16", "next_hop": "10.99.0.1", "interface_index": None,
                                   "metric": 10, "persistent": True})
    out["ws2019-en-US"] = p

    p = base("WEB-JP-22", "Microsoft Windows Server 2022 Standard", "10.0.20348", 20348, locale="ja-JP")
    p["ps_version"] = "5.1.20348.2582"
    uefi(p, secure_boot=False)
    p["network"]["adapters"][0].update({"name": "イーサネット", "network_name": "ネットワーク", "profile": "Private",
                                        "description": "vmxnet3 Ethernet Adapter", "mac": "00:50:56:9a:30:03"})
    p["device_install_policy"] = {"deny_unspecified": True, "deny_removable": False,
                                  "deny_device_ids": ["PCI\\VEN_1AF4&DEV_1004"], "deny_device_classes": [],
                                  "allow_admin_install": False}
    p["antivirus"].append({"name": "CrowdStrike Falcon", "service": "CSFalconService", "state": "Running", "vendor_microsoft": False})
    p["hostname"] = "WEB-JP-22"
    out["ws2022-ja-JP"] = p

    p = base("DC-2025", "Microsoft Windows Server 2025 Datacenter", "10.0.26100", 26100, edition="ServerDatacenter")
    p["ps_version"] = "5.1.26100.2161"
    uefi(p, secure_boot=True, tpm=False)
    prepared(p)
    out["ws2025-en-US"] = p

    p = base("PC-RU-10", "Майкрософт Windows 10 Pro", "10.0.19045", 19045, edition="Professional", product_type=1,
             installation_type="Client", locale="ru-RU")
    p["ps_version"] = "5.1.19041.4648"
    p["storage"]["san_policy"] = "OnlineAll"
    p["volumes"][0]["free"] = 80 * MiB
    p["volumes"][0]["label"] = "Системный"
    p["power"] = {"fast_startup": True, "hibernation": True}
    p["network"]["adapters"][0].update({"dhcp": True, "static_dns": False, "profile": "Public", "network_name": "Сеть",
                                        "mac": "00:0c:29:ab:cd:ef",
                                        "description": "Intel(R) 82574L Gigabit Network Connection"})
    p["domain"] = {"part_of_domain": False, "domain": None, "workgroup": "WORKGROUP", "role": 0,
                   "manufacturer": "VMware, Inc.", "model": "VMware7,1"}
    out["win10-ru-RU"] = p

    p = base("LAPTOP-W11", "Microsoft Windows 11 Enterprise", "10.0.22631", 22631, edition="Enterprise", product_type=1,
             installation_type="Client")
    p["ps_version"] = "5.1.22621.4391"
    uefi(p, secure_boot=True, tpm=True)
    p["storage"]["san_policy"] = "OnlineAll"
    p["bitlocker"] = [{"mount": "C:", "protection_status": "Off", "volume_status": "FullyEncrypted",
                       "encryption_percentage": 100, "protectors": ["Tpm", "RecoveryPassword"], "recovery_key_escrowed": True}]
    p["power"] = {"fast_startup": True, "hibernation": False}
    p["network"]["adapters"][0].update({"dhcp": True, "static_dns": False, "mac": "00:50:56:9a:40:04"})
    out["win11-en-US"] = p

    # a 32-bit Windows 10 (x86 drivers: <driver>\\w10\\x86, guest-agent\\qemu-ga-i386.msi)
    p = base("POS-W10-X86", "Microsoft Windows 10 Enterprise LTSC", "10.0.17763", 17763, edition="EnterpriseS",
             product_type=1, installation_type="Client", architecture="32-bit")
    p["ps_version"] = "5.1.17763.6414"
    p["storage"]["san_policy"] = "OnlineAll"
    p["network"]["adapters"][0].update({"dhcp": True, "static_dns": False, "mac": "00:50:56:9a:50:05", "profile": "Private"})
    p["domain"] = {"part_of_domain": False, "domain": None, "workgroup": "WORKGROUP", "role": 0,
                   "manufacturer": "VMware, Inc.", "model": "VMware7,1"}
    out["win10x86-en-US"] = p

    out["ws2008r2-en-US"] = {
        "schema": "guestprep.windows.facts/1", "supported": False,
        "unsupported_reason": "Windows 6.1.7601 is older than Windows Server 2012 / Windows 8 (6.2)",
        "hostname": "OLD-2008", "ps_version": "3.0",
        "os": {"caption": "Microsoft Windows Server 2008 R2 Standard", "version": "6.1.7601", "build": 7601, "ubr": None,
               "edition": "ServerStandard", "product_type": 3, "installation_type": "Server", "locale": "en-US",
               "architecture": "64-bit", "system_drive": "C:"}}
    # the same 2008 R2 without WMF 3.0: the bootstrap (WinRM) and the PSRP guard answer
    # "unsupported: PowerShell 2.0" before collect.ps1 could even be parsed
    out["ws2008r2-ps2"] = {**copy.deepcopy(out["ws2008r2-en-US"]), "ps_version": "2.0"}
    for name, prof in out.items():
        if (prof.get("firmware") or {}).get("type") == "uefi":
            esp(prof, _sha(name))
    return out


def _sha(seed: str) -> str:
    import hashlib

    return hashlib.sha256(("bootmgfw " + seed).encode()).hexdigest()


if __name__ == "__main__":
    for name, doc in profiles().items():
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(name)
