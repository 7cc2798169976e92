"""Disks: alignment, free space, SAN policy."""

from __future__ import annotations

from typing import Any, Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.windows._common import unknown, windows_check
from guestprep.models import Severity

ALIGN = 4096
MIN_SYSTEM_FREE = 100 * 1024 * 1024


@windows_check(
    id="WIN-PARTITION-ALIGNMENT", severity=Severity.WARNING,
    title="Partitions start on a 4 KiB boundary",
    rationale="Legacy 63-sector starts split every 4K block across two on 4K-sector storage and ZFS: "
              "about half the write throughput.",
    remediation="Realign after the move (e.g. copy to a new aligned volume); guestprep does not move partitions.",
)
def partition_alignment(facts: Any) -> Iterable[Outcome]:
    if facts.disks is None:
        yield unknown(facts, "disks")
        return
    for d in facts.disks:
        for p in d.partitions:
            res = f"disk{d.number}/partition{p.number}" + (f" ({p.drive_letter}:)" if p.drive_letter else "")
            if p.offset % ALIGN:
                yield fail(res, f"starts at byte {p.offset} (sector {p.offset // 512}), not 4 KiB aligned",
                           offset=p.offset)
            else:
                yield ok(res, f"starts at byte {p.offset}")


@windows_check(
    id="WIN-SYSTEM-FREE-SPACE", severity=Severity.BLOCKER,
    title="The system volume has at least 100 MiB free",
    rationale="Driver installation, the first-boot device setup and the page file need room on C:.",
    remediation="Free space on the system volume before preparing the guest.",
)
def system_free_space(facts: Any) -> Iterable[Outcome]:
    drive = (facts.os.system_drive if facts.os else "C:") or "C:"
    if facts.volumes is None:
        yield unknown(facts, "volumes")
        return
    vol = facts.volume(drive)
    if vol is None:
        yield fail(drive, f"system volume {drive} not found among {[v.drive_letter for v in facts.volumes]}")
    elif vol.free < MIN_SYSTEM_FREE:
        yield fail(drive, f"{vol.free // (1024 * 1024)} MiB free, needs 100 MiB", free=vol.free)
    else:
        yield ok(drive, f"{vol.free // (1024 * 1024)} MiB free")


@windows_check(
    id="WIN-SAN-POLICY", severity=Severity.WARNING,
    title="Data disks come online on the new controller (SAN policy OnlineAll)",
    rationale="With SAN policy OfflineShared/OfflineAll, Windows sees disks on a new bus as new disks and "
              "leaves the non-boot ones offline: services miss their data volumes.",
    remediation="guestprep prepare --apply sets the SAN policy to OnlineAll (backed up, journaled).",
    fixed_by="windows.san_policy",
)
def san_policy(facts: Any) -> Iterable[Outcome]:
    policy = facts.san_policy
    if policy is None:
        yield unknown(facts, "disks")
        return
    data_disks = [d for d in facts.disks or [] if not d.is_boot and not d.is_system]
    for d in data_disks:
        if d.is_offline or d.is_read_only:
            yield fail(f"disk{d.number}", f"disk {d.number} is {'offline' if d.is_offline else 'read-only'} now")
    if policy == "OnlineAll":
        yield ok("san-policy", "SAN policy OnlineAll")
    else:
        yield fail("san-policy", f"SAN policy {policy}: non-boot disks would come up offline on KVM",
                   policy=policy, data_disks=[d.number for d in data_disks])
