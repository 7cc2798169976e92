"""A fake Windows guest: answers guestprep's scripts and changes its state like Windows would.

It identifies a script by its ``# guestprep-script: NAME`` marker and simulates, from the
script's parameters, the primitive steps the real script performs (pnputil, msiexec,
Copy-Item, New-Item/New-ItemProperty, the journal in C:\\ProgramData\\guestprep), so that a
re-collect after ``apply`` shows the fix and ``rollback`` restores what the journal recorded.

The driver side is a model of Windows (``WindowsModel`` below): a registry tree
with typed values, files, the driver store with published oemNN.inf names, MSI packages, and
``boots_on(bus)``. Its rules follow documented Windows behaviour (each cites its source), so a
script that only stages drivers does not get a bootable guest here either.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from guestprep.connectors.windows_common import decode_command, parse_payload_line, script_marker
from tests.windows.wsman_server import network_model, powershell_model

GUESTS_DIR = Path(__file__).resolve().parents[1] / "guests"
JOURNAL = "C:\\ProgramData\\guestprep\\journal.json"
NETWORK_CAPTURE = "C:\\ProgramData\\guestprep\\network-capture.json"
RESTORE_SCRIPT = "C:\\ProgramData\\guestprep\\restore-network.ps1"

SERVICES_KEY = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\"
HIBERBOOT = ("HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Session Manager\\Power", "HiberbootEnabled")
HIBERNATE = ("HKLM:\\SYSTEM\\CurrentControlSet\\Control\\Power", "HibernateEnabled")
SANPOLICY = ("HKLM:\\SYSTEM\\CurrentControlSet\\Services\\partmgr\\Parameters", "SanPolicy")
SAN_CODES = {1: "OnlineAll", 2: "OfflineShared", 3: "OfflineAll", 4: "OfflineInternal"}


@dataclass
class ScriptResult:
    stdout: bytes
    stderr: bytes = b""
    rc: int = 0
    drop: bool = False


def clixml_error(message: str) -> bytes:
    """How powershell.exe writes an error record to stderr over WinRS."""
    parts = []
    for line in message.replace("\r\n", "\n").split("\n"):
        esc = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        parts.append(f'<S S="Error">{esc}_x000D__x000A_</S>')
    return ('#< CLIXML\r\n<Objs Version="1.1.0.1" xmlns="http://schemas.microsoft.com/powershell/2004/04">'
            + "".join(parts) + "</Objs>").encode("utf-8")


def load_profile(name: str) -> dict[str, Any]:
    return json.loads((GUESTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


# ====================================================================== the Windows model
# Rules and their public sources:
# [SVC]  Services registry tree: Type (1 = kernel driver), Start (0 boot ... 4 disabled),
#        ErrorControl, Group, ImagePath: learn.microsoft.com/windows-hardware/drivers/install/
#        hklm-system-currentcontrolset-services-registry-tree
# [ADDSVC] A service is created by an INF AddService directive, processed when the driver is
#        installed on a DEVICE (learn.microsoft.com/windows-hardware/drivers/install/inf-addservice-directive);
#        staging a package in the driver store installs it on no device, so creates no service and
#        copies no file to System32\drivers (.../install/driver-store).
# [PNPRC] pnputil return values: 0, 259 ERROR_NO_MORE_ITEMS (no device matched), 3010
#        (learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-return-values).
# [PNPSYN] pnputil syntax: /add-driver, /delete-driver from Windows 10 1607 (build 14393); -a, -d
#        before (learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-command-syntax). An
#        unknown verb prints the usage; its exit code is not documented: modelled as 87.
# [V2V]  Booting from a VirtIO disk needs, besides the service key and the .sys, the controller's
#        PCI ID mapped to the package: DriverDatabase\DeviceIds from Windows 8, the
#        CriticalDeviceDatabase before (libguestfs/virt-v2v convert/windows_virtio.ml,
#        add_guestor_to_registry / ddb_regedits / cdb_regedits).
# [ISO]  virtio-win ISO layout <driver>\<os_dir>\<arch>\, guest-agent\qemu-ga-x86_64.msi and
#        qemu-ga-i386.msi, virtio-win-gt-x64.msi / -x86.msi, volume label virtio-win-<version>
#        (virtio-win-pkg-scripts README; virt-v2v virtio_iso_path_matches_*).
# [MSI]  virtio-win-gt-*.msi installs the drivers through DIFx (staging; a device, if present, gets
#        them), no qemu-ga; the agent MSI creates the QEMU-GA service, automatic start
#        (virtio-win guest-tools README). msiexec: 1620 ERROR_INSTALL_PACKAGE_INVALID, 1633
#        ERROR_INSTALL_PLATFORM_UNSUPPORTED, 1605 unknown product
#        (learn.microsoft.com/windows/win32/msi/error-codes).
# [0x7B] Without a boot-start driver for the boot controller Windows stops with
#        INACCESSIBLE_BOOT_DEVICE (learn.microsoft.com/windows-hardware/drivers/debugger/
#        bug-check-0x7b--inaccessible-boot-device).

SYSROOT = "C:\\Windows"
DRIVERS_DIR = SYSROOT + "\\System32\\drivers"
REPO_DIR = SYSROOT + "\\System32\\DriverStore\\FileRepository"
INF_DIR = SYSROOT + "\\INF"
GUESTPREP_DIR = "C:\\ProgramData\\guestprep"
DDB = "HKLM\\SYSTEM\\DriverDatabase"
SVC = "HKLM\\SYSTEM\\CurrentControlSet\\Services"
CDD = "HKLM\\SYSTEM\\CurrentControlSet\\Control\\CriticalDeviceDatabase"
UNINSTALL = "HKLM\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall"
SCSI_CLASS = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
MEDIA_MAGIC = b"GUESTPREP-MODEL-MEDIA/1\n"
DEFAULT_VIRTIO_WIN = "0.1.266"
NO_MORE_ITEMS, REBOOT_REQUIRED = 259, 3010
MATRIX = json.loads((Path(__file__).resolve().parents[3] / "guestprep" / "data" / "virtio_win_matrix.json").read_text())

# PCI hardware IDs each controller presents, most specific first (PCI IDs: the PCI ID repository;
# virt-v2v's vioscsi_legacy_pciid & co. for the VirtIO ones)
CONTROLLER_IDS = {
    "virtio-scsi": ["PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4",
                    "PCI\\VEN_1AF4&DEV_1004&CC_010000", "PCI\\VEN_1AF4&DEV_1004"],
    "virtio-scsi-modern": ["PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01", "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4",
                           "PCI\\VEN_1AF4&DEV_1048&CC_010000", "PCI\\VEN_1AF4&DEV_1048"],
    "virtio-blk": ["PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4",
                   "PCI\\VEN_1AF4&DEV_1001&CC_010000", "PCI\\VEN_1AF4&DEV_1001"],
    "virtio-blk-modern": ["PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01", "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4",
                          "PCI\\VEN_1AF4&DEV_1042&CC_010000", "PCI\\VEN_1AF4&DEV_1042"],
}
# inbox / already-bound controllers: the service that drives them (bound today, so complete)
BOUND_CONTROLLERS = {"sata": "storahci", "pvscsi": "pvscsi"}
# what each virtio-win INF matches: its service and hardware IDs
VIRTIO_INFS = {
    "vioscsi": ("vioscsi", CONTROLLER_IDS["virtio-scsi"][:1] + CONTROLLER_IDS["virtio-scsi-modern"][:1]),
    "viostor": ("viostor", CONTROLLER_IDS["virtio-blk"][:1] + CONTROLLER_IDS["virtio-blk-modern"][:1]),
    "netkvm": ("netkvm", ["PCI\\VEN_1AF4&DEV_1000&SUBSYS_00011AF4&REV_00", "PCI\\VEN_1AF4&DEV_1041&SUBSYS_11001AF4&REV_01"]),
    "vioser": ("vioser", ["PCI\\VEN_1AF4&DEV_1003&SUBSYS_00031AF4&REV_00", "PCI\\VEN_1AF4&DEV_1043&SUBSYS_11001AF4&REV_01"]),
    "balloon": ("balloon", ["PCI\\VEN_1AF4&DEV_1002&SUBSYS_00051AF4&REV_00", "PCI\\VEN_1AF4&DEV_1045&SUBSYS_11001AF4&REV_01"]),
}
ISO_FOLDERS = {"vioscsi": "vioscsi", "viostor": "viostor", "netkvm": "NetKVM", "vioser": "vioserial", "balloon": "Balloon"}
# ISO os folder -> a build it stands for, and whether it is a client folder (x86 builds exist for clients only)
OS_DIRS = {"2k12R2": (9600, False), "w8.1": (9600, True), "2k16": (14393, False), "2k19": (17763, False),
           "w10": (19045, True), "2k22": (20348, False), "w11": (22631, True), "2k25": (26100, False)}


def _vkey(v: str) -> tuple[int, ...]:
    return tuple(int(x) for x in v.split("."))


def virtio_win_supports(version: str, build: int) -> bool:
    """The matrix (guestprep/data/virtio_win_matrix.json) decides which folders a release's ISO has."""
    for e in MATRIX["os"]:
        if e["builds"][0] <= build <= e["builds"][1]:
            return _vkey(e["first"]) <= _vkey(version) and (e["last"] is None or _vkey(version) <= _vkey(e["last"]))
    return False


