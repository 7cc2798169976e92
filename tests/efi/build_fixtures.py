"""Write the EFI check fixtures (tests/checks/LNX-EFI-*/, WIN-EFI-*/) from representative ESP layouts.

Layouts follow what each distribution installs: Debian/Ubuntu (shim-signed + grub-efi-amd64-signed
under \\EFI\\debian or \\EFI\\ubuntu, no \\EFI\\BOOT unless force_efi_extra_removable), RHEL 9
(shim-x64 ships \\EFI\\BOOT\\BOOTX64.EFI + fbx64.efi), SLES 15 (shim.efi + grub.efi under
\\EFI\\sles), Windows Server 2019/2022 (bootmgfw.efi, and \\EFI\\Boot\\bootx64.efi from setup).
Hashes are stand-ins (sha256 of a name): only equality matters to the checks.

Run:  python tests/efi/build_fixtures.py   (rewrites the files; the tests read them)
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHECKS = ROOT / "checks"
WIN_PROFILES = ROOT / "windows" / "guests"
FB = "\\EFI\\BOOT\\BOOTX64.EFI"


def h(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def files(layout: dict[str, str]) -> str:
    """{esp-relative path: content name} -> the collector's SIZE<TAB>SHA256<TAB>PATH lines."""
    out = []
    for path, content in layout.items():
        sha = h(content) if path.lower().endswith(".efi") else "-"
        out.append(f"{1000 + len(content) * 7919 % 900000}\t{sha}\t{path}")
    return "\n".join(out)


def efibootmgr(current: str, entries: list[tuple[str, str, str]]) -> dict:
    lines = [f"BootCurrent: {current}", "Timeout: 0 seconds",
             "BootOrder: " + ",".join(e[0] for e in entries)]
    for num, label, loader in entries:
        lines.append(f"Boot{num}* {label}\tHD(1,GPT,6a8e8c5e-5a8b-4a5c-9d2f-1c2b3a4d5e6f,0x800,0x100000)/"
                     f"File({loader})")
    lines.append("Boot0000* UiApp\tFvVol(7cb8bdc9-f8eb-4f34-aaea-3ee4af6516a1)/FvFile(462caa21-7614-4503-836e-8ab6f4662331)")
    return {"rc": 0, "out": "\n".join(lines), "err": ""}


def efi_member(layout: dict[str, str], secure_boot: bool | None, ebm: dict, **extra) -> dict:
    return {"firmware": "uefi", "secure_boot": {True: "1", False: "0", None: ""}[secure_boot],
            "esp_mount": "/boot/efi", "esp_device": "/dev/sda1", "files": files(layout),
            "df": {"rc": 0, "out": "Filesystem 1024-blocks Used Available Capacity Mounted on\n"
                                   "/dev/sda1 523248 6192 517056 2% /boot/efi", "err": ""},
            "efibootmgr": ebm, "mokutil": {"rc": 127, "out": "", "err": "mokutil: command not found"},
            "grub_install": "", "grub_efi_modules": "0", "grub_efi_signed": "0", **extra}


DEBIAN = {"EFI/debian/shimx64.efi": "debian-shim-15.7", "EFI/debian/grubx64.efi": "debian-grub-2.06-13",
          "EFI/debian/mmx64.efi": "debian-mm-15.7", "EFI/debian/fbx64.efi": "debian-fb-15.7",
          "EFI/debian/BOOTX64.CSV": "csv", "EFI/debian/grub.cfg": "cfg"}
DEBIAN_FB = {"EFI/BOOT/BOOTX64.EFI": "debian-shim-15.7", "EFI/BOOT/grubx64.efi": "debian-grub-2.06-13",
             "EFI/BOOT/mmx64.efi": "debian-mm-15.7", "EFI/BOOT/grub.cfg": "cfg"}
DEBIAN_TOOLS = {"grub_install": "/usr/sbin/grub-install", "grub_efi_modules": "1", "grub_efi_signed": "1"}
UBUNTU = {k.replace("debian", "ubuntu"): v.replace("debian", "ubuntu") for k, v in DEBIAN.items()}
RHEL = {"EFI/redhat/shimx64.efi": "rhel-shim-15.8", "EFI/redhat/grubx64.efi": "rhel-grub-2.06-77",
        "EFI/redhat/mmx64.efi": "rhel-mm-15.8", "EFI/redhat/BOOTX64.CSV": "csv", "EFI/redhat/grub.cfg": "cfg",
        "EFI/BOOT/BOOTX64.EFI": "rhel-shim-15.8", "EFI/BOOT/fbx64.efi": "rhel-fb-15.8"}
