"""VirtIO drivers, guest agent, driver-install blockers."""

from __future__ import annotations

from typing import Any, Iterable

from guestprep.checks.base import Outcome, fail, ok, skip
from guestprep.checks.windows._common import (
    load_matrix, unknown, version_key, windows_check,
)
from guestprep.models import Severity

STORAGE_INFS = ("vioscsi.inf", "viostor.inf")
VIRTIO_HWIDS = ("PCI\\VEN_1AF4",)
SCSI_ADAPTER_CLASS = "{4d36e97b-e325-11ce-bfc1-08002be10318}"


@windows_check(
    id="WIN-VIRTIO-STORAGE-DRIVER", severity=Severity.BLOCKER,
    title="VirtIO storage drivers (vioscsi, viostor) are in the driver store",
    rationale="A disk on VirtIO SCSI/Block needs vioscsi/viostor before first boot on KVM; without them "
              "Windows stops with INACCESSIBLE_BOOT_DEVICE.",
    remediation="guestprep prepare --apply installs virtio-win (guest-tools MSI or pnputil on the INF set) "
                "from media you provide (--set virtio_win_media=..., virtio_win_sha256=...).",
    fixed_by="windows.virtio_drivers",
    references=("https://pve.proxmox.com/wiki/Windows_VirtIO_Drivers",),
)
def virtio_storage_driver(facts: Any) -> Iterable[Outcome]:
    if facts.driver_store is None:
        yield unknown(facts, "driver_store")
        return
    for inf in STORAGE_INFS:
        if facts.driver_in_store(inf):
            yield ok(inf, f"{inf} is in the driver store")
        else:
            yield fail(inf, f"{inf} is not in the driver store", driver_store=[d.original_name for d in facts.driver_store])


@windows_check(
    id="WIN-VIOSCSI-BOOTSTART", severity=Severity.BLOCKER,
    title="vioscsi can boot the system disk: complete boot-start service, driver file, PCI ID mapping",
    rationale="Staging a driver creates no service and copies no .sys while no VirtIO device exists (as on "
              "VMware); a key holding only Start=0 does not boot either. Windows boots from a VirtIO SCSI disk "
              "only with Services\\vioscsi complete (Type=1, Start=0, ErrorControl, Group 'SCSI miniport', "
              "ImagePath), System32\\drivers\\vioscsi.sys present and the VirtIO PCI IDs mapped to the staged "
              "package (DriverDatabase\\DeviceIds from Windows 8 on, CriticalDeviceDatabase before), as virt-v2v "
              "writes offline. Otherwise: INACCESSIBLE_BOOT_DEVICE (0x7B).",
    remediation="guestprep prepare --apply stages virtio-win and makes vioscsi/viostor boot-capable from the staged "
                "package (set-boot-critical.ps1), each piece journaled and read back.",
    fixed_by="windows.boot_critical",
    references=("https://github.com/libguestfs/virt-v2v/blob/master/convert/windows_virtio.ml",
                "https://learn.microsoft.com/windows-hardware/drivers/install/hklm-system-currentcontrolset-services-registry-tree"),
)
def vioscsi_bootstart(facts: Any) -> Iterable[Outcome]:
    if facts.boot_storage is None:
        yield unknown(facts, "boot_storage")
        return
    # Proxmox's default controller is VirtIO SCSI: vioscsi must be complete; viostor is for a VirtIO Block disk.
    for name in ("vioscsi", "viostor"):
        missing = facts.boot_missing(name)
        state = facts.boot_storage[name]
        evidence = {"service": None if state.service is None else vars(state.service), "file": vars(state.file),
                    "device_ids": [vars(m) for m in state.device_ids]}
        if not missing:
            yield ok(name, f"{name} boot-start state complete (service key, {state.file.path}, PCI ID mapping)")
        elif name == "vioscsi":
            yield fail(name, f"{name} cannot boot the system disk; missing: {'; '.join(missing)}", **evidence)
        else:
            yield skip(f"{name} not boot-capable (needed only for a VirtIO Block boot disk); missing: "
                       f"{'; '.join(missing)}", name)


