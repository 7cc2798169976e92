"""virtio-win drivers staged from admin media, the storage drivers made boot-capable, qemu-ga
from its own MSI.

Three operations, so that each one's plan says only what is missing and none reruns forever:
``windows.virtio_drivers`` stages the drivers (ISO via pnputil, or the drivers MSI) and then
runs set-boot-critical.ps1; ``windows.boot_critical`` completes the boot-start state of drivers
already staged; ``windows.qemu_ga`` installs the agent MSI (the drivers MSI holds no qemu-ga).
"""

from __future__ import annotations

from typing import Any

from guestprep.errors import ConfigError
from guestprep.facts.windows import DRIVER_DATABASE_BUILD, VIRTIO_PCI_IDS
from guestprep.models import Change, Plan
from guestprep.operations.base import operation
from guestprep.operations.windows._common import (SERVICES, WindowsOperation, check_remote_path, check_sha, local_media,
                                                   registry_change, script_change, setting)

STORAGE = ("vioscsi", "viostor")
# virtio-win ISO folders <driver>\<os_dir>\<arch>\ (virtio-win-pkg-scripts' layout; virt-v2v's
# virtio_iso_path_matches_guest_os reads the same names). 2k12 / w8 left the ISO long ago.
ISO_DIRS = [(9200, "2k12"), (9600, "2k12R2"), (14393, "2k16"), (17763, "2k19"), (20348, "2k22"), (26100, "2k25")]
ISO_CLIENT_DIRS = [(9200, "w8"), (9600, "w8.1"), (10240, "w10"), (22000, "w11")]
# (driver, INF/SYS base name, ISO folder name); storage ones are required
ISO_DRIVERS = [("vioscsi", "vioscsi", "vioscsi"), ("viostor", "viostor", "viostor"), ("netkvm", "netkvm", "NetKVM"),
               ("vioser", "vioser", "vioserial"), ("balloon", "balloon", "Balloon")]
# pnputil /add-driver exists from Windows 10 1607 / Server 2016 on; -a before
# (learn.microsoft.com/windows-hardware/drivers/devtest/pnputil-command-syntax)
PNPUTIL_ADD_DRIVER_BUILD = 14393
AGENT_MSI = {"amd64": "guest-agent\\qemu-ga-x86_64.msi", "x86": "guest-agent\\qemu-ga-i386.msi"}
DRIVERS_MSI = {"amd64": "virtio-win-gt-x64.msi", "x86": "virtio-win-gt-x86.msi"}


def iso_dir(facts: Any) -> str:
    table = ISO_DIRS if facts.os.is_server else ISO_CLIENT_DIRS
    best = table[0][1]
    for build, name in table:
        if facts.os.build >= build:
            best = name
    return best


def arch(facts: Any, where: str) -> str:
    """The ISO's architecture folder from Win32_OperatingSystem.OSArchitecture ("64-bit"/"32-bit")."""
    text = str(facts.os.architecture or "").lower()
    if "64" in text and "arm" not in text:
        return "amd64"
    if "32" in text:
        return "x86"
    raise ConfigError(f"cannot pick the virtio-win driver folder: OS architecture is {facts.os.architecture!r} "
                      "(expected 64-bit or 32-bit)", where=where)


def media_kind(media: str, where: str, what: str = "virtio-win media") -> str:
    lower = media.lower()
    if lower.endswith(".exe"):
        raise ConfigError(f"{what} {media}: the guest-tools bundle (virtio-win-guest-tools.exe) is not supported: its "
                          "silent switches are not documented by virtio-win and guestprep could not roll it back. "
                          "Give the virtio-win ISO, or the drivers MSI (virtio-win-gt-x64.msi) plus qemu_ga_media "
                          "(guest-agent\\qemu-ga-x86_64.msi), both on the ISO", where=where)
    if lower.endswith(".iso"):
        return "iso"
    if lower.endswith(".msi"):
        return "msi"
    raise ConfigError(f"{what} must be an .msi or .iso, got {media}", where=where)


def media_changes(media: str, sha: str, where: str, upload: bool = True) -> tuple[str, list[Change]]:
    """(path the guest reads, the upload/fetch changes)."""
    lower = media.lower()
    if lower.startswith("http://"):
        raise ConfigError("virtio-win media over plain http is refused; use https or a UNC path", where=where)
    if lower.startswith("https://") or media.startswith("\\\\"):
        remote = check_remote_path(media, where)
        return remote, [Change("fetch", media, {"sha256": sha}, diff=f"guest reads {media}, verifies SHA-256\n")]
    local, remote = local_media(media, sha, where)
    if not upload:
        return remote, []
    return remote, [Change("upload", remote, {"local": local, "sha256": sha}, diff=f"+ {remote} (sha256 {sha[:16]}...)\n")]