def driver_ver(version: str) -> str:
    """The DriverVer a release's INFs carry (virtio-win 0.1.266 -> 100.95.104.26600 in this model)."""
    return f"100.95.104.{int(version.split('.')[-1]) * 100}"


def driver_file_bytes(name: str, arch: str, os_dir: str, version: str) -> bytes:
    return f"model {name}.sys for {os_dir} {arch}, virtio-win {version}\n".encode()


def inf_bytes(name: str, arch: str, os_dir: str, version: str) -> bytes:
    service, ids = VIRTIO_INFS[name]
    return (f"[Version]\r\nProvider=%VENDOR%\r\nDriverVer = 01/01/2025,{driver_ver(version)}\r\n"
            f"; model: {os_dir} {arch}; AddService = {service}\r\n" + "".join(f"; {i}\r\n" for i in ids)).encode()


def make_media(kind: str, version: str = DEFAULT_VIRTIO_WIN, arch: str = "amd64", pad: int = 4096) -> bytes:
    """Test media the model can open: kind iso | drivers-msi | agent-msi | guest-tools."""
    head = json.dumps({"kind": kind, "version": version, "arch": arch}).encode()
    return MEDIA_MAGIC + head + b"\n" + hashlib.sha256(head).digest() * (pad // 32)


def identify_media(path: str, data: bytes) -> dict[str, Any] | None:
    """What a media file is: its tag (make_media), else (random bytes from older tests) its
    published file name stands for its content."""
    if data.startswith(MEDIA_MAGIC):
        return json.loads(data[len(MEDIA_MAGIC):].split(b"\n", 1)[0])
    name = re.split(r"[\\/]", path)[-1].lower()
    by_name = {"virtio-win-gt-x64.msi": ("drivers-msi", "amd64"), "virtio-win-gt-x86.msi": ("drivers-msi", "x86"),
               "qemu-ga-x86_64.msi": ("agent-msi", "amd64"), "qemu-ga-i386.msi": ("agent-msi", "x86")}
    if name in by_name:
        return {"kind": by_name[name][0], "version": DEFAULT_VIRTIO_WIN, "arch": by_name[name][1]}
    if name.endswith(".iso"):
        return {"kind": "iso", "version": DEFAULT_VIRTIO_WIN, "arch": None}
    return None


def iso_files(version: str) -> dict[str, bytes]:
    """[ISO] the files of the virtio-win ISO of ``version`` the model knows about."""
    out: dict[str, bytes] = {}
    for os_dir, (build, client) in OS_DIRS.items():
        if not virtio_win_supports(version, build):
            continue
        for arch in ("amd64", "x86") if client else ("amd64",):
            for name, folder in ISO_FOLDERS.items():
                base = f"{folder}\\{os_dir}\\{arch}\\{name}"
                out[base + ".inf"] = inf_bytes(name, arch, os_dir, version)
                out[base + ".sys"] = driver_file_bytes(name, arch, os_dir, version)
                out[base + ".cat"] = b"catalog " + base.encode()
    out["guest-agent\\qemu-ga-x86_64.msi"] = make_media("agent-msi", version, "amd64")
    out["guest-agent\\qemu-ga-i386.msi"] = make_media("agent-msi", version, "x86")
    out["virtio-win-gt-x64.msi"] = make_media("drivers-msi", version, "amd64")
    out["virtio-win-gt-x86.msi"] = make_media("drivers-msi", version, "x86")
    return out


def product_code(kind: str, arch: str, version: str) -> str:
    return "{" + str(uuid.uuid5(uuid.NAMESPACE_URL, f"guestprep-model:{kind}:{arch}:{version}")).upper() + "}"


class Registry:
    """HKLM as a tree: keys (case-insensitive names) holding typed values (REG_DWORD ->
    "DWord", REG_SZ -> "String", REG_EXPAND_SZ -> "ExpandString", REG_MULTI_SZ -> "MultiString",
    REG_BINARY -> "Binary", PowerShell's -PropertyType names). A key exists only if created."""

    def __init__(self) -> None:
        self.keys: dict[str, dict[str, Any]] = {}

    @staticmethod
    def norm(path: str) -> str:
        p = path.replace("HKLM:\\", "HKLM\\").rstrip("\\")
        return p.lower()

    def exists(self, path: str) -> bool:
        return self.norm(path) in self.keys

    def create(self, path: str) -> list[str]:
        """New-Item -Force: creates the key and any missing parent; returns the keys created."""
        path = path.replace("HKLM:\\", "HKLM\\").rstrip("\\")
        parts = path.split("\\")
        made = []
        for i in range(2, len(parts) + 1):
            sub = "\\".join(parts[:i])
            if self.norm(sub) not in self.keys:
                self.keys[self.norm(sub)] = {"path": sub, "values": {}}
                made.append(sub)
        return made

    def get(self, path: str, name: str) -> Any:
        key = self.keys.get(self.norm(path))
        if key is None:
            return None
        v = key["values"].get(name.lower())
        return None if v is None else v[2]

    def type_of(self, path: str, name: str) -> str | None:
        key = self.keys.get(self.norm(path))
        v = key["values"].get(name.lower()) if key else None
        return None if v is None else v[1]

    def set(self, path: str, name: str, value: Any, type_: str = "DWord") -> None:
        """New-ItemProperty: the key must exist ("Cannot find path ... because it does not exist")."""
        key = self.keys.get(self.norm(path))
        if key is None:
            raise GuestError(f"Cannot find path '{path}' because it does not exist.")
        key["values"][name.lower()] = (name, type_, value)

    def delete_value(self, path: str, name: str) -> None:
        key = self.keys.get(self.norm(path))
        if key is not None:
            key["values"].pop(name.lower(), None)

    def delete_key(self, path: str) -> None:
        """Remove-Item -Recurse."""
        n = self.norm(path)
        for k in [k for k in self.keys if k == n or k.startswith(n + "\\")]:
            del self.keys[k]

    def subkeys(self, path: str) -> list[str]:
        n = self.norm(path)
        return sorted(v["path"].split("\\")[-1] for k, v in self.keys.items()
                      if k.startswith(n + "\\") and "\\" not in k[len(n) + 1:])

    def value_names(self, path: str) -> list[str]:
        key = self.keys.get(self.norm(path))
        return [] if key is None else [v[0] for v in key["values"].values()]

    def dump(self) -> dict[str, dict[str, Any]]:
        return {k: {n: (v[1], v[2]) for n, v in key["values"].items()} for k, key in sorted(self.keys.items())}


class WindowsModel:
    """The Windows the driver scripts act on: registry, files, driver store, MSI products,
    present PCI devices; primitive actions named after the commands the scripts run."""

    def __init__(self, build: int, arch: str, files: dict[str, bytes]):
        self.build = build
        self.arch = arch                  # amd64 | x86
        self.reg = Registry()
        self.files = files                # shared with the fake guest's uploads
        self.products: dict[str, dict[str, Any]] = {}   # product code -> what msiexec installed
        self.devices: list[str] = []      # hardware IDs of present devices (VMware: no VirtIO)
        self.in_use: set[str] = set()     # published names (oemNN.inf) a present device is using
        # keys every Windows of these versions has (the DriverDatabase hive exists from Windows 8 on)
        for key in (SVC, UNINSTALL, "HKLM\\SYSTEM\\CurrentControlSet\\Control"):
            self.reg.create(key)
        if build >= 9200:
            for sub in ("DriverPackages", "DriverInfFiles", "DeviceIds\\PCI"):
                self.reg.create(f"{DDB}\\{sub}")
        else:
            self.reg.create(CDD)

    # ------------------------------------------------------------ files
    def file_exists(self, path: str) -> bool:
        return any(k.lower() == path.lower() for k in self.files)

    def read_file(self, path: str) -> bytes | None:
        return next((v for k, v in self.files.items() if k.lower() == path.lower()), None)

    def delete_file(self, path: str) -> None:
        for k in [k for k in self.files if k.lower() == path.lower()]:
            del self.files[k]

    # ------------------------------------------------------------ driver store
    def staged_packages(self) -> list[dict[str, Any]]:
        """One entry per FileRepository folder, in staging order (published name from the DriverDatabase)."""
        out = []
        for folder in self.reg.subkeys(DDB + "\\DriverPackages"):
            out.append({"folder": folder, "published": self.reg.get(f"{DDB}\\DriverPackages\\{folder}", ""),
                        "inf": folder.split("_")[0], "arch": folder.split("_")[1],
                        "seq": self.reg.get(f"{DDB}\\DriverPackages\\{folder}", "ModelSeq") or 0})
        return sorted(out, key=lambda p: p["seq"])

    def stage(self, inf_name: str, arch: str, files: dict[str, bytes], published: str | None = None) -> str:
        """Import a package into the driver store [ADDSVC]: FileRepository folder, INF\\oemNN.inf,
        DriverDatabase\\DriverInfFiles + DriverPackages (+ Configurations, Descriptors). No service,
        nothing in System32\\drivers, and (conservatively) no DeviceIds mapping."""
        digest = hashlib.sha256(b"".join(files[k] for k in sorted(files))).hexdigest()[:16]
        folder = f"{inf_name.lower()}_{arch}_{digest}"
        existing = self.reg.get(f"{DDB}\\DriverPackages\\{folder}", "")
        if existing:
            return existing
        if published is None:
            used = {int(m.group(1)) for k in self.files if (m := re.match(r"(?i)^C:\\Windows\\INF\\oem(\d+)\.inf$", k))}
            published = f"oem{next(i for i in range(1, 10000) if i not in used)}.inf"
        for fname, data in files.items():
            self.files[f"{REPO_DIR}\\{folder}\\{fname}"] = data
        self.files[f"{INF_DIR}\\{published}"] = files[inf_name]
        base = inf_name.rsplit(".", 1)[0]
        service, ids = VIRTIO_INFS.get(base, (base, []))
        self.reg.create(f"{DDB}\\DriverInfFiles\\{published}")
        self.reg.set(f"{DDB}\\DriverInfFiles\\{published}", "", [folder], "MultiString")
        self.reg.set(f"{DDB}\\DriverInfFiles\\{published}", "Active", folder, "String")
        pkg = f"{DDB}\\DriverPackages\\{folder}"
        self.reg.create(pkg)
        self.reg.set(pkg, "", published, "String")
        self.reg.set(pkg, "ModelSeq", len(self.staged_packages()) + 1, "DWord")
        self.reg.create(f"{pkg}\\Configurations\\{base}_Inst")
        self.reg.set(f"{pkg}\\Configurations\\{base}_Inst", "Service", service, "String")
        for hwid in ids:
            self.reg.create(f"{pkg}\\Descriptors\\{hwid}")
            self.reg.set(f"{pkg}\\Descriptors\\{hwid}", "Configuration", f"{base}_Inst", "String")
        return published

    def unstage(self, published: str) -> bool:
        """pnputil /delete-driver: the package's files and registration go (see pnputil() for a
        package in use)."""
        folders = self.reg.get(f"{DDB}\\DriverInfFiles\\{published}", "") or []
        if not folders:
            return False
        for folder in folders:
            for k in [k for k in self.files if k.lower().startswith(f"{REPO_DIR}\\{folder}\\".lower())]:
                del self.files[k]
            self.reg.delete_key(f"{DDB}\\DriverPackages\\{folder}")
        self.reg.delete_key(f"{DDB}\\DriverInfFiles\\{published}")
        self.delete_file(f"{INF_DIR}\\{published}")
        return True

    def pnputil(self, argv: list[str], source: dict[str, bytes]) -> tuple[int, str]:
        """pnputil.exe [PNPRC] [PNPSYN]; ``source`` maps the INF's folder files (the mounted media)."""
        verb = argv[0].lower() if argv else ""
        modern = self.build >= 14393
        if verb in ("/add-driver", "/delete-driver") and not modern:
            return 87, "Microsoft PnP Utility\r\nUsage: pnputil.exe [-f | -i] [ -? | -a | -d | -e ] <INF name>\r\n"
        if verb in ("/add-driver", "-a"):
            inf_path = argv[1]
            folder, inf_name = inf_path.rsplit("\\", 1)
            files = {k.rsplit("\\", 1)[1]: v for k, v in source.items() if k.rsplit("\\", 1)[0].lower() == folder.lower()}
            if inf_name not in files:
                return 2, "Failed to add driver package: The system cannot find the file specified.\r\n"
            arch = folder.rsplit("\\", 1)[1].lower()
            if arch != self.arch:
                return 0xE000022F & 0xFFFFFFFF, "Failed to add driver package: The INF is for another architecture.\r\n"
            published = self.stage(inf_name, arch, files)
            if "/install" in [a.lower() for a in argv]:
                # no present device matches a VirtIO ID on VMware
                return NO_MORE_ITEMS, f"Published Name: {published}\r\nNo devices were updated.\r\n"
            return 0, f"Published Name: {published}\r\n"
        if verb in ("/delete-driver", "-d"):
            # without /uninstall or /force pnputil refuses a package a device is using
            # (learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-command-syntax, /delete-driver)
            if argv[1].lower() in self.in_use:
                return 1, ("Microsoft PnP Utility\r\nFailed to delete driver package: One or more devices are "
                           "presently installed using the specified INF.\r\n")
            return (0, "Driver package deleted successfully.\r\n") if self.unstage(argv[1]) else (2, "not found\r\n")
        return 87, "Microsoft PnP Utility usage\r\n"

    # ------------------------------------------------------------ MSI
    def msiexec_install(self, info: dict[str, Any] | None) -> int:
        """[MSI] what msiexec /i does with a package, by its content."""
        if info is None or info.get("kind") not in ("drivers-msi", "agent-msi"):
            return 1620
        if info["arch"] != self.arch and not (info["arch"] == "x86" and self.arch == "amd64" and info["kind"] == "agent-msi"):
            return 1633
        code = product_code(info["kind"], info["arch"], info["version"])
        if code in self.products:
            return 0
        rec: dict[str, Any] = {"kind": info["kind"], "version": info["version"], "staged": [], "files": [], "services": []}
        if info["kind"] == "drivers-msi":
            # DIFx stages the package matching this Windows; no device -> nothing installed on one
            os_dir = self._os_dir(info["version"])
            if os_dir is None:
                return 1603
            iso = iso_files(info["version"])
            for name, folder in ISO_FOLDERS.items():
                src = f"{folder}\\{os_dir}\\{self.arch}"
                files = {k.rsplit("\\", 1)[1]: v for k, v in iso.items() if k.rsplit("\\", 1)[0] == src}
                if files:
                    rec["staged"].append(self.stage(f"{name}.inf", self.arch, files))
        else:
            exe = "C:\\Program Files\\Qemu-ga\\qemu-ga.exe"
            self.files[exe] = f"model qemu-ga {info['version']} {info['arch']}".encode()
            key = f"{SVC}\\QEMU-GA"
            self.reg.create(key)
            for n, v, t in (("Type", 0x10, "DWord"), ("Start", 2, "DWord"), ("ErrorControl", 1, "DWord"),
                            ("ImagePath", f'"{exe}" -d --retry-path', "ExpandString"),
                            ("DisplayName", "QEMU Guest Agent", "String")):
                self.reg.set(key, n, v, t)
            rec["files"].append(exe)
            rec["services"].append("QEMU-GA")
        un = f"{UNINSTALL}\\{code}"
        self.reg.create(un)
        self.reg.set(un, "DisplayName", "Virtio-win-driver-installer" if info["kind"] == "drivers-msi"
                     else "QEMU guest agent", "String")
        self.reg.set(un, "DisplayVersion", info["version"], "String")
        self.products[code] = rec
        return 0

    def msiexec_uninstall(self, code: str) -> int:
        rec = self.products.pop(code, None)
        if rec is None:
            return 1605
        for published in rec["staged"]:
            self.unstage(published)
        for f in rec["files"]:
            self.delete_file(f)
        for s in rec["services"]:
            self.reg.delete_key(f"{SVC}\\{s}")
        self.reg.delete_key(f"{UNINSTALL}\\{code}")
        return 0

    def _os_dir(self, version: str) -> str | None:
        """The ISO folder the drivers MSI picks for this Windows (None: the release does not support it)."""
        cands = [(b, d) for d, (b, c) in OS_DIRS.items()
                 if c == self.client and b <= max(self.build, 9600) and virtio_win_supports(version, b)]
        return max(cands)[1] if cands else None

    client = False

    # ------------------------------------------------------------ boot
    def boots_on(self, bus: str) -> str:
        """What Windows' boot loader + PnP would do with the system disk on ``bus``: "ok" or the stop code.
        The loader starts the boot-start (Start=0) kernel drivers [SVC]; PnP must then find the
        controller's driver through the ID mapping [V2V]; the driver's image must exist."""
        if bus in BOUND_CONTROLLERS:
            service = BOUND_CONTROLLERS[bus]
            return "ok" if self._service_bootable(service) else "INACCESSIBLE_BOOT_DEVICE (0x7B)"
        ids = CONTROLLER_IDS.get(bus)
        if ids is None:
            raise ValueError(f"unknown bus {bus!r}")
        service = self._mapped_service(ids)
        if service is None or not self._service_bootable(service):
            return "INACCESSIBLE_BOOT_DEVICE (0x7B)"
        return "ok"

    def _mapped_service(self, ids: list[str]) -> str | None:
        for hwid in ids:
            rest = hwid[4:]
            if self.build >= 9200:
                key = f"{DDB}\\DeviceIds\\PCI\\{rest}"
                for inf in self.reg.value_names(key):
                    for folder in self.reg.get(f"{DDB}\\DriverInfFiles\\{inf}", "") or []:
                        pkg = f"{DDB}\\DriverPackages\\{folder}"
                        for cfg in self.reg.subkeys(pkg + "\\Configurations"):
                            svc = self.reg.get(f"{pkg}\\Configurations\\{cfg}", "Service")
                            if svc:
                                return svc
            else:
                svc = self.reg.get(f"{CDD}\\PCI#{rest}", "Service")
                if svc and str(self.reg.get(f"{CDD}\\PCI#{rest}", "ClassGUID") or "").upper() == SCSI_CLASS:
                    return svc
        return None

    def _service_bootable(self, service: str) -> bool:
        key = f"{SVC}\\{service}"
        if not self.reg.exists(key):
            return False
        if self.reg.get(key, "Type") != 1 or self.reg.get(key, "Start") != 0:
            return False
        image = str(self.reg.get(key, "ImagePath") or f"System32\\drivers\\{service}.sys")
        path = re.sub(r"(?i)^\\SystemRoot\\", "", image)
        data = self.read_file(f"{SYSROOT}\\{path}")
        # a driver of the other architecture does not load either
        return data is not None and (not data.startswith(b"model ") or f" {self.arch}," in data.decode(errors="replace"))

    # ------------------------------------------------------------ seeding and snapshots
    def seed_bound(self, service: str) -> None:
        """A driver Windows installed for a device present today (complete, boot-start) [ADDSVC]."""
        key = f"{SVC}\\{service}"
        self.reg.create(key)
        for n, v, t in (("Type", 1, "DWord"), ("Start", 0, "DWord"), ("ErrorControl", 1, "DWord"),
                        ("Group", "SCSI miniport", "String"),
                        ("ImagePath", f"\\SystemRoot\\System32\\drivers\\{service}.sys", "ExpandString")):
            self.reg.set(key, n, v, t)
        self.files[f"{DRIVERS_DIR}\\{service}.sys"] = f"inbox {service}.sys".encode()

    def snapshot(self) -> dict[str, Any]:
        """Registry + files, without guestprep's own files (journal, state, media, backups)."""
        return {"registry": self.reg.dump(),
                "files": {k.lower(): hashlib.sha256(v).hexdigest() for k, v in self.files.items()
                          if not k.lower().startswith(GUESTPREP_DIR.lower() + "\\")},
                "products": sorted(self.products)}


class FakeWindowsGuest:
    def __init__(self, profile: str | dict[str, Any]):
        # the profile is what collect.ps1 printed; the driver-related sections seed the model and
        # are rendered from it again by every collect
        self.doc = copy.deepcopy(load_profile(profile) if isinstance(profile, str) else profile)
        self.files: dict[str, bytes] = {}
        os_ = self.doc.get("os") or {}
        self.model = WindowsModel(int(os_.get("build") or 0), "x86" if "32" in str(os_.get("architecture")) else "amd64",
                                  self.files)
        self.model.client = os_.get("product_type") == 1
        if self.doc.get("supported"):
            self._seed()
        self.journal: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}
        self.ran: list[str] = []          # markers, in order
        self.lock = threading.RLock()
        self.collect_override: bytes | None = None   # garbage/truncated output tests
        self.hang_markers: set[str] = {"test-hang"}
        self.reachable_paths: dict[str, bytes] = {}   # UNC/HTTPS media the guest can read
        self._text = self._script_text = ""            # the script being run (set by run_script)
        self.nic_appears_after_s = 0                   # first KVM boot: when PnP has NetKVM ready
        self.network_boot_log: list[str] = []

    @property
    def facts(self) -> dict[str, Any]:
        """The collector's view now: the profile's sections, the driver sections read from the model."""
        doc = dict(self.doc)
        if doc.get("supported"):
            doc.update(self._render())
        return doc

    # ---------------------------------------------------------------- model <-> collector document
    def _seed(self) -> None:
        m, d = self.model, self.doc
        for service in BOUND_CONTROLLERS.values():
            m.seed_bound(service)
        boot = d.get("boot_storage") or {}
        for entry in d.get("driver_store") or []:
            base = entry["original_name"].rsplit(".", 1)[0].lower()
            if base not in VIRTIO_INFS:
                continue
            ver = str(entry.get("version") or driver_ver(DEFAULT_VIRTIO_WIN))
            version = f"0.1.{int(ver.split('.')[-1]) // 100}"
            os_dir = m._os_dir(version) or "w10"
            files = {f"{base}.inf": inf_bytes(base, m.arch, os_dir, version),
                     f"{base}.sys": driver_file_bytes(base, m.arch, os_dir, version),
                     f"{base}.cat": b"catalog"}
            m.stage(f"{base}.inf", m.arch, files, published=entry.get("inf"))
        for name, svc in (d.get("services") or {}).items():
            if svc is None:
                continue
            key = f"{SVC}\\{name}"
            m.reg.create(key)
            full = ((boot.get(name) or {}).get("service")) or {"type": 1, "error_control": 1, **svc}
            for value, field_, type_ in (("Type", "type", "DWord"), ("Start", "start", "DWord"),
                                         ("ErrorControl", "error_control", "DWord"), ("Group", "group", "String"),
                                         ("ImagePath", "image_path", "ExpandString")):
                if full.get(field_) is not None:
                    m.reg.set(key, value, full[field_], type_)
        for name, state in boot.items():
            if (state.get("file") or {}).get("present"):
                pkg = next((p for p in reversed(m.staged_packages()) if p["inf"] == f"{name}.inf"), None)
                src = m.read_file(f"{REPO_DIR}\\{pkg['folder']}\\{name}.sys") if pkg else None
                m.files[f"{DRIVERS_DIR}\\{name}.sys"] = src or driver_file_bytes(name, m.arch, "w10", DEFAULT_VIRTIO_WIN)
            for mapping in state.get("device_ids") or []:
                key = f"{DDB}\\DeviceIds\\{mapping['id']}"
                m.reg.create(key)
                for inf in mapping.get("infs") or []:
                    m.reg.set(key, inf, [1, 255, 0, 0], "Binary")
        ga = d.get("qemu_ga") or {}
        if ga.get("installed"):
            m.msiexec_install({"kind": "agent-msi", "version": DEFAULT_VIRTIO_WIN, "arch": m.arch})
            start = {"auto": 2, "manual": 3, "disabled": 4}.get(str(ga.get("start_mode")).lower(), 2)
            m.reg.set(f"{SVC}\\QEMU-GA", "Start", start, "DWord")

    def _render(self) -> dict[str, Any]:
        """driver_store, services, boot_storage, qemu_ga as collect.ps1 reads them from this Windows."""
        m = self.model
        store = []
        for pkg in m.staged_packages():
            base = pkg["inf"].rsplit(".", 1)[0]
            if base not in VIRTIO_INFS:
                continue
            inf = (m.read_file(f"{REPO_DIR}\\{pkg['folder']}\\{pkg['inf']}") or b"").decode(errors="replace")
            ver = re.search(r"(?m)^\s*DriverVer\s*=\s*[^,]*,\s*([0-9.]+)", inf)
            store.append({"inf": pkg["published"], "original_name": pkg["inf"], "provider": None,
                          "version": ver.group(1) if ver else None, "class": None, "folder": pkg["folder"],
                          "arch": pkg["arch"]})
        services: dict[str, Any] = {}
        for name in ("vioscsi", "viostor", "netkvm", "vioser", "balloon"):
            key = f"{SVC}\\{name}"
            services[name] = None if not m.reg.exists(key) else {
                "start": m.reg.get(key, "Start"), "image_path": m.reg.get(key, "ImagePath"), "group": m.reg.get(key, "Group")}
        boot: dict[str, Any] = {}
        for name, (_, ids) in (("vioscsi", VIRTIO_INFS["vioscsi"]), ("viostor", VIRTIO_INFS["viostor"])):
            key = f"{SVC}\\{name}"
            svc = None if not m.reg.exists(key) else {
                "type": m.reg.get(key, "Type"), "start": m.reg.get(key, "Start"),
                "error_control": m.reg.get(key, "ErrorControl"), "group": m.reg.get(key, "Group"),
                "image_path": m.reg.get(key, "ImagePath")}
            path = f"{DRIVERS_DIR}\\{name}.sys"
            data = m.read_file(path)
            mapped, cdd = [], []
            for hwid in ids:
                rest = hwid[4:]
                if m.reg.exists(f"{DDB}\\DeviceIds\\PCI\\{rest}"):
                    mapped.append({"id": hwid, "infs": [n for n in m.reg.value_names(f"{DDB}\\DeviceIds\\PCI\\{rest}") if n]})
                if m.reg.exists(f"{CDD}\\PCI#{rest}"):
                    cdd.append({"id": hwid, "service": m.reg.get(f"{CDD}\\PCI#{rest}", "Service"),
                                "class_guid": m.reg.get(f"{CDD}\\PCI#{rest}", "ClassGUID")})
            boot[name] = {"service": svc, "file": {"path": path, "present": data is not None,
                                                   "sha256": hashlib.sha256(data).hexdigest() if data is not None else None},
                          "device_ids": mapped, "critical_device_database": cdd}
        ga_key = f"{SVC}\\QEMU-GA"
        ga = {"installed": False, "state": None, "start_mode": None}
        if m.reg.exists(ga_key):
            # no virtio-serial port on VMware: the agent service does not run yet
            ga = {"installed": True, "state": "Stopped",
                  "start_mode": {0: "Boot", 1: "System", 2: "Auto", 3: "Manual", 4: "Disabled"}.get(m.reg.get(ga_key, "Start"))}
        return {"driver_store": store, "services": services, "boot_storage": boot, "qemu_ga": ga}

    def boots_on(self, bus: str) -> str:
        return self.model.boots_on(bus)

    def snapshot(self) -> dict[str, Any]:
        return self.model.snapshot()

    # ---------------------------------------------------------------- entry
    def run_script(self, text: str, args: list[str], stdin: str | None) -> ScriptResult | None:
        marker = script_marker(text)
        with self.lock:
            self.ran.append(marker or "<unmarked>")
            if marker in self.hang_markers:
                return None
            if marker is None:
                return ScriptResult(b"", clixml_error("fake guest: unmarked script refused"), 1)
            handler = getattr(self, "do_" + marker.replace("-", "_"), None)
            if handler is None:
                return ScriptResult(b"", clixml_error(f"fake guest: no handler for script {marker}"), 1)
            params = json.loads(args[0]) if args else {}
            self._stdin = stdin
            self._text = self._script_text = text   # the handlers model what this text does
            # How Windows PowerShell itself would fail on this script text before or while the
            # modelled commands run (5.1 native stderr under Stop, remote OutputEncoding, ...).
            fault = powershell_model.script_fault(text, self)
            if fault is not None:
                return ScriptResult(b"", clixml_error(fault), 1)
            try:
                out = handler(params)
            except GuestError as exc:
                return ScriptResult(b"", clixml_error(str(exc)), 1)
            if isinstance(out, ScriptResult):
                return out
            return ScriptResult((json.dumps(out, ensure_ascii=False) + "\r\n").encode("utf-8"))

    # ---------------------------------------------------------------- collect
    def do_collect(self, params: dict[str, Any]) -> ScriptResult:
        if self.collect_override is not None:
            return ScriptResult(self.collect_override)
        doc = copy.deepcopy(self.facts)
        doc.pop("network_model", None)          # the model's state, not something collect.ps1 prints
        doc["efi"] = self._efi_member(doc)
        escrow = ((doc.get("guestprep") or {}).get("bitlocker_escrow") or {})
        for v in doc.get("bitlocker") or []:
            if escrow.get(v["mount"]):
                v["recovery_key_escrowed"] = True
        return ScriptResult((json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\r\n").encode("utf-8"))

    @staticmethod
    def _efi_member(doc: dict[str, Any]) -> dict[str, Any] | None:
        """collect.ps1 prints "efi" for UEFI guests only; a guest whose profile has no ESP gets
        what Get-EfiFacts prints when Get-Partition finds none."""
        if (doc.get("firmware") or {}).get("type") != "uefi":
            return None
        if doc.get("efi") is not None:
            return doc["efi"]
        return {"firmware": "uefi", "secure_boot": doc["firmware"].get("secure_boot"), "esp": None, "files": None,
                "bcdedit": {"rc": 0, "out": "", "err": ""}, "unknown": {"esp": "no EFI system partition found"}}

    def do_install_efi_fallback(self, p: dict[str, Any]) -> dict[str, Any]:
        efi = self.doc.get("efi")
        if efi is None:
            raise GuestError("no EFI system partition found")
        files = {f["path"]: f for f in efi["files"]}
        src = files["\\EFI\\Microsoft\\Boot\\bootmgfw.efi"]
        if src["sha256"] != p["source_sha256"]:
            raise GuestError("EFI\\Microsoft\\Boot\\bootmgfw.efi changed since the plan")
        target = "\\EFI\\Boot\\bootx64.efi"
        old = files.get(target)
        kind = "file_replace" if old else "file_write"
        self._journal(p["operation"], kind, target, before_sha256=old["sha256"] if old else None)
        efi["files"] = [f for f in efi["files"] if f["path"] != target] + [dict(src, path=target)]
        return {"ok": True, "target": target, "sha256": src["sha256"], "kind": kind}

    # ---------------------------------------------------------------- files
    def do_put_chunk(self, p: dict[str, Any]) -> dict[str, Any]:
        data = base64.b64decode(p["data"])
        path = p["path"]
        cur = self.files.get(path, b"") if p["offset"] else b""
        if p["offset"] and len(cur) != p["offset"]:
            raise GuestError(f"{path}: expected offset {len(cur)}, got {p['offset']}")
        self.files[path] = cur + data
        return {"ok": True, "size": len(self.files[path])}

    def do_file_hash(self, p: dict[str, Any]) -> dict[str, Any]:
        data = self._read(p["path"])
        return {"path": p["path"], "size": len(data), "sha256": hashlib.sha256(data).hexdigest().upper()}

    def do_get_chunk(self, p: dict[str, Any]) -> dict[str, Any]:
        data = self._read(p["path"])
        chunk = data[p["offset"]:p["offset"] + p["length"]]
        return {"data": base64.b64encode(chunk).decode(), "size": len(data)}

    def do_move_file(self, p: dict[str, Any]) -> dict[str, Any]:
        if p["dest"] in self.files and not p.get("overwrite"):
            raise GuestError(f"{p['dest']} already exists")
        self.files[p["dest"]] = self.files.pop(p["source"])
        return {"ok": True}

    def _read(self, path: str) -> bytes:
        if path in self.files:
            return self.files[path]
        if path in self.reachable_paths:
            return self.reachable_paths[path]
        raise GuestError(f"Cannot find path '{path}' because it does not exist.")

    # ---------------------------------------------------------------- journal helpers
    def _journal(self, operation: str, kind: str, target: str, **detail: Any) -> None:
        self.journal.append({"id": len(self.journal) + 1, "operation": operation, "kind": kind, "target": target,
                             "rolled_back": False, **detail})
        self.files[JOURNAL] = json.dumps({"schema": "guestprep.windows.journal/1", "entries": self.journal}).encode()

    def _state(self) -> dict[str, Any]:
        if self.doc.get("guestprep") is None:
            self.doc["guestprep"] = {}
        return self.doc["guestprep"]

    def _reg_get(self, path: str, name: str) -> Any:
        f = self.doc
        if (path, name) == HIBERBOOT:
            return 1 if f["power"]["fast_startup"] else 0
        if (path, name) == HIBERNATE:
            return 1 if f["power"]["hibernation"] else 0
        if (path, name) == SANPOLICY:
            return {v: k for k, v in SAN_CODES.items()}.get(f["storage"]["san_policy"])
        return self.model.reg.get(path, name)

    def _reg_set(self, path: str, name: str, value: Any, type_: str = "DWord") -> None:
        f = self.doc
        if (path, name) == HIBERBOOT:
            f["power"]["fast_startup"] = value == 1
        elif (path, name) == HIBERNATE:
            f["power"]["hibernation"] = value == 1
            if value != 1:
                f["power"]["fast_startup"] = False
        elif (path, name) == SANPOLICY:
            f["storage"]["san_policy"] = SAN_CODES.get(value) if value is not None else ("OnlineAll" if f["os"]["product_type"] == 1 else "OfflineShared")
        elif value is None:
            self.model.reg.delete_value(path, name)       # Remove-ItemProperty
        else:
            self.model.reg.set(path, name, value, type_)  # New-ItemProperty -PropertyType

    def _set_journaled(self, op: str, path: str, name: str, value: Any) -> dict[str, Any]:
        """lib.ps1 Set-RegistryValueJournaled: journal, New-Item -Force when the key is missing
        (not journaled), DWORD value, read back."""
        before = self._reg_get(path, name)
        if before == value:
            return {"target": f"{path}\\{name}", "changed": False, "value": value}
        self._journal(op, "registry_set", f"{path}\\{name}", path=path, name=name, before=before, after=value)
        if (path, name) not in (HIBERBOOT, HIBERNATE, SANPOLICY) and not self.model.reg.exists(path):
            self.model.reg.create(path)
        self._reg_set(path, name, value)
        after = self._reg_get(path, name)
        if after != value:
            raise GuestError(f"read back {path}\\{name} = {after}, expected {value}")
        return {"target": f"{path}\\{name}", "changed": True, "before": before, "after": value}

    # ---------------------------------------------------------------- operations
    def do_install_virtio(self, p: dict[str, Any]) -> dict[str, Any]:
        """install-virtio.ps1, step by step: verify the media, then stage by pnputil from the mounted
        ISO (or msiexec the drivers MSI), journal each new package, record the version read from
        the media. No service, no System32\\drivers file: that is set-boot-critical.ps1."""
        m = self.model
        media = p["media"]
        data = self._read(media)
        digest = hashlib.sha256(data).hexdigest()
        if digest.lower() != p["sha256"].lower():
            raise GuestError(f"SHA-256 of {media} is {digest.upper()}, expected {p['sha256'].upper()}: not installing")
        info = identify_media(media, data)
        op, steps = "windows.virtio_drivers", []
        # the exit codes the script tolerates, read from its text ($PnpSuccess): the model judges the
        # script's own rule against what pnputil returns (the pre-fix text accepted only 0 and 3010)
        found = re.search(r"\$PnpSuccess\s*=\s*@\(([^)]*)\)", self._text or "")
        tolerated = {int(x) for x in found.group(1).split(",")} if found else {0, 3010}
        if p["kind"] == "iso":
            if info is None or info["kind"] != "iso":
                raise GuestError(f"Mount-DiskImage : The file '{media}' is not a valid disk image.")
            iso = iso_files(info["version"])
            version, source = info["version"], f"iso volume label virtio-win-{info['version']}"
            for d in p["drivers"]:
                inf_rel = f"{d['folder']}\\{d['inf']}"
                if inf_rel not in iso:
                    if d.get("required"):
                        raise GuestError(f"the media has no {inf_rel}: this virtio-win release has no {d['name']} "
                                         "for this Windows version/architecture")
                    steps.append({"action": "driver_absent_on_media", "driver": d["name"], "folder": d["folder"]})
                    continue
                sys_data = iso[f"{d['folder']}\\{d['sys']}"]
                already = self._staged_with(d["inf"], p["arch"], d["sys"], sys_data)
                if already:
                    steps.append({"action": "driver_already_staged", "driver": d["name"], "folder": already["folder"],
                                  "published_name": already["published"]})
                    continue
                argv = ["/add-driver", f"X:\\{inf_rel}", "/install"] if p["pnputil_syntax"] == "add-driver" else ["-a", f"X:\\{inf_rel}"]
                rc, out = m.pnputil(argv, {f"X:\\{k}": v for k, v in iso.items()})
                if rc not in tolerated:
                    raise GuestError(f"pnputil {' '.join(argv)} exited {rc}: {out.strip()}")
                pkg = self._staged_with(d["inf"], p["arch"], d["sys"], sys_data)
                if pkg is None:
                    raise GuestError(f"pnputil exited {rc} but {d['inf']} is not in {REPO_DIR}")
                self._journal(op, "driver_stage", d["inf"], published_name=pkg["published"], original_name=d["inf"],
                              folder=pkg["folder"], pnputil_syntax=p["pnputil_syntax"])
                steps.append({"action": "driver_staged", "driver": d["name"], "folder": pkg["folder"],
                              "published_name": pkg["published"], "exit_code": rc})
        elif p["kind"] == "msi":
            if info is None or info["kind"] not in ("drivers-msi", "agent-msi"):
                raise GuestError(f"Exception calling \"InvokeMember\": OpenDatabase,DatabasePath,OpenMode: {media} is not an MSI")
            code = product_code(info["kind"], info["arch"], info["version"])
            version, source = info["version"], "msi ProductVersion"
            if code in m.products:
                steps.append({"action": "msi_already_installed", "product_code": code})
            else:
                self._journal(op, "msi_install", code, product_code=code, media=media, version=version)
                rc = m.msiexec_install(info)
                if rc not in (0, 3010):
                    raise GuestError(f"msiexec exited {rc}, see C:\\ProgramData\\guestprep\\virtio-win-install.log")
                steps.append({"action": "msi_installed", "product_code": code, "exit_code": rc})
        else:
            raise GuestError(f"unsupported media kind {p['kind']} (expected iso or msi)")
        self._state()["virtio_win"] = {"version": version, "source": source, "media": media, "sha256": digest}
        return {"ok": True, "version": version, "version_source": source, "steps": steps}

    def _staged_with(self, inf: str, arch: str, sys_name: str, sys_data: bytes) -> dict[str, Any] | None:
        """install-virtio.ps1's Get-StagedPackage: the FileRepository folder holding this very .sys."""
        for pkg in self.model.staged_packages():
            if pkg["inf"] == inf.lower() and pkg["arch"] == arch.lower() and \
                    self.model.read_file(f"{REPO_DIR}\\{pkg['folder']}\\{sys_name}") == sys_data:
                return pkg
        return None

    def do_set_boot_critical(self, p: dict[str, Any]) -> dict[str, Any]:
        """set-boot-critical.ps1, step by step: from the newest staged folder copy the .sys, create
        and fill the service key, map the PCI IDs; journal before each change, read back after."""
        m, op, steps = self.model, "windows.boot_critical", []
        for d in p["services"]:
            name, sys_name = d["name"], d["name"] + ".sys"
            pkgs = [x for x in m.staged_packages() if x["inf"] == d["inf"].lower() and x["arch"] == p["arch"].lower()
                    and m.file_exists(f"{REPO_DIR}\\{x['folder']}\\{sys_name}")]
            if not pkgs:
                raise GuestError(f"{d['inf']} ({p['arch']}) is not in the driver store ({REPO_DIR}): "
                                 "windows.virtio_drivers stages it first")
            pkg = pkgs[-1]
            if p["mapping"] == "driver_database" and not pkg["published"]:
                raise GuestError(f"DriverDatabase\\DriverPackages\\{pkg['folder']} names no published inf (oemNN.inf)")
            src = m.read_file(f"{REPO_DIR}\\{pkg['folder']}\\{sys_name}")
            dst = f"{DRIVERS_DIR}\\{sys_name}"
            cur = m.read_file(dst)
            if cur is None:
                self._journal(op, "file_write", dst, before=None, sha256=hashlib.sha256(src).hexdigest())
                self.files[dst] = src
                steps.append({"target": dst, "changed": True})
            elif cur != src:
                backup = f"{GUESTPREP_DIR}\\backup\\{sys_name}.model"
                self.files[backup] = cur
                self._journal(op, "file_replace", dst, backup=backup, before_sha256=hashlib.sha256(cur).hexdigest())
                m.delete_file(dst)
                self.files[dst] = src
                steps.append({"target": dst, "changed": True, "backup": backup})
            if m.read_file(dst) != src:
                raise GuestError(f"read back {dst}: SHA-256 differs from the staged one")
            key = f"HKLM:\\SYSTEM\\CurrentControlSet\\Services\\{name}"
            self._new_key(op, key)
            for value, v in (("Type", 1), ("Start", 0), ("ErrorControl", 1)):
                steps.append(self._set_journaled(op, key, value, v))
            if str(m.reg.get(key, "Group") or "").lower() != "scsi miniport":
                steps.append(self._set_typed(op, key, "Group", "SCSI miniport", "String"))
            image = str(m.reg.get(key, "ImagePath") or "").lower()
            if image not in (f"system32\\drivers\\{sys_name}".lower(), f"\\systemroot\\system32\\drivers\\{sys_name}".lower()):
                steps.append(self._set_typed(op, key, "ImagePath", f"System32\\drivers\\{sys_name}", "ExpandString"))
            for hwid in d["hardware_ids"]:
                rest = hwid[4:]
                if p["mapping"] == "driver_database":
                    self._new_key(op, "HKLM:\\SYSTEM\\DriverDatabase\\DeviceIds\\PCI")
                    idkey = f"HKLM:\\SYSTEM\\DriverDatabase\\DeviceIds\\PCI\\{rest}"
                    self._new_key(op, idkey)
                    steps.append(self._set_typed(op, idkey, pkg["published"], [1, 255, 0, 0], "Binary"))
                else:
                    idkey = f"HKLM:\\SYSTEM\\CurrentControlSet\\Control\\CriticalDeviceDatabase\\PCI#{rest}"
                    self._new_key(op, idkey)
                    steps.append(self._set_typed(op, idkey, "Service", name, "String"))
                    steps.append(self._set_typed(op, idkey, "ClassGUID", SCSI_CLASS, "String"))
        return {"ok": True, "steps": [s for s in steps if s.get("changed")]}

    def _new_key(self, op: str, path: str) -> None:
        """New-KeyJournaled: journal registry_key_create, then New-Item -Force."""
        if self.model.reg.exists(path):
            return
        self._journal(op, "registry_key_create", path, path=path)
        self.model.reg.create(path)

    def _set_typed(self, op: str, path: str, name: str, value: Any, type_: str) -> dict[str, Any]:
        """Set-TypedValueJournaled (Binary as "1,255,0,0" in the journal, like the script)."""
        enc = (lambda v: None if v is None else ",".join(str(b) for b in v)) if type_ == "Binary" else (lambda v: v)
        before = self.model.reg.get(path, name)
        if before is not None and (enc(before) == enc(value)):
            return {"target": f"{path}\\{name}", "changed": False}
        self._journal(op, "registry_set", f"{path}\\{name}", path=path, name=name, before=enc(before), after=enc(value),
                      type=type_)
        self.model.reg.set(path, name, value, type_)
        if enc(self.model.reg.get(path, name)) != enc(value):
            raise GuestError(f"read back {path}\\{name} differs")
        return {"target": f"{path}\\{name}", "changed": True, "before": enc(before), "after": enc(value)}

    def do_install_qemu_ga(self, p: dict[str, Any]) -> dict[str, Any]:
        """install-qemu-ga.ps1: verify, (mount the ISO,) journal msi_install, msiexec the AGENT MSI,
        read back the QEMU-GA service and its start mode."""
        m = self.model
        media = p["media"]
        data = self._read(media)
        digest = hashlib.sha256(data).hexdigest()
        if digest.lower() != p["sha256"].lower():
            raise GuestError(f"SHA-256 of {media} is {digest.upper()}, expected {p['sha256'].upper()}: not installing")
        if p["kind"] == "iso":
            info = identify_media(media, data)
            if info is None or info["kind"] != "iso":
                raise GuestError(f"Mount-DiskImage : The file '{media}' is not a valid disk image.")
            iso = iso_files(info["version"])
            if p["msi_path"] not in iso:
                raise GuestError(f"the media has no X:\\{p['msi_path']}")
            msi_path, msi = f"X:\\{p['msi_path']}", identify_media(p["msi_path"], iso[p["msi_path"]])
        else:
            msi_path, msi = media, identify_media(media, data)
        if msi is None or msi["kind"] not in ("drivers-msi", "agent-msi"):
            raise GuestError(f"{msi_path} is not an MSI")
        code = product_code(msi["kind"], msi["arch"], msi["version"])
        self._journal("windows.qemu_ga", "msi_install", code, product_code=code, media=msi_path, version=msi["version"])
        rc = m.msiexec_install(msi)
        if rc not in (0, 3010):
            raise GuestError(f"qemu-ga msiexec exited {rc}, see C:\\ProgramData\\guestprep\\qemu-ga-install.log")
        key = f"{SVC}\\QEMU-GA"
        if not m.reg.exists(key):
            raise GuestError("read back: the QEMU-GA service does not exist after the agent MSI ran")
        if m.reg.get(key, "Start") != 2:
            raise GuestError(f"read back: QEMU-GA start mode is {m.reg.get(key, 'Start')}, expected Auto")
        return {"ok": True, "steps": [{"action": "msi_installed", "product_code": code, "exit_code": rc}],
                "service": {"state": "Stopped", "start_mode": "Auto"}}

    def do_disable_fast_startup(self, p: dict[str, Any]) -> dict[str, Any]:
        steps = [self._set_journaled("windows.fast_startup", *HIBERBOOT, 0)]
        if p.get("hibernate_off", True):
            steps.append(self._set_journaled("windows.fast_startup", *HIBERNATE, 0))
        return {"ok": True, "steps": steps}

    def do_set_san_policy(self, p: dict[str, Any]) -> dict[str, Any]:
        code = {v: k for k, v in SAN_CODES.items()}[p["policy"]]
        return {"ok": True, "steps": [self._set_journaled("windows.san_policy", *SANPOLICY, code)]}

    def do_capture_network(self, p: dict[str, Any]) -> dict[str, Any]:
        state = self.doc.get("network_model")
        if state is not None:
            # the network model reads what the capture script text really reads (network_model.py)
            modelled = network_model.capture(state, self._script_text)
            captured = modelled["adapters"]
            doc = {"schema": "guestprep.windows.network-capture/2", "hostname": self.doc["hostname"],
                   "adapters": captured, "routes": [], "dns_search_list": modelled["dns_search_list"],
                   "restore": {"wait_seconds": int(p.get("wait_seconds") or 600), "poll_seconds": 5}}
        else:
            captured = [a for a in self.doc["network"]["adapters"] if not a["dhcp"]]
            doc = {"schema": "guestprep.windows.network-capture/1", "hostname": self.doc["hostname"],
                   "adapters": captured, "routes": self.doc["network"]["routes"]}
        path = NETWORK_CAPTURE
        changed = self.files.get(path) != json.dumps(doc).encode()
        if changed:
            self._journal("windows.network_capture", "file_write", path, before=None)
            self.files[path] = json.dumps(doc).encode()
        if p.get("restore_script"):
            self.files[RESTORE_SCRIPT] = str(p["restore_script"]).encode("utf-8")
        task = p["task"]
        if task not in self.tasks:
            self._journal("windows.network_capture", "task_create", task)
            self.tasks[task] = {"script": RESTORE_SCRIPT}
        macs = sorted({_mac(a["mac"]) for a in captured})
        self._state()["network_capture"] = {"macs": macs, "task": task}
        return {"ok": True, "capture": doc, "steps": [{"file": path, "changed": changed}, {"task": task}]}

    def do_restore_network(self, p: dict[str, Any]) -> dict[str, Any]:
        """The first-boot task on KVM (run by first_kvm_boot): the network model applies what the
        restore script text calls to the modelled stack; the ghost vmxnet3 and the late NetKVM
        adapter are the model's (network_model.first_kvm_boot)."""
        state = self.doc.get("network_model")
        if state is None or NETWORK_CAPTURE not in self.files:
            raise GuestError("model: no network_model state or no network-capture.json on this guest")
        cap = json.loads(self.files[NETWORK_CAPTURE])
        wait = int((cap.get("restore") or {}).get("wait_seconds") or 600)
        res = network_model.first_kvm_boot(state, cap, self._script_text, self.nic_appears_after_s, wait)
        self.doc["network_model"] = res.state
        if res.task_removed:
            for name, t in list(self.tasks.items()):
                if t.get("script") == RESTORE_SCRIPT:
                    del self.tasks[name]
        self.network_boot_log = res.log
        return {"ok": True, "log": res.log, "task_removed": res.task_removed}

    def first_kvm_boot(self, appears_after_s: int = 0) -> ScriptResult | None:
        """Boot on Proxmox: the scheduled restore task runs the script capture-network wrote."""
        self.nic_appears_after_s = appears_after_s
        text = self.files.get(RESTORE_SCRIPT)
        if text is None or not any(t.get("script") == RESTORE_SCRIPT for t in self.tasks.values()):
            return None
        return self.run_script(text.decode("utf-8"), [], None)

    def do_schedule_vmware_tools_removal(self, p: dict[str, Any]) -> dict[str, Any]:
        task = p["task"]
        if task not in self.tasks:
            self._journal("windows.vmware_tools_removal", "task_create", task, product_code=p["product_code"])
            self.tasks[task] = {"script": "remove-vmware-tools.ps1", "product_code": p["product_code"]}
        self._state()["vmware_tools_removal"] = {"task": task, "product_code": p["product_code"]}
        # VMware Tools is still installed: removal happens at first boot on KVM only.
        return {"ok": True, "steps": [{"task": task}]}

    def do_suspend_bitlocker(self, p: dict[str, Any]) -> dict[str, Any]:
        steps = []
        for v in self.doc.get("bitlocker") or []:
            if v["mount"] in p["mounts"] and v["protection_status"].lower() == "on":
                v["protection_status"] = "off"
                self._journal("windows.bitlocker_suspend", "bitlocker_suspend", v["mount"],
                              reboot_count=p["reboot_count"], reversible=True)
                steps.append({"mount": v["mount"], "suspended": True, "reboot_count": p["reboot_count"]})
        escrow = self._state().setdefault("bitlocker_escrow", {})
        for m in p["mounts"]:
            escrow[m] = True
        return {"ok": True, "steps": steps}

    # What rollback.ps1's branch for a kind must call for the model to replay it (its syntax tree,
    # tests/windows/ps_lint.switch_branches): the model never replays what the script cannot.
    ROLLBACK_CALLS = {"registry_key_create": ("remove-item",), "driver_stage": ("pnputil", "/delete-driver", "-d"),
                      "msi_install": ("msiexec", "/x"), "task_create": ("remove-guestpreptask",),
                      "registry_set": ("new-itemproperty", "remove-itemproperty"), "file_write": ("remove-item",),
                      "file_replace": ("backup",), "bitlocker_suspend": ("resume-bitlocker",)}

    def _rollback_branches(self) -> dict[str, str]:
        """The journal kinds the rollback script that was sent really replays (label -> body, lower-case)."""
        from tests.windows import ps_lint

        branches = {k: v.lower() for k, v in ps_lint.switch_branches(getattr(self, "_text", "") or "").items()}
        return {k: body for k, body in branches.items()
                if all(call in body for call in self.ROLLBACK_CALLS.get(k, ()))}

    def do_rollback(self, p: dict[str, Any]) -> dict[str, Any]:
        restored = []
        branches = self._rollback_branches()
        for e in reversed(self.journal):
            if e["rolled_back"]:
                continue
            if e["kind"] not in branches:
                # the script's `default` branch: reported, not replayed
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "skipped": "not reversible"})
                continue
            if e["kind"] == "registry_set" and (e.get("type") or "DWord") != "DWord" and e["before"] is not None \
                    and not re.search(r"\$e\.type|\['type'\]", branches["registry_set"]):
                # `[int]$e.before` on a String/Binary previous value: PowerShell's conversion error
                raise GuestError(f'Cannot convert value "{e["before"]}" to type "System.Int32". Error: "Input string '
                                 'was not in a correct format." (rollback.ps1 restores every value as a DWord)')
            if e["kind"] == "registry_set":
                # rollback.ps1: before null -> Remove-ItemProperty; else New-ItemProperty with the
                # entry's type (DWord when the entry has none, as lib.ps1's entries)
                before, type_ = e["before"], e.get("type") or "DWord"
                if type_ == "Binary" and before is not None:
                    before = [int(x) for x in str(before).split(",")]
                self._reg_set(e["path"], e["name"], before, type_)
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "restored": e["before"]})
            elif e["kind"] == "registry_key_create":
                # Remove-Item -LiteralPath <key> -Recurse: the key did not exist before
                self.model.reg.delete_key(e["path"])
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] == "driver_stage":
                # pnputil /delete-driver <oemNN.inf> (-d before build 14393); refused while a device uses it
                verb = "/delete-driver" if self.model.build >= 14393 else "-d"
                rc, out = self.model.pnputil([verb, e["published_name"]], {})
                if rc != 0:
                    restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "skipped": out.strip()})
                    continue
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] == "msi_install":
                # msiexec /x <product code> /qn /norestart; 1605 = already gone
                rc = self.model.msiexec_uninstall(e["product_code"])
                if rc not in (0, 1605, 3010):
                    restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "skipped": f"msiexec /x exited {rc}"})
                    continue
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] == "file_replace" and not e["target"].startswith("\\EFI\\"):
                backup = self.files.get(e.get("backup") or "")
                if backup is None:
                    restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "skipped": "backup missing"})
                    continue
                self.model.delete_file(e["target"])
                self.files[e["target"]] = backup
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "restored": e["backup"]})
            elif e["kind"] == "task_create":
                self.tasks.pop(e["target"], None)
                st = self._state()
                for k in ("network_capture", "vmware_tools_removal"):
                    if (st.get(k) or {}).get("task") == e["target"]:
                        st.pop(k)
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] in ("file_write", "file_replace") and e["target"].startswith("\\EFI\\"):
                efi = self.doc["efi"]
                if e["kind"] == "file_write":
                    efi["files"] = [f for f in efi["files"] if f["path"] != e["target"]]
                else:
                    for f in efi["files"]:
                        if f["path"] == e["target"]:
                            f["sha256"] = e["before_sha256"]
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "restored": True})
            elif e["kind"] == "file_write":
                self.model.delete_file(e["target"])
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "removed": True})
            elif e["kind"] == "bitlocker_suspend":
                for v in self.doc.get("bitlocker") or []:
                    if v["mount"] == e["target"]:
                        v["protection_status"] = "on"
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "resumed": True})
            else:
                restored.append({"id": e["id"], "kind": e["kind"], "target": e["target"], "skipped": "not reversible"})
                continue
            e["rolled_back"] = True
        self.files[JOURNAL] = json.dumps({"schema": "guestprep.windows.journal/1", "entries": self.journal}).encode()
        if self.journal:
            self.doc["guestprep"] = None     # rollback.ps1 removes state.json once the journal is replayed
        return {"ok": True, "restored": restored}

    def do_run_argv(self, p: dict[str, Any]) -> ScriptResult:
        argv = p["argv"]
        if argv and argv[0].lower() in ("hostname", "hostname.exe"):
            out, rc = (self.doc["hostname"] + "\r\n").encode(), 0
        elif argv and argv[0].lower() == "cmd.exe" and argv[1:3] == ["/c", "exit"]:
            out, rc = b"", int(argv[3])
        elif argv and argv[0].lower() == "echoargs.exe":   # shows arguments arrive unmangled
            out, rc = ("\r\n".join(argv[1:]) + "\r\n").encode("utf-8"), 0
        else:
            return ScriptResult(b"", clixml_error(f"The term '{argv[0]}' is not recognized as the name of a cmdlet"), 1)
        if p.get("report_rc"):
            return ScriptResult(out + f"guestprep-rc={rc}\r\n".encode(), b"", 0)
        return ScriptResult(out, b"", rc)

    def do_test_echo(self, p: dict[str, Any]) -> dict[str, Any]:
        return {"echo": p, "text": "Привет, мир — こんにちは — مرحبا", "stdin": self._stdin}

    def do_test_fail(self, p: dict[str, Any]) -> ScriptResult:
        return ScriptResult(b"", clixml_error(p.get("message", "Zugriff verweigert")), 1)


