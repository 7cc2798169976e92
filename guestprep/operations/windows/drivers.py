"""virtio-win install (drivers + qemu-ga) and boot-critical storage drivers."""

from __future__ import annotations

from typing import Any

from guestprep.errors import ConfigError
from guestprep.models import Change, Plan
from guestprep.operations.base import operation
from guestprep.operations.windows._common import (SERVICES, WindowsOperation, check_remote_path, check_sha, local_media,
                                                   registry_change, script_change, setting)

STORAGE = ("vioscsi", "viostor")
# virtio-win ISO folder per build (the INF set used with pnputil)
ISO_DIRS = [(9200, "2k12"), (9600, "2k12R2"), (14393, "2k16"), (17763, "2k19"), (20348, "2k22"), (26100, "2k25")]
ISO_CLIENT_DIRS = [(9200, "w8"), (9600, "w8.1"), (10240, "w10"), (22000, "w11")]


def iso_dir(facts: Any) -> str:
    table = ISO_DIRS if facts.os.is_server else ISO_CLIENT_DIRS
    best = table[0][1]
    for build, name in table:
        if facts.os.build >= build:
            best = name
    return best


@operation
class VirtioDrivers(WindowsOperation):
    id = "windows.virtio_drivers"
    title = "Install virtio-win drivers and the QEMU guest agent from admin media, storage drivers boot-start"
    fixes = ("WIN-VIRTIO-STORAGE-DRIVER", "WIN-QEMU-GA", "WIN-VIOSCSI-BOOTSTART")
    order = 10

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="WIN-VIRTIO-STORAGE-DRIVER")
        if not facts.supported:
            plan.reason = f"guest not supported: {facts.unsupported_reason}"
            return plan
        missing = [f"{s}.inf" for s in STORAGE if not facts.driver_in_store(f"{s}.inf")]
        ga_missing = not (facts.qemu_ga or {}).get("installed")
        if not missing and not ga_missing:
            plan.reason = "vioscsi/viostor in the driver store and qemu-ga installed"
            return plan
        where = f"guest {guest}"
        media = setting(facts, options, "virtio_win_media")
        if not media:
            plan.reason = (f"needs virtio-win media: set guest var guestprep_virtio_win_media (controller path to "
                           f"virtio-win-gt-x64.msi or virtio-win.iso, a UNC path or an https URL) and "
                           f"guestprep_virtio_win_sha256; missing {', '.join(missing + (['qemu-ga'] if ga_missing else []))}")
            plan.warnings.append("WIN-VIRTIO-STORAGE-DRIVER stays failing until media is configured")
            return plan
        media = str(media)
        sha = check_sha(setting(facts, options, "virtio_win_sha256"), where)
        lower = media.lower()
        if not (lower.endswith(".msi") or lower.endswith(".iso")):
            raise ConfigError(f"virtio-win media must be an .msi or .iso, got {media}", where=where)
        if lower.startswith("https://") or media.startswith("\\\\"):
            remote = check_remote_path(media, where)
            plan.changes.append(Change("fetch", media, {"sha256": sha}, diff=f"guest reads {media}, verifies SHA-256\n"))
        elif lower.startswith("http://"):
            raise ConfigError("virtio-win media over plain http is refused; use https or a UNC path", where=where)
        else:
            local, remote = local_media(media, sha, where)
            plan.changes.append(Change("upload", remote, {"local": local, "sha256": sha},
                                       diff=f"+ {remote} (sha256 {sha[:16]}...)\n"))
        for inf in missing:
            plan.changes.append(Change("driver_install", inf, {"media": remote}))
        if ga_missing:
            plan.changes.append(Change("package", "qemu-ga", {"media": remote}))
        boot = [s for s in STORAGE]
        for s in boot:
            svc = facts.service(s)
            plan.changes.append(registry_change(SERVICES + s, "Start", svc.start if svc else None, 0))
        plan.changes.append(script_change("install-virtio.ps1", {
            "media": remote, "sha256": sha, "boot_critical": boot, "os_dir": iso_dir(facts)},
            "install (msiexec /i ... /qn or pnputil /add-driver), then Start=0 read back\n"))
        plan.reason = f"install {', '.join(missing + (['qemu-ga'] if ga_missing else []))} from {media}"
        return plan


@operation
class BootCritical(WindowsOperation):
    id = "windows.boot_critical"
    title = "Make vioscsi and viostor boot-start (verified by reading the registry back)"
    fixes = ("WIN-VIOSCSI-BOOTSTART",)
    order = 20

    def plan(self, facts: Any, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="WIN-VIOSCSI-BOOTSTART")
        if not facts.supported:
            plan.reason = f"guest not supported: {facts.unsupported_reason}"
            return plan
        absent = [s for s in STORAGE if facts.service(s) is None]
        if absent:
            plan.reason = f"{', '.join(absent)} not installed yet: windows.virtio_drivers installs and sets boot start"
            return plan
        todo = [s for s in STORAGE if facts.service(s).start != 0]
        if not todo:
            plan.reason = "vioscsi and viostor already boot-start"
            return plan
        for s in todo:
            plan.changes.append(registry_change(SERVICES + s, "Start", facts.service(s).start, 0))
        plan.changes.append(script_change("set-boot-critical.ps1", {"services": todo}, "Start=0, read back\n"))
        plan.reason = f"set {', '.join(todo)} boot-start"
        return plan