SLES = {"EFI/sles/shim.efi": "sles-shim-15.8", "EFI/sles/grub.efi": "sles-grub-2.06",
        "EFI/sles/MokManager.efi": "sles-mm", "EFI/sles/boot.csv": "csv", "EFI/sles/grub.cfg": "cfg"}
SLES_FB = {"EFI/BOOT/bootx64.efi": "sles-shim-15.8", "EFI/BOOT/grub.efi": "sles-grub-2.06",
           "EFI/BOOT/MokManager.efi": "sles-mm", "EFI/BOOT/fallback.efi": "sles-fb"}

DEB_NVRAM = efibootmgr("0004", [("0004", "debian", "\\EFI\\debian\\shimx64.efi")])
UBU_NVRAM = efibootmgr("0003", [("0003", "ubuntu", "\\EFI\\ubuntu\\shimx64.efi")])
RHEL_NVRAM = efibootmgr("0002", [("0002", "Red Hat Enterprise Linux", "\\EFI\\redhat\\shimx64.efi")])
SLES_NVRAM = efibootmgr("0001", [("0001", "sles-secureboot", "\\EFI\\sles\\shim.efi")])


def uefi_id(sb: bool | None) -> dict:
    return {"efi": "1", "secure_boot": {True: "1", False: "0", None: ""}[sb]}


