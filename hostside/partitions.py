"""MBR (with extended/logical partitions) and GPT parsing, from a byte reader.

Pure: the caller supplies `read(offset, length) -> bytes` (short at the end of
the disk) and the disk size. Garbage never raises: what cannot be trusted is
reported in `problems`, so an audit can still say what it found.
"""

from __future__ import annotations

import struct
import zlib
from hostside.record import dataclass, field
TYPE_CHECKING = False   # typing is not imported at run time (start-up time, issue 17)

if TYPE_CHECKING:
    from typing import Callable

    Reader = Callable[[int, int], bytes]

SECTOR = 512

MBR_TYPES = {
    0x01: "FAT12", 0x04: "FAT16 <32M", 0x05: "extended (CHS)", 0x06: "FAT16",
    0x07: "NTFS/exFAT/HPFS", 0x0B: "FAT32 (CHS)", 0x0C: "FAT32 (LBA)", 0x0E: "FAT16 (LBA)",
    0x0F: "extended (LBA)", 0x11: "hidden FAT12", 0x12: "OEM/recovery", 0x17: "hidden NTFS",
    0x1C: "hidden FAT32", 0x27: "Windows recovery", 0x42: "Windows dynamic disk (LDM)",
    0x82: "Linux swap", 0x83: "Linux", 0x85: "Linux extended", 0x8E: "Linux LVM",
    0xA5: "FreeBSD", 0xEE: "GPT protective", 0xEF: "EFI system", 0xFB: "VMware VMFS",
    0xFD: "Linux RAID",
}
EXTENDED_TYPES = {0x05, 0x0F, 0x85}
ESP_GUID = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
BIOS_BOOT_GUID = "21686148-6449-6e6f-744e-656564454649"
GPT_TYPES = {
    ESP_GUID: "EFI system",
    BIOS_BOOT_GUID: "BIOS boot",
    "e3c9e316-0b5c-4db8-817d-f92df00215ae": "Microsoft reserved",
    "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7": "Microsoft basic data",
    "de94bba4-06d1-4d40-a16a-bfd50179d6ac": "Windows recovery",
    "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3": "Windows LDM metadata",
    "af9b60a0-1431-4f62-bc68-3311714a69ad": "Windows LDM data",
    "0fc63daf-8483-4772-8e79-3d69d8477de4": "Linux filesystem",
    "4f68bce3-e8cd-4db1-96e7-fbcaf984b709": "Linux root (x86-64)",
    "bc13c2ff-59e6-4262-a352-b275fd6f7172": "Linux extended boot",
    "e6d6d379-f507-44c2-a23c-238f2a3df928": "Linux LVM",
    "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f": "Linux swap",
    "a19d880f-05fc-4d3b-a006-743f0f84911e": "Linux RAID",
    "6a898cc3-1dd2-11b2-99a6-080020736631": "ZFS",
}
MAX_LOGICAL = 256
MAX_GPT_ENTRIES = 4096
_GPT_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


@dataclass
class Partition:
    number: int
    start: int          # first sector (512 bytes)
    sectors: int
    scheme: str         # mbr | gpt
    kind: str           # primary | extended | logical | gpt
    type: str           # "0x83" or a GUID
    type_name: str
    name: str = ""
    bootable: bool = False
    filesystem: str | None = None

    @property
    def end(self) -> int:
        return self.start + self.sectors

    @property
    def is_esp(self) -> bool:
        return self.type in (ESP_GUID, "0xef")

    def to_dict(self) -> dict:
        return {"number": self.number, "start_sector": self.start, "sectors": self.sectors,
                "start_bytes": self.start * SECTOR, "size_bytes": self.sectors * SECTOR,
                "scheme": self.scheme, "kind": self.kind, "type": self.type,
                "type_name": self.type_name, "name": self.name, "bootable": self.bootable,
                "filesystem": self.filesystem,
                "aligned_4k": self.start % 8 == 0, "aligned_1m": self.start % 2048 == 0}


@dataclass
class GptInfo:
    disk_guid: str
    first_usable: int
    last_usable: int
    entries: int
    backup_ok: bool
    backup_problem: str = ""

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class PartitionTable:
    scheme: str                     # mbr | gpt | none
    disk_sectors: int
    partitions: list[Partition] = field(default_factory=list)
    gpt: GptInfo | None = None
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"scheme": self.scheme, "disk_sectors": self.disk_sectors,
                "gpt": self.gpt.to_dict() if self.gpt else None, "problems": self.problems,
                "partitions": [p.to_dict() for p in self.partitions]}



