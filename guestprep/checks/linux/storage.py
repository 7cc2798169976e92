"""Disks, names and filesystems that must survive the change of controller."""

from __future__ import annotations

import re
from typing import Iterable

from guestprep.checks.base import Outcome, error, fail, ok
from guestprep.checks.registry import check
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Severity

# Kernel-assigned names: their numbering follows controller probe order and changes on VirtIO.
UNSTABLE_DEV_RE = re.compile(r"^/dev/(sd[a-z]+|hd[a-z]+|vd[a-z]+|xvd[a-z]+|nvme\d+n\d+|cciss/c\d+d\d+)(p?\d+)?$")

MIB = 1024 * 1024
FREE_MIN = {"/": 100 * MIB, "/boot": 50 * MIB}


def _unstable(spec: str) -> bool:
    return bool(UNSTABLE_DEV_RE.match(spec))


@check(
    id="LNX-UNSTABLE-DEVNAMES", severity=Severity.BLOCKER, os="linux", phase="any",
    title="fstab, crypttab and root=/resume= use stable device names",
    rationale="/dev/sdX names follow probe order: on virtio-scsi the disks may enumerate differently (or as "
              "/dev/vdX on virtio-blk) and the guest mounts the wrong disk or none.",
    remediation="Run `guestprep prepare --apply`: it rewrites /dev/sdX entries to UUID= (backup and diff in the plan).",
    fixed_by="linux.stable_device_names",
)
def stable_device_names(facts: LinuxFacts) -> Iterable[Outcome]:
    bad = []
    for e in facts.fstab:
        if _unstable(e.spec):
            bad.append(("/etc/fstab", e.mountpoint, e.spec))
    for c in facts.crypttab:
        if _unstable(c.device):
            bad.append(("/etc/crypttab", c.name, c.device))
    for tok in (facts.default_grub_cmdline or "").split():
        for key in ("root=", "resume="):
            if tok.startswith(key) and _unstable(tok[len(key):]):
                bad.append(("/etc/default/grub", key, tok[len(key):]))
    # The bootloader config is what the next boot (on Proxmox) uses; the running command line
    # only tells what the last boot used, so it decides only when the config could not be read.
    if facts.bootloader_args is not None:
        for tok in facts.bootloader_args:
            key, _, val = tok.partition("=")
            if _unstable(val):
                bad.append((facts.bootloader_config or "bootloader config", f"{key}=", val))
    else:
        for key, val in (("root=", facts.cmdline_root), ("resume=", facts.cmdline_resume)):
            if val and _unstable(val):
                bad.append(("/proc/cmdline", key, val))
    for where, what, spec in sorted(set(bad)):
        yield fail(f"{where}:{what}", f"{where} refers to {what} as {spec}", file=where, entry=what, device=spec)
    if not bad:
        yield ok("", f"{len(facts.fstab)} fstab, {len(facts.crypttab)} crypttab entries and the boot arguments use stable names")


@check(
    id="LNX-PART-ALIGN", severity=Severity.WARNING, os="linux", phase="any",
    title="Partitions start on a 4 KiB boundary",
    rationale="Legacy partitions starting at sector 63 straddle 4 KiB blocks: every guest write becomes a "
              "read-modify-write on 4K storage (ZFS, modern SSDs), roughly halving write throughput.",
    remediation="Plan a realignment (new aligned disk and a file-level copy, or offline tools) before or "
                "right after the move; guestprep reports the start sector of each misaligned partition.",
    references=("https://en.wikipedia.org/wiki/Advanced_Format",),
)
def partition_alignment(facts: LinuxFacts) -> Iterable[Outcome]:
    for d in facts.block_devices:
        for p in d.partitions:
            if p.size_sectors is not None and p.size_sectors <= 2:
                continue  # an extended-partition container (sysfs size 2): holds no data, its start does not matter
            if p.start_sector is None:
                yield error(f"start sector of /dev/{p.name} unknown", p.name)
                continue
            offset = p.start_sector * 512
            if offset % 4096:
                yield fail(p.name, f"/dev/{p.name} starts at sector {p.start_sector} (byte {offset}), not 4 KiB aligned",
                           start_sector=p.start_sector, legacy_63=p.start_sector == 63)
            else:
                yield ok(p.name, f"/dev/{p.name} starts at sector {p.start_sector}", start_sector=p.start_sector)


@check(
    id="LNX-FREE-SPACE", severity=Severity.BLOCKER, os="linux", phase="pre",
    title="Enough free space on / (100 MiB) and /boot (50 MiB) to prepare the guest",
    rationale="Rebuilding every initramfs needs room in /boot for the new images and their backups; "
              "installing the guest agent needs room on /.",
    remediation="Free space (old kernels: the package manager's autoremove; logs; caches) before preparing.",
)
def free_space(facts: LinuxFacts) -> Iterable[Outcome]:
    root = facts.mount("/")
    if root is None or root.free_bytes is None:
        yield error("free space on / unknown (df gave nothing)", "/")
        return
    for path, need in FREE_MIN.items():
        m = facts.mount(path)
        if m is None:
            continue  # /boot on the root filesystem
        if m.free_bytes is None:
            yield error(f"free space on {path} unknown", path)
        elif m.free_bytes < need:
            yield fail(path, f"{path} has {m.free_bytes // MIB} MiB free, needs {need // MIB} MiB",
                       free_bytes=m.free_bytes, required_bytes=need)
        else:
            yield ok(path, f"{path} has {m.free_bytes // MIB} MiB free", free_bytes=m.free_bytes)


@check(
    id="LNX-LVM-DEVICESFILE", severity=Severity.WARNING, os="linux", phase="any",
    title="LVM devices file will still find the volume groups after the move",
    rationale="RHEL 9 family hosts keep /etc/lvm/devices/system.devices keyed by device ids (WWID, serial, "
              "name): on new virtual disks the ids differ, LVM ignores the PVs and the root VG is not found.",
    remediation="Run `guestprep prepare --apply`: it re-keys the devices file on PV UUIDs (or disables it for the "
                "first boot and re-imports), with a backup.",
    fixed_by="linux.lvm_devices_file",
)
def lvm_devices_file(facts: LinuxFacts) -> Iterable[Outcome]:
    if facts.lvm_devices_file is None or facts.lvm_use_devicesfile is False:
        yield ok("lvm", "no LVM devices file in use")
        return
    entries = facts.lvm_devices_entries or []
    fragile = [e for e in entries if re.search(r"IDTYPE=(sys_wwid|sys_serial|devname|wwid_naa|wwid_eui|wwid_t10)", e)]
    if fragile:
        yield fail("lvm", f"{len(fragile)} devices-file entr{'y' if len(fragile) == 1 else 'ies'} keyed on device ids "
                   "that change with the new controller", entries=fragile[:8])
    else:
        yield ok("lvm", "devices file entries do not depend on controller-specific ids")


@check(
    id="LNX-BTRFS-ROOT", severity=Severity.INFO, os="linux", phase="pre",
    title="Btrfs root filesystem",
    rationale="Btrfs root works on VirtIO, but snapshots/subvolumes in fstab and the bootloader must survive "
              "the move, and `discard=async` matters on thin storage.",
    remediation="Keep subvol= options; enable discard on the Proxmox disk (finalize sets discard=on).",
)
def btrfs_root(facts: LinuxFacts) -> Iterable[Outcome]:
    if facts.root_fstype == "btrfs":
        yield fail("/", "root filesystem is Btrfs", fstype="btrfs")
    else:
        yield ok("/", f"root filesystem is {facts.root_fstype or 'unknown'}")