@windows_check(
    id="WIN-VIRTIO-MEDIA", severity=Severity.WARNING,
    title="The virtio-win release on the guest is known and consistent",
    rationale="The release that matters is the one actually staged, read from the media (ISO volume label, MSI "
              "ProductVersion) and from the staged drivers' DriverVer, not a declared default. Storage drivers "
              "from two releases mean an earlier install left packages behind.",
    remediation="Install vioscsi and viostor from one virtio-win release (guestprep prepare --apply with the "
                "media set in virtio_win_media).",
    fixed_by="windows.virtio_drivers",
)
def virtio_media(facts: Any) -> Iterable[Outcome]:
    if facts.driver_store is None:
        yield unknown(facts, "driver_store")
        return
    staged = {n: facts.staged(n) for n in STORAGE_INFS}
    versions = {n: d.version for n, d in staged.items() if d is not None and d.version}
    used = facts.virtio_win_used
    res = "virtio-win"
    if not versions and used is None:
        yield skip("no virtio-win storage driver staged yet: WIN-VIRTIO-WIN-SUPPORT judges the declared version", res)
        return
    if len(set(versions.values())) > 1:
        yield fail(res, "storage drivers from different releases: " + ", ".join(f"{n} DriverVer {v}"
                                                                               for n, v in sorted(versions.items())),
                   driver_versions=versions)
        return
    what = f"virtio-win {used['version']} (read from {used.get('source') or 'the media'})" if used else "virtio-win"
    driver = f"; staged DriverVer {next(iter(versions.values()))}" if versions else ""
    yield ok(res, f"{what}{driver}")


@windows_check(
    id="WIN-VIRTIO-WIN-SUPPORT", severity=Severity.BLOCKER,
    title="The virtio-win version used (read from the media, else configured) supports this Windows build",
    rationale="virtio-win drops old Windows releases and adds new ones; drivers for the wrong build do not "
              "install or do not load.",
    remediation="Pick a virtio-win version whose matrix entry covers the build (guest var "
                "guestprep_virtio_win_version), see guestprep/data/virtio_win_matrix.json.",
)
def virtio_win_support(facts: Any) -> Iterable[Outcome]:
    if facts.os is None:
        yield unknown(facts, "os")
        return
    matrix = load_matrix()
    # what was read from the media beats what was declared, which beats the default
    used = facts.virtio_win_used
    target = (used or {}).get("version") or facts.virtio_win_target or matrix["default_version"]
    build = facts.os.build
    entry = next((e for e in matrix["os"] if e["builds"][0] <= build <= e["builds"][1]), None)
    res = f"virtio-win {target}"
    if entry is None:
        yield fail(res, f"build {build} ({facts.os.caption}) is not in the virtio-win matrix", build=build)
        return
    too_old = version_key(target) < version_key(entry["first"])
    too_new = entry["last"] is not None and version_key(target) > version_key(entry["last"])
    if too_old:
        yield fail(res, f"{entry['name']} needs virtio-win >= {entry['first']}", build=build, target=target)
    elif too_new:
        yield fail(res, f"{entry['name']} was dropped after virtio-win {entry['last']}", build=build, target=target)
    else:
        yield ok(res, f"{entry['name']} (build {build}) is supported by virtio-win {target}")