def linux_cases() -> dict[str, dict]:
    """name -> (base facts fixture, patch, {check id: expected [(status, resource)]})."""
    skip_bios = [("skipped", "")]
    cases = {
        "debian12-shim-no-fallback": ("debian12-dracut-hostonly-vmware", uefi_id(True),
                                      efi_member(DEBIAN, True, DEB_NVRAM, **DEBIAN_TOOLS),
                                      {"LNX-EFI-FALLBACK": [("fail", FB)], "LNX-EFI-FALLBACK-STALE": [("skipped", FB)],
                                       "LNX-EFI-SHIM": [("fail", FB)]}),
        "debian12-force-extra-removable-passes": ("debian12-dracut-hostonly-vmware", uefi_id(True),
                                                  efi_member({**DEBIAN, **DEBIAN_FB}, True, DEB_NVRAM, **DEBIAN_TOOLS),
                                                  {"LNX-EFI-FALLBACK": [("pass", FB)],
                                                   "LNX-EFI-FALLBACK-STALE": [("pass", FB)],
                                                   "LNX-EFI-SHIM": [("pass", FB)]}),
        "debian12-unsigned-grub-fallback-secure-boot": (
            "debian12-dracut-hostonly-vmware", uefi_id(True),
            efi_member({**DEBIAN, "EFI/BOOT/BOOTX64.EFI": "debian-grub-2.06-13"}, True, DEB_NVRAM),
            {"LNX-EFI-FALLBACK": [("pass", FB)], "LNX-EFI-FALLBACK-STALE": [("pass", FB)],
             "LNX-EFI-SHIM": [("fail", FB)]}),
        "debian12-bios-skipped": ("debian12-dracut-hostonly-vmware", {}, None,
                                  {"LNX-EFI-FALLBACK": skip_bios, "LNX-EFI-FALLBACK-STALE": skip_bios,
                                   "LNX-EFI-SHIM": skip_bios}),
        "ubuntu2204-stale-shim-secure-boot-off": (
            "ubuntu2204-initramfs-tools-netplan", uefi_id(False),
            efi_member({**UBUNTU, "EFI/BOOT/BOOTX64.EFI": "ubuntu-shim-15.4-old", "EFI/BOOT/grubx64.efi": "old-grub"},
                       False, UBU_NVRAM),
            {"LNX-EFI-FALLBACK": [("pass", FB)], "LNX-EFI-FALLBACK-STALE": [("fail", FB)],
             "LNX-EFI-SHIM": [("skipped", "secure-boot")]}),
        "ubuntu2204-shim-with-old-grub-beside": (
            "ubuntu2204-initramfs-tools-netplan", uefi_id(True),
            efi_member({**UBUNTU, "EFI/BOOT/BOOTX64.EFI": "ubuntu-shim-15.7", "EFI/BOOT/grubx64.efi": "old-grub",
                        "EFI/BOOT/mmx64.efi": "ubuntu-mm-15.7"}, True, UBU_NVRAM),
            {"LNX-EFI-FALLBACK": [("pass", FB)], "LNX-EFI-FALLBACK-STALE": [("fail", FB)],
             "LNX-EFI-SHIM": [("pass", FB)]}),
        "rhel9-shim-x64-fallback-passes": ("rhel9-dracut-hostonly-uefi-lvm", uefi_id(True),
                                           efi_member(RHEL, True, RHEL_NVRAM),
                                           {"LNX-EFI-FALLBACK": [("pass", FB)],
                                            "LNX-EFI-FALLBACK-STALE": [("pass", FB)],
                                            "LNX-EFI-SHIM": [("pass", FB)]}),
        "rhel9-boot-dir-removed": ("rhel9-dracut-hostonly-uefi-lvm", uefi_id(True),
                                   efi_member({k: v for k, v in RHEL.items() if "/BOOT/" not in k}, True, RHEL_NVRAM),
                                   {"LNX-EFI-FALLBACK": [("fail", FB)], "LNX-EFI-FALLBACK-STALE": [("skipped", FB)],
                                    "LNX-EFI-SHIM": [("fail", FB)]}),
        "rhel9-older-collector-errors": ("rhel9-dracut-hostonly-uefi-lvm", uefi_id(True), None,
                                         {"LNX-EFI-FALLBACK": [("error", "ESP")],
                                          "LNX-EFI-FALLBACK-STALE": [("error", "ESP")],
                                          "LNX-EFI-SHIM": [("error", "ESP")]}),
        "rhel9-nvram-unreadable-matches-any-loader": (
            "rhel9-dracut-hostonly-uefi-lvm", uefi_id(None),
            efi_member(RHEL, None, {"rc": 2, "out": "", "err": "EFI variables are not supported on this system."}),
            {"LNX-EFI-FALLBACK": [("pass", FB)], "LNX-EFI-FALLBACK-STALE": [("pass", FB)],
             "LNX-EFI-SHIM": [("error", "secure-boot")]}),
        "sles15-shim-no-fallback": ("sles15-dracut-devnames", uefi_id(True), efi_member(SLES, True, SLES_NVRAM),
                                    {"LNX-EFI-FALLBACK": [("fail", FB)], "LNX-EFI-FALLBACK-STALE": [("skipped", FB)],
                                     "LNX-EFI-SHIM": [("fail", FB)]}),
        "sles15-shim-fallback-passes": ("sles15-dracut-devnames", uefi_id(True),
                                        efi_member({**SLES, **SLES_FB}, True, SLES_NVRAM),
                                        {"LNX-EFI-FALLBACK": [("pass", FB)], "LNX-EFI-FALLBACK-STALE": [("pass", FB)],
                                         "LNX-EFI-SHIM": [("pass", FB)]}),
    }
    return cases


def write_linux() -> list[Path]:
    written = []
    for name, (base, id_patch, efi, expect) in linux_cases().items():
        patch: dict = {}
        if id_patch:
            patch["id"] = id_patch
        patch["efi"] = efi if efi is not None else None  # null removes it (an older collector)
        for cid, outcomes in expect.items():
            p = CHECKS / cid / f"{name}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            doc = {"description": name, "base": base, "patch": patch,
                   "expect": [{"status": s, "resource": r} for s, r in outcomes]}
            p.write_text(json.dumps(doc, indent=1) + "\n")
            written.append(p)
    return written


# --------------------------------------------------------------------------- Windows

