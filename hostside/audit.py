"""Offline disk audit: partition table, alignment, filesystems, implied firmware.

Reads the image through qemu (any format qemu opens), never the guest, and
reports findings in the same model as the guest checks (guestprep.models.Finding).
The checks' metadata and verdicts live here, stdlib-only, because this module ships in
the zipapp; guestprep/checks/image/ registers the same checks in guestprep's registry.
"""

from __future__ import annotations

import os
from hostside.record import dataclass, field
TYPE_CHECKING = False   # typing is not imported at run time (start-up time, issue 17)

from guestprep.errors import GuestprepError
from hostside import filesystems, partitions

if TYPE_CHECKING:
    from typing import Any, Iterator

    from guestprep.models import Finding, Severity
    from hostside.image import Source

# guestprep.models (Finding, Severity, Status: its enums, a dozen dataclasses, pathlib,
# ipaddress, typing) is imported only by audit() and IMAGE_CHECKS, i.e. by the `audit`
# command and the registry. A conversion records its audit from the verdicts directly
# (manifest_section): start-up time is part of every conversion (issue 17).


@dataclass(frozen=True)
class ImageCheck:
    """One disk-image check's metadata (what the registry shows as prowler-style metadata)."""

    id: str
    severity: Severity
    title: str
    rationale: str
    remediation: str
    references: tuple[str, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """What one image check says about one resource of the audited disk."""

    check_id: str
    ok: bool
    message: str
    resource: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


# id, severity (a guestprep.models.Severity value), title, rationale, remediation, references
_CHECKS: tuple[tuple, ...] = (
    ("IMG-PART-TABLE", "blocker",
     "The partition table is readable and consistent",
     "Firmware and boot loaders find the boot partition through the partition "
     "table; a table that overlaps itself or points past the disk's end does not "
     "boot after the conversion either.",
     "Repair the table in the source VM (or restore it) before converting: a "
     "damaged table will not boot on Proxmox either.",
     ("https://uefi.org/specs/UEFI/2.10/05_GUID_Partition_Table_Format.html",)),
    ("IMG-PART-LEGACY-63", "warning",
     "No partition starts at the legacy sector 63",
     "Old partitioning tools started the first partition at sector 63 (CHS "
     "geometry); on 4 KiB-sector storage every guest write then straddles two "
     "physical blocks.",
     "Realign after the move (e.g. gparted/Partition Wizard move to a 1 MiB "
     "boundary, or rebuild the volume): every 4 KiB guest write on 4K storage "
     "becomes two read-modify-writes, halving write performance.",
     ("https://en.wikipedia.org/wiki/Advanced_Format",)),
    ("IMG-PART-ALIGN-4K", "warning",
     "Partitions start on a 4 KiB boundary",
     "Proxmox storage (ZFS, Ceph, LVM-thin on 4Kn disks) works in 4 KiB blocks or "
     "larger; a partition off that boundary turns each write into a "
     "read-modify-write.",
     "Realign the partition to a multiple of 8 sectors (1 MiB preferred).",
     ("https://en.wikipedia.org/wiki/Advanced_Format",)),
    ("IMG-PART-ALIGN-1M", "info",
     "Partitions start on a 1 MiB boundary",
     "1 MiB is the default of current partitioning tools and a multiple of every "
     "common block, stripe and volblocksize.",
     "Nothing required; 1 MiB alignment also covers RAID stripes and large "
     "volblocksizes."),
    ("IMG-GPT-BACKUP", "warning",
     "The backup GPT header sits at the end of the disk and matches the primary",
     "UEFI firmware falls back to the backup GPT header when the primary is "
     "damaged; a backup that is missing or not at the last LBA (common after a "
     "disk was grown) leaves no fallback.",
     "Run `sgdisk -e` (move the backup header to the end) or `gdisk` verify/write "
     "on the converted disk; firmware that finds a bad primary header has no "
     "fallback otherwise.",
     ("https://uefi.org/specs/UEFI/2.10/05_GUID_Partition_Table_Format.html",)),
    ("IMG-FIRMWARE-UEFI", "info",
     "Firmware the disk layout implies",
     "A disk laid out for UEFI (GPT with an EFI system partition) boots only "
     "under UEFI firmware; the Proxmox VM must be created to match.",
     "A UEFI disk (GPT + EFI system partition) needs the Proxmox VM created with "
     "bios: ovmf, machine: q35 and an efidisk0; SeaBIOS reports 'No bootable "
     "device'.",
     ("https://pve.proxmox.com/wiki/OVMF/UEFI_Boot_Entries",)),
)
_BY_ID = {c[0]: c for c in _CHECKS}


def _image_checks() -> dict[str, ImageCheck]:
    from guestprep.models import Severity
    return {c[0]: ImageCheck(c[0], Severity(c[1]), *c[2:]) for c in _CHECKS}


def __getattr__(name: str):
    """IMAGE_CHECKS ({id: ImageCheck}) is built on first use (PEP 562), with the models."""
    if name == "IMAGE_CHECKS":
        checks = globals()["IMAGE_CHECKS"] = _image_checks()
        return checks
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _finding(guest: str, v: Verdict) -> Finding:
    from guestprep.models import Finding, Status
    meta = _image_checks_cached()[v.check_id]
    return Finding(guest=guest, check_id=v.check_id, severity=meta.severity,
                   status=Status.PASS if v.ok else Status.FAIL, title=meta.title,
                   message=v.message, resource=v.resource, evidence=v.evidence,
                   remediation="" if v.ok else meta.remediation)


def _image_checks_cached() -> dict[str, ImageCheck]:
    return globals().get("IMAGE_CHECKS") or __getattr__("IMAGE_CHECKS")


def _finding_dict(guest: str, v: Verdict) -> dict:
    """`_finding(guest, v).to_dict()` without guestprep.models (a test holds them equal)."""
    _, severity, title, _, remediation, *_ = _BY_ID[v.check_id]
    return {"guest": guest, "check_id": v.check_id, "severity": severity,
            "status": "pass" if v.ok else "fail", "title": title, "message": v.message,
            "resource": v.resource, "evidence": v.evidence,
            "remediation": "" if v.ok else remediation, "fixed_by": None, "waiver": None}


def implied_firmware(table: partitions.PartitionTable) -> str:
    if any(p.is_esp for p in table.partitions):
        return "uefi"
    if table.scheme == "mbr" and table.partitions:
        return "bios"
    if table.scheme == "gpt" and any(p.type == partitions.BIOS_BOOT_GUID
                                     for p in table.partitions):
        return "bios"
    return "unknown"


class ViewReader:
    """Reads byte ranges through a source's own map (`Source.view`): pread of the data
    runs, zeros elsewhere. No qemu-img process per read (each costs 10-20 ms)."""

    def __init__(self, view, size: int):
        self.view = view
        self.size = size
        self._fds: dict[str, int] = {}

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        end = min(offset + length, self.size)
        out = bytearray(end - offset)
        for r in self.view:
            a, b = max(offset, r.start), min(end, r.end)
            if a >= b or not r.is_data:
                continue
            fd = self._fds.get(r.path)
            if fd is None:
                fd = self._fds[r.path] = os.open(r.path, os.O_RDONLY)
            chunk = os.pread(fd, b - a, r.offset + (a - r.start))
            out[a - offset:a - offset + len(chunk)] = chunk
        return bytes(out)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def __enter__(self) -> "ViewReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _reader(source: Source):
    if source.view is not None:
        return ViewReader(source.view, source.virtual_size)
    from hostside.qemu import Reader
    return Reader(source.spec, source.virtual_size)


def audit(source: Source, guest: str | None = None) -> AuditResult:
    result = _read_layout(source)
    result.findings = [_finding(guest or source.spec.label, v) for v in verdicts(result)]
    return result


def _read_layout(source: Source) -> AuditResult:
    """The partition table, filesystems and implied firmware; no findings yet."""
    with _reader(source) as reader:
        table = partitions.parse(reader.read, source.virtual_size)
        for p in table.partitions:
            if p.kind == "extended" or p.end > table.disk_sectors:
                continue
            p.filesystem = filesystems.detect(
                reader.read(p.start * partitions.SECTOR, filesystems.PROBE_BYTES))
        whole = None
        if table.scheme == "none":
            whole = filesystems.detect(reader.read(0, filesystems.PROBE_BYTES))
    return AuditResult(source.spec.label, table, implied_firmware(table), whole_disk_fs=whole)


def verdicts(result: AuditResult) -> Iterator[Verdict]:
    """Every image check's verdicts on one audited disk, in report order."""
    table = result.table
    if table.scheme == "none":
        what = f"a whole-disk {result.whole_disk_fs} filesystem" if result.whole_disk_fs \
            else "blank or unknown content"
        yield Verdict("IMG-PART-TABLE", True, f"no partition table: {what}",
                      evidence={"scheme": "none", "filesystem": result.whole_disk_fs})
    elif table.problems:
        yield Verdict("IMG-PART-TABLE", False, "; ".join(table.problems),
                      evidence={"scheme": table.scheme, "problems": table.problems})
    else:
        yield Verdict("IMG-PART-TABLE", True,
                      f"{table.scheme.upper()} with {len(table.partitions)} partition(s)",
                      evidence={"scheme": table.scheme})
    for p in table.partitions:
        if p.kind == "extended":
            continue  # a container: its logical partitions are checked instead
        res = f"partition {p.number}"
        ev = {"start_sector": p.start, "start_bytes": p.start * 512, "type": p.type_name,
              "filesystem": p.filesystem}
        legacy = p.start == 63 or (p.start % 63 == 0 and p.start % 8 != 0)
        yield Verdict("IMG-PART-LEGACY-63", not legacy,
                      f"starts at sector {p.start} (legacy CHS 63-sector alignment)" if legacy
                      else f"starts at sector {p.start}", res, ev)
        yield Verdict("IMG-PART-ALIGN-4K", p.start % 8 == 0,
                      f"starts at byte {p.start * 512}, "
                      f"{'a' if p.start % 8 == 0 else 'not a'} multiple of 4096", res, ev)
        yield Verdict("IMG-PART-ALIGN-1M", p.start % 2048 == 0,
                      f"starts at byte {p.start * 512}, "
                      f"{'a' if p.start % 2048 == 0 else 'not a'} multiple of 1 MiB", res, ev)
    if table.gpt is not None:
        g = table.gpt
        yield Verdict("IMG-GPT-BACKUP", g.backup_ok,
                      "backup GPT header valid at the last LBA" if g.backup_ok
                      else g.backup_problem, "gpt", {"backup_ok": g.backup_ok})
    esp = [p.number for p in table.partitions if p.is_esp]
    fw = result.firmware
    msg = {"uefi": f"EFI system partition ({', '.join(map(str, esp))}) on "
                   f"{table.scheme.upper()}: boots with UEFI (OVMF on Proxmox)",
           "bios": "MBR/BIOS-boot layout: boots with SeaBIOS",
           "unknown": "no boot layout recognised"}[fw]
    yield Verdict("IMG-FIRMWARE-UEFI", fw != "uefi", msg,
                   evidence={"firmware": fw, "esp_partitions": esp})


def manifest_section(source: Source, guest: str | None = None) -> dict:
    """The audit as the conversion manifest records it (`audit(source).to_dict()` plus
    "performed" and "failing", built from the verdicts without guestprep.models); a disk
    qemu can convert but whose table we cannot read gets the error instead of stopping
    the conversion."""
    try:
        result = _read_layout(source)
    except GuestprepError as exc:
        return {"performed": False, "error": str(exc)}
    findings = [_finding_dict(guest or source.spec.label, v) for v in verdicts(result)]
    d = result.to_dict()
    d["findings"] = findings
    d["performed"] = True
    # an image check's verdict passes or fails; a failed one is open (Status.is_open)
    d["failing"] = [{"check_id": f["check_id"], "severity": f["severity"],
                     "resource": f["resource"], "message": f["message"]}
                    for f in findings if f["status"] == "fail"]
    return d