def boot_script(facts: Any, names: list[str], where: str) -> Change:
    mapping = "driver_database" if facts.os.build >= DRIVER_DATABASE_BUILD else "critical_device_database"
    params = {"arch": arch(facts, where), "mapping": mapping,
              "services": [{"name": n, "inf": f"{n}.inf", "hardware_ids": list(VIRTIO_PCI_IDS[n])} for n in names]}
    where_map = "DriverDatabase\\DeviceIds" if mapping == "driver_database" else "CriticalDeviceDatabase"
    return script_change("set-boot-critical.ps1", params,
                         f"{', '.join(n + '.sys' for n in names)} -> System32\\drivers; Services\\<drv> Type=1 Start=0 "
                         f"ErrorControl=1 Group=SCSI miniport ImagePath; VirtIO PCI IDs -> {where_map}; all read back\n")


def boot_changes(facts: Any, names: list[str]) -> list[Change]:
    """The registry values set-boot-critical.ps1 writes, as readable changes (before = collected)."""
    out = []
    for n in names:
        state = (facts.boot_storage or {}).get(n)
        svc = state.service if state else None
        for value, after in (("Type", 1), ("Start", 0), ("ErrorControl", 1), ("Group", "SCSI miniport"),
                             ("ImagePath", f"System32\\drivers\\{n}.sys")):
            before = getattr(svc, {"ErrorControl": "error_control", "ImagePath": "image_path"}.get(value, value.lower()),
                             None) if svc else None
            out.append(registry_change(SERVICES + n, value, before, after))
    return out


@operation
class VirtioDrivers(WindowsOperation):
    id = "windows.virtio_drivers"
    title = "Stage the virtio-win drivers from admin media, then make vioscsi/viostor boot-capable"
    fixes = ("WIN-VIRTIO-STORAGE-DRIVER", "WIN-VIOSCSI-BOOTSTART", "WIN-VIRTIO-MEDIA")
    order = 10

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan, supported = self.new_plan(facts, guest, "WIN-VIRTIO-STORAGE-DRIVER")
        if not supported:
            return plan
        if facts.driver_store is None:
            plan.reason = "driver store unknown (collector could not read it): nothing planned"
            return plan
        missing = [f"{s}.inf" for s in STORAGE if facts.staged(f"{s}.inf") is None]
        if not missing:
            plan.reason = "vioscsi/viostor staged in the driver store"
            return plan
        where = f"guest {guest}"
        media = setting(facts, options, "virtio_win_media")
        if not media:
            plan.reason = (f"needs virtio-win media: set guest var guestprep_virtio_win_media (controller path to "
                           f"virtio-win.iso or virtio-win-gt-x64.msi, a UNC path or an https URL) and "
                           f"guestprep_virtio_win_sha256; missing {', '.join(missing)}")
            plan.warnings.append("WIN-VIRTIO-STORAGE-DRIVER stays failing until media is configured")
            return plan
        media = str(media)
        kind = media_kind(media, where)
        sha = check_sha(setting(facts, options, "virtio_win_sha256"), where)
        a = arch(facts, where)
        if kind == "msi" and not media.lower().rsplit("\\", 1)[-1].rsplit("/", 1)[-1].startswith("virtio-win-gt"):
            plan.warnings.append(f"{media} is expected to be the drivers MSI ({DRIVERS_MSI[a]})")
        remote, changes = media_changes(media, sha, where)
        plan.changes.extend(changes)
        os_dir = iso_dir(facts)
        for inf in missing:
            plan.changes.append(Change("driver_stage", inf, {"media": remote},
                                       diff=f"+ driver store: {inf} ({os_dir}\\{a})\n"))
        syntax = "add-driver" if facts.os.build >= PNPUTIL_ADD_DRIVER_BUILD else "legacy"
        params: dict[str, Any] = {"media": remote, "sha256": sha, "kind": kind, "arch": a,
                                  "pnputil_syntax": syntax}
        if kind == "iso":
            params["drivers"] = [{"name": n, "inf": f"{base}.inf", "sys": f"{base}.sys",
                                  "folder": f"{folder}\\{os_dir}\\{a}", "required": n in STORAGE}
                                 for n, base, folder in ISO_DRIVERS]
        how = (f"pnputil {'/add-driver' if syntax == 'add-driver' else '-a'} <driver>\\{os_dir}\\{a}\\*.inf "
               "(exit 259 = staged, no device yet)" if kind == "iso" else "msiexec /i (DIFx stages the drivers)")
        plan.changes.append(script_change("install-virtio.ps1", params, f"stage: {how}; version read from the media\n"))
        plan.changes.extend(boot_changes(facts, list(STORAGE)))
        plan.changes.append(boot_script(facts, list(STORAGE), where))
        plan.reason = f"stage {', '.join(missing)} from {media} and make vioscsi/viostor boot-capable"
        return plan