def _guid(raw: bytes) -> str:
    """A GPT GUID (mixed-endian, as str(uuid.UUID(bytes_le=raw))) without importing
    uuid (which imports platform and more: start-up time of every conversion)."""
    d1, d2, d3 = struct.unpack_from("<IHH", raw)
    return f"{d1:08x}-{d2:04x}-{d3:04x}-{raw[8:10].hex()}-{raw[10:16].hex()}"

def _mbr_entries(sector: bytes) -> list[tuple[int, int, int, int]]:
    """(status, type, start, sectors) for the four slots of an MBR/EBR."""
    out = []
    for i in range(4):
        status, ptype, start, count = struct.unpack_from("<B3xB3xII", sector, 446 + 16 * i)
        out.append((status, ptype, start, count))
    return out


def _has_signature(sector: bytes) -> bool:
    return len(sector) >= 512 and sector[510:512] == b"\x55\xaa"


def parse(read: Reader, disk_size: int) -> PartitionTable:
    disk_sectors = disk_size // SECTOR
    table = PartitionTable("none", disk_sectors)
    mbr = read(0, SECTOR)
    if not _has_signature(mbr):
        return table
    entries = _mbr_entries(mbr)
    if any(e[1] == 0xEE for e in entries):
        gpt = _parse_gpt(read, disk_sectors, table)
        if gpt:
            return table
        table.problems.append("protective MBR but no valid GPT header: falling back to MBR")
    _parse_mbr(read, entries, disk_sectors, table)
    _check_bounds(table)
    return table


def _parse_mbr(read: Reader, entries, disk_sectors: int, table: PartitionTable) -> None:
    table.scheme = "mbr"
    extended: tuple[int, int] | None = None
    for i, (status, ptype, start, count) in enumerate(entries, 1):
        if ptype == 0 or count == 0:
            continue
        kind = "extended" if ptype in EXTENDED_TYPES else "primary"
        table.partitions.append(Partition(i, start, count, "mbr", kind, f"0x{ptype:02x}",
                                          MBR_TYPES.get(ptype, "unknown"),
                                          bootable=status == 0x80))
        if kind == "extended":
            if extended is not None:
                table.problems.append("more than one extended partition")
            else:
                extended = (start, count)
    if extended is None:
        return
    ext_start, ext_count = extended
    seen: set[int] = set()
    ebr_at = ext_start
    number = 5
    while len(seen) < MAX_LOGICAL:
        if ebr_at in seen:
            table.problems.append(f"extended partition chain loops back to sector {ebr_at}")
            return
        if not (ext_start <= ebr_at < ext_start + ext_count) or ebr_at >= disk_sectors:
            table.problems.append(f"logical partition table at sector {ebr_at} lies outside "
                                  "the extended partition")
            return
        seen.add(ebr_at)
        ebr = read(ebr_at * SECTOR, SECTOR)
        if not _has_signature(ebr):
            table.problems.append(f"no 55AA signature in the logical partition table at "
                                  f"sector {ebr_at}")
            return
        slots = _mbr_entries(ebr)
        status, ptype, rel, count = slots[0]
        if ptype != 0 and count != 0:
            table.partitions.append(Partition(number, ebr_at + rel, count, "mbr", "logical",
                                              f"0x{ptype:02x}", MBR_TYPES.get(ptype, "unknown"),
                                              bootable=status == 0x80))
            number += 1
        _, ntype, nrel, ncount = slots[1]
        if ntype == 0 or ncount == 0:
            return
        ebr_at = ext_start + nrel
    table.problems.append(f"more than {MAX_LOGICAL} logical partitions: stopped reading")