class GuestError(Exception):
    pass


def _mac(mac: str) -> str:
    h = re.sub(r"[^0-9a-f]", "", mac.lower())
    return ":".join(h[i:i + 2] for i in range(0, 12, 2))


def _drop(state: Any, text: str, result: ScriptResult) -> ScriptResult:
    cfg = state.config
    if cfg.drop_after_marker and script_marker(text) == cfg.drop_after_marker and cfg.drop_count > 0:
        cfg.drop_count -= 1
        result.drop = True
    return result


def run_winrs(state: Any, argv: list[str], stdin: bytes) -> ScriptResult | None:
    """What powershell.exe does with our bootstrap: read the payload line, run the script."""
    exe = argv[0].lower() if argv else ""
    if exe not in ("powershell.exe", "powershell"):
        return ScriptResult(b"", f"'{argv[0] if argv else ''}' is not recognized as an internal or external command\r\n".encode(), 1)
    try:
        encoded = argv[argv.index("-EncodedCommand") + 1]
        boot = decode_command(encoded)
    except (ValueError, IndexError):
        return ScriptResult(b"", clixml_error("fake guest: only -EncodedCommand is supported"), 1)
    if "# guestprep-bootstrap/1" not in boot:
        return ScriptResult(b"", clixml_error("fake guest: unknown encoded command"), 1)
    fault = powershell_model.bootstrap_fault(boot, state.guest)
    if fault is not None:
        return fault if isinstance(fault, ScriptResult) else ScriptResult(b"", clixml_error(fault), 1)
    line = stdin.split(b"\n", 1)[0]
    payload = parse_payload_line(line)
    res = state.guest.run_script(payload["script"], payload["args"], payload.get("stdin"))
    state.log.append({"transport": "winrs", "marker": script_marker(payload["script"]), "args": payload["args"]})
    return None if res is None else _drop(state, payload["script"], res)


def run_psrp(state: Any, script: str, args: list[str], stdin: str | None) -> ScriptResult | None:
    """A PSRP pipeline: the connector's version guard (windows_common.PSRP_GUARD) runs first and,
    on PowerShell 3.0+, invokes its first argument as the script with the rest as arguments.
    The guard's own behaviour on 1.0/2.0 comes from the PowerShell engine model."""
    from guestprep.connectors.windows_common import PSRP_GUARD_MARKER

    if PSRP_GUARD_MARKER in script:
        fault = powershell_model.bootstrap_fault(script, state.guest)
        if fault is not None:
            state.log.append({"transport": "psrp", "marker": "psrp-guard", "args": args[1:]})
            return fault if isinstance(fault, ScriptResult) else ScriptResult(b"", clixml_error(fault), 1)
        if not args:
            return ScriptResult(b"", clixml_error("Exception calling \"Create\": the guard got no script"), 1)
        script, args = args[0], args[1:]
    res = state.guest.run_script(script, args, stdin)
    state.log.append({"transport": "psrp", "marker": script_marker(script), "args": args})
    return None if res is None else _drop(state, script, res)