@operation
class BootCritical(WindowsOperation):
    id = "windows.boot_critical"
    title = "Make the staged vioscsi/viostor boot-capable (service key, .sys, PCI ID mapping; read back)"
    fixes = ("WIN-VIOSCSI-BOOTSTART",)
    order = 20

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan, supported = self.new_plan(facts, guest, "WIN-VIOSCSI-BOOTSTART")
        if not supported:
            return plan
        if facts.boot_storage is None or facts.driver_store is None:
            plan.reason = "boot-start state unknown (collector could not read it): nothing planned"
            return plan
        unstaged = [s for s in STORAGE if facts.staged(f"{s}.inf") is None]
        if unstaged:
            plan.reason = (f"{', '.join(unstaged)} not staged yet: windows.virtio_drivers stages them and makes them "
                           "boot-capable")
            return plan
        todo = [s for s in STORAGE if facts.boot_missing(s)]
        if not todo:
            plan.reason = "vioscsi and viostor boot-capable (complete state read back)"
            return plan
        plan.changes.extend(boot_changes(facts, todo))
        plan.changes.append(boot_script(facts, todo, f"guest {guest}"))
        plan.reason = "complete " + "; ".join(f"{s}: {', '.join(facts.boot_missing(s) or [])}" for s in todo)
        return plan


@operation
class QemuGuestAgent(WindowsOperation):
    id = "windows.qemu_ga"
    title = "Install the QEMU guest agent from its own MSI (automatic start, read back)"
    fixes = ("WIN-QEMU-GA",)
    order = 15

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan, supported = self.new_plan(facts, guest, "WIN-QEMU-GA")
        if not supported:
            return plan
        ga = facts.qemu_ga
        if ga is None:
            plan.reason = "qemu-ga state unknown (collector could not read it): nothing planned"
            return plan
        if ga.get("installed"):
            plan.reason = (f"QEMU-GA installed, start mode {ga.get('start_mode')}"
                           + ("" if str(ga.get("start_mode")).lower() == "auto" else
                              ": not changed here (set it with: sc.exe config QEMU-GA start= auto)"))
            return plan
        where = f"guest {guest}"
        a = arch(facts, where)
        media = setting(facts, options, "qemu_ga_media")
        if media:
            media, kind = str(media), media_kind(str(media), where, "qemu_ga_media")
            sha = check_sha(setting(facts, options, "qemu_ga_sha256"), where)
            upload = True
        else:
            virtio = setting(facts, options, "virtio_win_media")
            if not virtio or media_kind(str(virtio), where) != "iso":
                plan.reason = (f"needs the agent MSI: the drivers MSI holds no qemu-ga. Set guest var "
                               f"guestprep_qemu_ga_media ({AGENT_MSI[a]} from the virtio-win ISO) and "
                               f"guestprep_qemu_ga_sha256, or give the ISO as virtio_win_media")
                plan.warnings.append("WIN-QEMU-GA stays failing until the agent MSI is configured")
                return plan
            media, kind = str(virtio), "iso"
            sha = check_sha(setting(facts, options, "virtio_win_sha256"), where)
            # windows.virtio_drivers (order 10) uploads the same ISO when it stages drivers
            upload = not any(facts.staged(f"{s}.inf") is None for s in STORAGE)
        if media.lower().startswith("https://"):
            raise ConfigError("the agent media must be a controller file or a UNC path (https is read by "
                              "windows.virtio_drivers only)", where=where)
        remote, changes = media_changes(media, sha, where, upload=upload)
        plan.changes.extend(changes)
        params: dict[str, Any] = {"media": remote, "sha256": sha, "kind": kind}
        if kind == "iso":
            params["msi_path"] = AGENT_MSI[a]
        plan.changes.append(Change("package", "qemu-ga", {"media": remote, "msi": params.get("msi_path", remote)},
                                   diff="+ service QEMU-GA (automatic start)\n"))
        plan.changes.append(script_change("install-qemu-ga.ps1", params,
                                          f"msiexec /i {params.get('msi_path', remote)} /qn; QEMU-GA Auto read back\n"))
        plan.reason = f"install qemu-ga from {params.get('msi_path', media)}"
        return plan