@windows_check(
    id="WIN-DEVICE-INSTALL-POLICY", severity=Severity.BLOCKER,
    title="No Group Policy device-installation restriction blocks the VirtIO devices",
    rationale="'Prevent installation of devices not described by other policy settings' or a deny list "
              "matching VEN_1AF4 stops Windows from binding vioscsi to the new controller at first boot.",
    remediation="Exempt the VirtIO hardware IDs/SCSIAdapter class in the GPO (or unlink it) before the cutover; "
                "guestprep does not edit domain policy.",
)
def device_install_policy(facts: Any) -> Iterable[Outcome]:
    pol = facts.device_install_policy
    if pol is None:
        yield unknown(facts, "device_install_policy")
        return
    problems = []
    if pol.get("deny_unspecified"):
        problems.append("DenyUnspecified=1 (devices not described by policy are blocked)")
    ids = [i for i in pol.get("deny_device_ids") or [] if any(str(i).upper().startswith(h) for h in VIRTIO_HWIDS)]
    if ids:
        problems.append(f"DenyDeviceIDs matches VirtIO: {', '.join(ids)}")
    classes = [c for c in pol.get("deny_device_classes") or [] if str(c).lower() == SCSI_ADAPTER_CLASS]
    if classes:
        problems.append("DenyDeviceClasses blocks SCSIAdapter")
    if problems:
        yield fail("DeviceInstall\\Restrictions", "; ".join(problems), policy=pol)
    else:
        yield ok("DeviceInstall\\Restrictions", "no restriction affects VirtIO devices")


@windows_check(
    id="WIN-ANTIVIRUS", severity=Severity.WARNING,
    title="No third-party antivirus that may block a new boot driver",
    rationale="Endpoint protection products can block or quarantine a newly boot-critical driver and "
              "the guest then fails at first boot on KVM.",
    remediation="Put the agent in maintenance mode / allow-list virtio drivers for the cutover window.",
)
def antivirus(facts: Any) -> Iterable[Outcome]:
    if facts.antivirus is None:
        yield unknown(facts, "antivirus")
        return
    third = [a for a in facts.antivirus if not a.get("vendor_microsoft")]
    for a in third:
        yield fail(str(a.get("name")), f"{a.get('name')} ({a.get('service')}) is {a.get('state')}", product=a)
    if not third:
        yield ok("antivirus", "only Microsoft Defender (or none) found")


@windows_check(
    id="WIN-VMWARE-TOOLS", severity=Severity.WARNING,
    title="VMware Tools removal is scheduled for the first boot on KVM",
    rationale="VMware Tools' installer refuses to uninstall off ESXi and its services fail at every boot on KVM; "
              "removing them before the cutover loses the VMware drivers the guest still runs on.",
    remediation="guestprep prepare --apply installs a first-boot task that removes VMware Tools only when the "
                "guest runs on KVM, then deletes itself.",
    fixed_by="windows.vmware_tools_removal",
)
def vmware_tools(facts: Any) -> Iterable[Outcome]:
    tools = facts.vmware_tools
    if tools is None:
        yield unknown(facts, "vmware_tools")
        return
    if not tools.get("installed"):
        yield ok("VMware Tools", "not installed")
        return
    scheduled = (facts.guestprep_state.get("vmware_tools_removal") or {}).get("product_code")
    if scheduled and scheduled == tools.get("product_code"):
        yield ok("VMware Tools", f"removal of {scheduled} scheduled for the first boot on KVM")
    else:
        yield fail("VMware Tools", f"VMware Tools {tools.get('version')} installed; no removal scheduled",
                   product_code=tools.get("product_code"))


@windows_check(
    id="WIN-QEMU-GA", severity=Severity.WARNING,
    title="QEMU guest agent is installed and starts automatically",
    rationale="Without qemu-ga Proxmox cannot freeze filesystems for backups, read IPs or shut the guest "
              "down cleanly.",
    remediation="guestprep prepare --apply installs qemu-ga from its own MSI (guest-agent\\qemu-ga-x86_64.msi "
                "on the virtio-win ISO, or qemu_ga_media); the drivers MSI does not contain it.",
    fixed_by="windows.qemu_ga",
)
def qemu_guest_agent(facts: Any) -> Iterable[Outcome]:
    qga = facts.qemu_ga
    if qga is None:
        yield unknown(facts, "qemu_ga")
    elif not qga.get("installed"):
        yield fail("QEMU-GA", "qemu-ga service is not installed")
    elif str(qga.get("start_mode") or "").lower() not in ("auto", "automatic"):
        yield fail("QEMU-GA", f"QEMU-GA start mode is {qga.get('start_mode')}, needs Auto")
    else:
        yield ok("QEMU-GA", "QEMU-GA installed, automatic start (it runs once the virtio-serial device exists)")