WIN_FB = "\\EFI\\Boot\\bootx64.efi"
BCDEDIT = """Firmware Boot Manager
---------------------
identifier              {fwbootmgr}
displayorder            {bootmgr}
                        {1f2e3d4c-0000-11ee-9a0b-000c29aabbcc}
timeout                 0

Windows Boot Manager
--------------------
identifier              {bootmgr}
device                  partition=\\Device\\HarddiskVolume1
path                    \\EFI\\Microsoft\\Boot\\bootmgfw.efi
description             Windows Boot Manager
locale                  en-US

Firmware Application (101fffff)
-------------------------------
identifier              {1f2e3d4c-0000-11ee-9a0b-000c29aabbcc}
description             EFI Network
"""


def win_efi(files_: dict[str, str], secure_boot: bool) -> dict:
    return {"firmware": "uefi", "secure_boot": secure_boot,
            "esp": {"disk": 0, "partition": 1, "size": 104857600, "free": 73400320,
                    "access_path": "\\\\?\\Volume{0a1b2c3d-0000-0000-0000-100000000000}\\"},
            "files": [{"path": "\\" + p.replace("/", "\\"), "size": 1000 + len(c) * 31,
                       "sha256": h(c) if p.lower().endswith(".efi") else None} for p, c in files_.items()],
            "bcdedit": {"rc": 0, "out": BCDEDIT, "err": ""}, "unknown": {}}


WIN_BASE = {"EFI/Microsoft/Boot/bootmgfw.efi": "bootmgfw-{v}", "EFI/Microsoft/Boot/bootmgr.efi": "bootmgr-{v}",
            "EFI/Microsoft/Boot/memtest.efi": "memtest", "EFI/Microsoft/Boot/BCD": "bcd"}


def win_layout(v: str, fallback: str | None) -> dict[str, str]:
    out = {k: c.format(v=v) for k, c in WIN_BASE.items()}
    if fallback:
        out["EFI/Boot/bootx64.efi"] = fallback.format(v=v)
    return out


def windows_cases() -> dict[str, tuple]:
    return {
        "ws2019-setup-fallback-passes": ("ws2019-en-US", win_efi(win_layout("17763", "bootmgfw-{v}"), True),
                                         {"WIN-EFI-FALLBACK": [("pass", WIN_FB)],
                                          "WIN-EFI-FALLBACK-STALE": [("pass", WIN_FB)]}),
        "ws2019-fallback-deleted": ("ws2019-en-US", win_efi(win_layout("17763", None), False),
                                    {"WIN-EFI-FALLBACK": [("fail", WIN_FB)],
                                     "WIN-EFI-FALLBACK-STALE": [("skipped", WIN_FB)]}),
        "ws2022-stale-after-servicing": ("ws2022-ja-JP", win_efi(win_layout("20348.2340", "bootmgfw-20348.1"), True),
                                         {"WIN-EFI-FALLBACK": [("pass", WIN_FB)],
                                          "WIN-EFI-FALLBACK-STALE": [("fail", WIN_FB)]}),
        "ws2022-fallback-deleted": ("ws2022-ja-JP", win_efi(win_layout("20348.2340", None), True),
                                    {"WIN-EFI-FALLBACK": [("fail", WIN_FB)],
                                     "WIN-EFI-FALLBACK-STALE": [("skipped", WIN_FB)]}),
        "ws2022-no-efi-section-errors": ("ws2022-ja-JP", None,
                                         {"WIN-EFI-FALLBACK": [("error", "ESP")],
                                          "WIN-EFI-FALLBACK-STALE": [("error", "ESP")]}),
    }


def write_windows() -> list[Path]:
    written = []
    for name, (profile, efi, expect) in windows_cases().items():
        prof = json.loads((WIN_PROFILES / f"{profile}.json").read_text(encoding="utf-8"))
        facts = copy.deepcopy(prof.get("facts", prof))
        facts["firmware"] = {"type": "uefi", "secure_boot": bool(efi and efi["secure_boot"])}
        facts.pop("efi", None)  # the profile's own ESP layout is replaced by this case's (or none at all)
        if efi is not None:
            facts["efi"] = efi
        for cid, outcomes in expect.items():
            p = CHECKS / cid / f"{name}.json"
            p.parent.mkdir(parents=True, exist_ok=True)
            doc = {"profile": profile, "facts": facts, "expect": [{"status": s, "resource": r} for s, r in outcomes]}
            p.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
            written.append(p)
    return written


if __name__ == "__main__":
    for p in write_linux() + write_windows():
        print(p.relative_to(ROOT.parent))