def _gpt_header(block: bytes, lba: int, disk_sectors: int) -> tuple[dict | None, str]:
    if len(block) < _GPT_HEADER.size or block[:8] != b"EFI PART":
        return None, "no 'EFI PART' signature"
    (_sig, _rev, hsize, crc, _res, current, backup, first, last, guid, entries_lba, n_entries,
     entry_size, entries_crc) = _GPT_HEADER.unpack_from(block)
    if not (92 <= hsize <= SECTOR):
        return None, f"header size {hsize} is invalid"
    check = bytearray(block[:hsize])
    check[16:20] = b"\0\0\0\0"
    if zlib.crc32(check) & 0xFFFFFFFF != crc:
        return None, "header CRC32 mismatch"
    if current != lba:
        return None, f"header says it is at LBA {current}, found at LBA {lba}"
    if entry_size < 128 or entry_size % 8 or entry_size > 4096:
        return None, f"partition entry size {entry_size} is invalid"
    if n_entries == 0 or n_entries > MAX_GPT_ENTRIES:
        return None, f"{n_entries} partition entries is out of range"
    if n_entries * entry_size > 1024 * 1024:
        return None, f"partition entry array of {n_entries * entry_size} bytes is implausible"
    if entries_lba >= disk_sectors:
        return None, f"partition entries at LBA {entries_lba} lie past the end of the disk"
    return {"backup": backup, "first": first, "last": last,
            "guid": _guid(bytes(guid)), "entries_lba": entries_lba,
            "n_entries": n_entries, "entry_size": entry_size, "entries_crc": entries_crc}, ""


def _parse_gpt(read: Reader, disk_sectors: int, table: PartitionTable) -> bool:
    hdr, why = _gpt_header(read(SECTOR, SECTOR), 1, disk_sectors)
    if hdr is None:
        table.problems.append(f"primary GPT header: {why}")
        return False
    raw = read(hdr["entries_lba"] * SECTOR, hdr["n_entries"] * hdr["entry_size"])
    if zlib.crc32(raw) & 0xFFFFFFFF != hdr["entries_crc"]:
        table.problems.append("primary GPT partition entries CRC32 mismatch")
        return False
    table.scheme = "gpt"
    for i in range(hdr["n_entries"]):
        entry = raw[i * hdr["entry_size"]: (i + 1) * hdr["entry_size"]]
        if len(entry) < 128 or entry[:16] == b"\0" * 16:
            continue
        tguid = _guid(bytes(entry[:16]))
        first, last = struct.unpack_from("<QQ", entry, 32)
        name = entry[56:128].decode("utf-16-le", errors="replace").split("\x00", 1)[0]
        if last < first:
            table.problems.append(f"GPT entry {i + 1}: last LBA {last} before first {first}")
            continue
        table.partitions.append(Partition(i + 1, first, last - first + 1, "gpt", "gpt", tguid,
                                          GPT_TYPES.get(tguid, "unknown"), name=name))
    for p in table.partitions:
        if p.start < hdr["first"] or p.end - 1 > hdr["last"]:
            table.problems.append(f"partition {p.number} lies outside the GPT usable area")
    backup_ok, problem = _check_backup(read, disk_sectors, hdr, raw)
    table.gpt = GptInfo(hdr["guid"], hdr["first"], hdr["last"], len(table.partitions),
                        backup_ok, problem)
    _check_bounds(table)
    return True


def _check_backup(read: Reader, disk_sectors: int, primary: dict, entries: bytes
                  ) -> tuple[bool, str]:
    last_lba = disk_sectors - 1
    if primary["backup"] != last_lba:
        return False, (f"primary header puts the backup at LBA {primary['backup']} but the disk "
                       f"ends at LBA {last_lba} (disk resized without moving the backup GPT)")
    hdr, why = _gpt_header(read(last_lba * SECTOR, SECTOR), last_lba, disk_sectors)
    if hdr is None:
        return False, f"backup GPT header at LBA {last_lba}: {why}"
    if hdr["entries_crc"] != primary["entries_crc"]:
        return False, "backup GPT partition entries differ from the primary"
    raw = read(hdr["entries_lba"] * SECTOR, hdr["n_entries"] * hdr["entry_size"])
    if zlib.crc32(raw) & 0xFFFFFFFF != hdr["entries_crc"]:
        return False, "backup GPT partition entries CRC32 mismatch"
    return True, ""


def _check_bounds(table: PartitionTable) -> None:
    real = [p for p in table.partitions if p.kind != "extended"]
    for p in table.partitions:
        if p.end > table.disk_sectors:
            table.problems.append(f"partition {p.number} ends at sector {p.end}, past the end of "
                                  f"the disk ({table.disk_sectors} sectors)")
    ordered = sorted(real, key=lambda p: p.start)
    for a, b in zip(ordered, ordered[1:]):
        if b.start < a.end:
            table.problems.append(f"partitions {a.number} and {b.number} overlap")
