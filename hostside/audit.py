"""Offline disk audit: partition table, alignment, filesystems, implied firmware.

Reads the image through qemu (any format qemu opens), never the guest, and
reports findings in the same model as the guest checks (guestprep.models.Finding).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guestprep.errors import GuestprepError
from guestprep.models import Finding, Severity, Status
from hostside import filesystems, partitions
from hostside.image import Source
from hostside.qemu import Reader


@dataclass(frozen=True)
class CheckMeta:
    id: str
    severity: Severity
    title: str
    remediation: str


CHECKS = {c.id: c for c in (
    CheckMeta("IMG-PART-TABLE", Severity.BLOCKER,
              "The partition table is readable and consistent",
              "Repair the table in the source VM (or restore it) before converting: a "
              "damaged table will not boot on Proxmox either."),
    CheckMeta("IMG-PART-LEGACY-63", Severity.WARNING,
              "No partition starts at the legacy sector 63",
              "Realign after the move (e.g. gparted/Partition Wizard move to a 1 MiB "
              "boundary, or rebuild the volume): every 4 KiB guest write on 4K storage "
              "becomes two read-modify-writes, halving write performance."),
    CheckMeta("IMG-PART-ALIGN-4K", Severity.WARNING,
              "Partitions start on a 4 KiB boundary",
              "Realign the partition to a multiple of 8 sectors (1 MiB preferred)."),
    CheckMeta("IMG-PART-ALIGN-1M", Severity.INFO,
              "Partitions start on a 1 MiB boundary",
              "Nothing required; 1 MiB alignment also covers RAID stripes and large "
              "volblocksizes."),
    CheckMeta("IMG-GPT-BACKUP", Severity.WARNING,
              "The backup GPT header sits at the end of the disk and matches the primary",
              "Run `sgdisk -e` (move the backup header to the end) or `gdisk` verify/write "
              "on the converted disk; firmware that finds a bad primary header has no "
              "fallback otherwise."),
    CheckMeta("IMG-FIRMWARE-UEFI", Severity.INFO,
              "Firmware the disk layout implies",
              "A UEFI disk (GPT + EFI system partition) needs the Proxmox VM created with "
              "bios: ovmf, machine: q35 and an efidisk0; SeaBIOS reports 'No bootable "
              "device'."),
)}


@dataclass
class AuditResult:
    source: str
    table: partitions.PartitionTable
    firmware: str
    findings: list[Finding] = field(default_factory=list)
    whole_disk_fs: str | None = None

    def to_dict(self) -> dict:
        return {"source": self.source, "firmware": self.firmware,
                "whole_disk_filesystem": self.whole_disk_fs,
                "table": self.table.to_dict(),
                "findings": [f.to_dict() for f in self.findings]}


def _finding(guest: str, check_id: str, ok: bool, message: str, resource: str = "",
             evidence: dict | None = None) -> Finding:
    meta = CHECKS[check_id]
    return Finding(guest=guest, check_id=check_id, severity=meta.severity,
                   status=Status.PASS if ok else Status.FAIL, title=meta.title,
                   message=message, resource=resource, evidence=evidence or {},
                   remediation="" if ok else meta.remediation)


def implied_firmware(table: partitions.PartitionTable) -> str:
    if any(p.is_esp for p in table.partitions):
        return "uefi"
    if table.scheme == "mbr" and table.partitions:
        return "bios"
    if table.scheme == "gpt" and any(p.type == partitions.BIOS_BOOT_GUID
                                     for p in table.partitions):
        return "bios"
    return "unknown"


def audit(source: Source, guest: str | None = None) -> AuditResult:
    guest = guest or source.spec.label
    with Reader(source.spec, source.virtual_size) as reader:
        table = partitions.parse(reader.read, source.virtual_size)
        for p in table.partitions:
            if p.kind == "extended" or p.end > table.disk_sectors:
                continue
            p.filesystem = filesystems.detect(
                reader.read(p.start * partitions.SECTOR, filesystems.PROBE_BYTES))
        whole = None
        if table.scheme == "none":
            whole = filesystems.detect(reader.read(0, filesystems.PROBE_BYTES))
    result = AuditResult(source.spec.label, table, implied_firmware(table), whole_disk_fs=whole)
    result.findings = list(_findings(result, guest))
    return result


def _findings(result: AuditResult, guest: str):
    table = result.table
    if table.scheme == "none":
        what = f"a whole-disk {result.whole_disk_fs} filesystem" if result.whole_disk_fs \
            else "blank or unknown content"
        yield _finding(guest, "IMG-PART-TABLE", True, f"no partition table: {what}",
                       evidence={"scheme": "none", "filesystem": result.whole_disk_fs})
    elif table.problems:
        yield _finding(guest, "IMG-PART-TABLE", False, "; ".join(table.problems),
                       evidence={"scheme": table.scheme, "problems": table.problems})
    else:
        yield _finding(guest, "IMG-PART-TABLE", True,
                       f"{table.scheme.upper()} with {len(table.partitions)} partition(s)",
                       evidence={"scheme": table.scheme})
    for p in table.partitions:
        if p.kind == "extended":
            continue  # a container: its logical partitions are checked instead
        res = f"partition {p.number}"
        ev = {"start_sector": p.start, "start_bytes": p.start * 512, "type": p.type_name,
              "filesystem": p.filesystem}
        legacy = p.start == 63 or (p.start % 63 == 0 and p.start % 8 != 0)
        yield _finding(guest, "IMG-PART-LEGACY-63", not legacy,
                       f"starts at sector {p.start} (legacy CHS 63-sector alignment)" if legacy
                       else f"starts at sector {p.start}", res, ev)
        yield _finding(guest, "IMG-PART-ALIGN-4K", p.start % 8 == 0,
                       f"starts at byte {p.start * 512}, "
                       f"{'a' if p.start % 8 == 0 else 'not a'} multiple of 4096", res, ev)
        yield _finding(guest, "IMG-PART-ALIGN-1M", p.start % 2048 == 0,
                       f"starts at byte {p.start * 512}, "
                       f"{'a' if p.start % 2048 == 0 else 'not a'} multiple of 1 MiB", res, ev)
    if table.gpt is not None:
        g = table.gpt
        yield _finding(guest, "IMG-GPT-BACKUP", g.backup_ok,
                       "backup GPT header valid at the last LBA" if g.backup_ok
                       else g.backup_problem, "gpt", {"backup_ok": g.backup_ok})
    esp = [p.number for p in table.partitions if p.is_esp]
    fw = result.firmware
    msg = {"uefi": f"EFI system partition ({', '.join(map(str, esp))}) on "
                   f"{table.scheme.upper()}: boots with UEFI (OVMF on Proxmox)",
           "bios": "MBR/BIOS-boot layout: boots with SeaBIOS",
           "unknown": "no boot layout recognised"}[fw]
    yield _finding(guest, "IMG-FIRMWARE-UEFI", fw != "uefi", msg,
                   evidence={"firmware": fw, "esp_partitions": esp})


def manifest_section(source: Source, guest: str | None = None) -> dict:
    """The audit as the conversion manifest records it; a disk qemu can convert but
    whose table we cannot read gets the error instead of stopping the conversion."""
    try:
        result = audit(source, guest)
    except GuestprepError as exc:
        return {"performed": False, "error": str(exc)}
    d = result.to_dict()
    d["performed"] = True
    d["failing"] = [{"check_id": f.check_id, "severity": f.severity.value,
                     "resource": f.resource, "message": f.message}
                    for f in result.findings if f.is_open]
    return d
