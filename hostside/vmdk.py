"""VMDK descriptors and sparse headers, parsed by us (not trusted to qemu).

We parse before qemu opens anything so that a hostile or damaged descriptor
(an extent pointing at ../../etc/shadow, sizes that do not add up, a grain
table pointing past the end of the file) is refused with a message naming the
file and line, instead of qemu reading whatever the descriptor says.
"""

from __future__ import annotations

import array
import os
import re
import stat
import struct
import sys
from hostside.record import dataclass, field

from hostside.errors import InputError

SECTOR = 512
NO_PARENT = 0xFFFFFFFF
GD_AT_END = 0xFFFFFFFFFFFFFFFF
SPARSE_MAGIC = b"KDMV"
DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
MAX_DESCRIPTOR_BYTES = 64 * 1024  # real descriptors are < 2 KiB
# VMware data files that are never a disk on their own (magic numbers as in qemu's
# block/vmdk.c: VMDK3_MAGIC 'COWD' for ESX vmfsSparse deltas, read big-endian, and
# SESPARSE_CONST_HEADER_MAGIC 0x00000000cafebabe, a little-endian u64, for seSparse).
COWD_MAGIC = b"COWD"
SESPARSE_MAGIC = (0xCAFEBABE).to_bytes(8, "little")
# A COWD header is the ESXi snapshot redo log (vmfsSparse `-delta.vmdk`) when its version is
# 1 and its grains are one sector (VMware Virtual Disk Format 1.1, "ESX Server Sparse
# Extents"; qemu commit daac8fdc "vmdk: support vmfsSparse files": 16 KB grain tables,
# 512-byte grains, "only work if opened through the descriptor file"). The same magic with
# version 1 or 3 and larger grains is the VMware Workstation/GSX 2.x-3.x disk format
# (sherpya/vdk inc/cowdisk.h: COWD_FILEVER_VMWARE2 1, COWD_FILEVER_VMWARE3 3, default
# granularity 32/128 sectors, 512-entry maps), which qemu's vmdk driver misreads: it opens
# every COWD file with 4096-entry tables (block/vmdk.c, vmdk_open_vmfs_sparse).
_COWD_FIELDS = struct.Struct("<5I")   # version, flags, sectors, grain size, gd offset
# Keys a descriptor starts with (VMware's template, qemu's desc_template in block/vmdk.c).
_DESCRIPTOR_KEYS = ("version", "encoding", "CID", "parentCID", "createType",
                    "parentFileNameHint", "isNativeSnapshot")
_SETTING_RE = re.compile(r"^([A-Za-z0-9_.]+)\s*=")
# A grain directory larger than this is impossible for a real disk (VMware's 62 TB
# maximum with 64 KiB grains needs 2^21 entries); refusing it bounds memory and time.
MAX_GD_ENTRIES = 1 << 22

# createType -> what it is made of; anything else is refused by name.
CREATE_TYPES = {
    "monolithicSparse": "sparse",
    "streamOptimized": "sparse",
    "twoGbMaxExtentSparse": "sparse",
    "monolithicFlat": "flat",
    "twoGbMaxExtentFlat": "flat",
    "vmfs": "flat",
    "vmfsThin": "flat",
    "vmfsSparse": "delta",
    "seSparse": "delta",
}
UNSUPPORTED_TYPES = {
    "vmfsRDM": "a raw device mapping: convert the mapped LUN itself, not the descriptor",
    "vmfsRDMP": "a raw device mapping: convert the mapped LUN itself, not the descriptor",
    "vmfsPassthroughRawDeviceMap": "a raw device mapping: convert the mapped LUN itself",
    "vmfsRawDeviceMap": "a raw device mapping: convert the mapped LUN itself",
    "vmfsRaw": "a raw device mapping: convert the mapped LUN itself",
    "fullDevice": "a physical-disk passthrough descriptor",
    "partitionedDevice": "a physical-disk passthrough descriptor",
    "custom": "a custom descriptor",
}
EXTENT_TYPES = {"FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "SESPARSE"}
ACCESS_MODES = {"RW", "RDONLY", "NOACCESS"}

_EXTENT_RE = re.compile(
    r'^(?P<access>[A-Z]+)\s+(?P<sectors>\d+)\s+(?P<type>[A-Z]+)'
    r'(?:\s+"(?P<name>[^"]*)"(?:\s+(?P<offset>\d+))?)?\s*$'
)
_KV_RE = re.compile(r'^(?P<key>[A-Za-z0-9_.]+)\s*=\s*(?P<value>.*)$')


@dataclass
class Extent:
    access: str
    sectors: int
    type: str
    filename: str | None
    offset: int = 0           # in sectors, FLAT/VMFS only
    line: int = 0

    @property
    def size(self) -> int:
        return self.sectors * SECTOR

    def to_dict(self) -> dict:
        return {"access": self.access, "sectors": self.sectors, "size": self.size,
                "type": self.type, "file": self.filename, "offset_sectors": self.offset}


@dataclass
class Descriptor:
    create_type: str
    cid: int
    parent_cid: int
    extents: list[Extent]
    parent_hint: str | None = None
    version: int = 1
    ddb: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # layout read as VMware reads it

    @property
    def has_parent(self) -> bool:
        return self.parent_cid != NO_PARENT

    @property
    def virtual_size(self) -> int:
        return sum(e.size for e in self.extents)

    def to_dict(self) -> dict:
        return {
            "create_type": self.create_type,
            "cid": f"{self.cid:08x}",
            "parent_cid": f"{self.parent_cid:08x}",
            "parent_hint": self.parent_hint,
            "version": self.version,
            "virtual_size": self.virtual_size,
            "extents": [e.to_dict() for e in self.extents],
            "adapter_type": self.ddb.get("ddb.adapterType"),
            "thin": self.ddb.get("ddb.thinProvisioned") == "1" or self.create_type == "vmfsThin",
            **({"notes": self.notes} if self.notes else {}),
        }


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _safe_name(name: str, where: str) -> str:
    """A file name a descriptor may reference: relative, inside its directory."""
    if not name:
        raise InputError("extent has an empty file name", where)
    if "\x00" in name:
        raise InputError("extent file name contains a NUL byte", where)
    if name.startswith("/") or (len(name) > 1 and name[1] == ":") or name.startswith("\\"):
        raise InputError(f"extent {name!r} is an absolute path; extents must sit beside "
                         "their descriptor", where)
    parts = re.split(r"[\\/]", name)
    if ".." in parts:
        raise InputError(f"extent {name!r} points outside the descriptor's directory", where)
    return name


def _first_setting(text: str) -> tuple[int, str] | None:
    """(line number, stripped text) of the first line that is neither blank nor a comment."""
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            return lineno, line
    return None


def _check_start(text: str, where: str) -> list[str]:
    """How the descriptor begins, judged the way VMware reads one.

    VMware and qemu write '# Disk DescriptorFile' as the first line. VMware also reads a
    text file as a descriptor when its first setting, after any blank and comment lines,
    is version=<n> (observed by a qemu vmdk maintainer: famz.github.io, 2011-06-15, "More
    About Vmdk Descriptor File"), so leading blank lines or a missing first comment are
    accepted and noted. qemu never reads the original: it gets our validated copy. Any
    other start is refused with the line that breaks the rule.
    """
    body = text.lstrip("\ufeff")
    if body.startswith(DESCRIPTOR_MAGIC.decode()):
        return []
    first = _first_setting(body)
    if first is None:
        return []      # "no createType" / "lists no extents" name the problem
    lineno, line = first
    if not re.match(r"version=\d", line):
        raise InputError(
            f"the first setting is {line[:60]!r}: a text file is a VMDK descriptor when its "
            "first line is '# Disk DescriptorFile' or, as VMware reads it, when its first "
            "setting after blank and comment lines is version=1. Begin it as VMware "
            "writes it: '# Disk DescriptorFile' on line 1, version=1 on line 2",
            f"{where}:{lineno}")
    lines = body.splitlines()
    blank = next((n for n, raw in enumerate(lines) if raw.strip()), 0)
    if blank and lines[blank].strip() == DESCRIPTOR_MAGIC.decode():
        note = (f"{blank} blank line(s) before '# Disk DescriptorFile': read as VMware "
                "reads it (blank and comment lines before version= are skipped)")
    else:
        note = ("no '# Disk DescriptorFile' first line: read as VMware reads it (its first "
                f"setting, line {lineno}, is {line[:20]})")
    return [note]


_ENCODING_RE = re.compile(rb'^[ \t]*encoding[ \t]*=[ \t]*"?([A-Za-z0-9_.:-]+)"?[ \t]*\r?$',
                          re.MULTILINE)


def descriptor_bytes(raw: bytes) -> bytes:
    """A descriptor file's text: up to its first NUL when only NULs and line ends follow.

    qemu reads a descriptor as a C string (block/vmdk.c), and qemu-img leaves such tails
    itself: vmdk_write_cid runs for each of convert's concurrent first writes, and their
    overlapping rewrites of the sector can leave 'text\\0\\n\\0...' (qemu-img 7.2, about 1
    conversion in 360 with the machine busy). Anything else after a NUL is kept, and
    refused by parse_descriptor: text qemu would silently ignore."""
    head, nul, tail = raw.partition(b"\x00")
    if nul and not tail.strip(b"\x00\r\n\t "):
        return head
    return raw


def decode_descriptor(raw: bytes, where: str) -> str:
    """Descriptor bytes as text, in the encoding the descriptor declares.

    ESXi writes encoding="UTF-8"; Workstation on Windows writes the host's code page
    ("windows-1252", "Shift_JIS", "GBK"), and a file name decoded with the wrong one
    would not match the file beside it. Without encoding= it is read as UTF-8 (invalid
    bytes replaced, as before). A byte-order mark (an editor's) is dropped.
    """
    m = _ENCODING_RE.search(raw)
    if m is None:
        return raw.decode("utf-8", errors="replace").removeprefix("\ufeff")
    name = m.group(1).decode("ascii")
    lineno = raw.count(b"\n", 0, m.start()) + 1
    line = f"{where}:{lineno}"
    try:
        try:
            return raw.decode(name).removeprefix("\ufeff")
        except UnicodeDecodeError:
            text = raw.decode(name, errors="replace").removeprefix("\ufeff")
    except LookupError:   # unknown, or not a text encoding ("base64", "rot13")
        raise InputError(f"encoding={name!r} is not a character set this node knows",
                         line) from None
    except (UnicodeError, ValueError) as exc:
        raise InputError(f"cannot be read as {name}, the encoding the descriptor declares: "
                         f"{exc}", line) from None
    # Bytes the declared encoding cannot read matter only in file names (extents, parent).
    for n, row in enumerate(text.splitlines(), 1):
        if "\ufffd" in row and (_EXTENT_RE.match(row.strip())
                                 or row.strip().startswith("parentFileNameHint")):
            raise InputError(f"this file name has bytes that are not valid {name}, the "
                             f"encoding the descriptor declares on line {lineno}",
                             f"{where}:{n}")
    return text


def _refuse_unsupported_type(text: str, where: str) -> None:
    """An RDM or passthrough descriptor is refused by its createType before its extent
    lines are judged: they name a device (VMFSRDM, VMFSRAW, /dev/sda, \\\\.\\PhysicalDrive0),
    which would otherwise be reported as an odd extent rather than as what it is."""
    for lineno, raw in enumerate(text.splitlines(), 1):
        m = _KV_RE.match(raw.strip())
        if m and m.group("key") == "createType":
            create_type = _unquote(m.group("value"))
            if create_type in UNSUPPORTED_TYPES:
                raise InputError(f"createType {create_type!r} is "
                                 f"{UNSUPPORTED_TYPES[create_type]}", f"{where}:{lineno}")
            return


def parse_descriptor(text: str, where: str = "descriptor") -> Descriptor:
    """Parse descriptor text. Pure: no file access. Raises InputError."""
    if "\x00" in text:
        raise InputError("descriptor contains NUL bytes (not a text descriptor)", where)
    text = text.removeprefix("\ufeff")   # a byte-order mark, however the text was decoded
    notes = _check_start(text, where)
    _refuse_unsupported_type(text, where)
    values: dict[str, tuple[str, int]] = {}
    ddb: dict[str, str] = {}
    extents: list[Extent] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        at = f"{where}:{lineno}"
        if not line or line.startswith("#"):
            continue
        m = _EXTENT_RE.match(line)
        if m and m.group("access") in ACCESS_MODES:
            etype = m.group("type")
            if etype not in EXTENT_TYPES:
                raise InputError(f"unsupported extent type {etype!r}", at)
            name = m.group("name")
            if etype == "ZERO":
                name = None
            else:
                if name is None:
                    raise InputError(f"{etype} extent without a file name", at)
                name = _safe_name(name, at)
            sectors = int(m.group("sectors"))
            if sectors <= 0 or sectors > (1 << 40):
                raise InputError(f"extent size {sectors} sectors is out of range", at)
            offset = int(m.group("offset") or 0)
            if offset and etype not in ("FLAT", "VMFS"):
                raise InputError(f"{etype} extent cannot have an offset", at)
            if offset > (1 << 40):
                raise InputError(f"extent offset {offset} is out of range", at)
            extents.append(Extent(m.group("access"), sectors, etype, name, offset, lineno))
            continue
        m = _KV_RE.match(line)
        if not m:
            raise InputError(f"unparseable descriptor line {line[:60]!r}", at)
        key, value = m.group("key"), _unquote(m.group("value"))
        if key.startswith("ddb."):
            ddb[key] = value
        else:
            values[key] = (value, lineno)

    def get(key: str) -> tuple[str, int] | None:
        return values.get(key)

    ct = get("createType")
    if ct is None:
        raise InputError("descriptor has no createType", where)
    create_type = ct[0]
    if create_type in UNSUPPORTED_TYPES:
        raise InputError(f"createType {create_type!r} is {UNSUPPORTED_TYPES[create_type]}",
                         f"{where}:{ct[1]}")
    if create_type not in CREATE_TYPES:
        raise InputError(f"unknown createType {create_type!r}", f"{where}:{ct[1]}")

    def hex_field(key: str, default: int | None) -> int:
        v = get(key)
        if v is None:
            if default is None:
                raise InputError(f"descriptor has no {key}", where)
            return default
        if not re.fullmatch(r"[0-9a-fA-F]{1,8}", v[0]):
            raise InputError(f"{key}={v[0]!r} is not an 8-digit hex number", f"{where}:{v[1]}")
        return int(v[0], 16)

    cid = hex_field("CID", None)
    parent_cid = hex_field("parentCID", NO_PARENT)
    version_raw = get("version")
    version = 1
    if version_raw is not None:
        if not version_raw[0].isdigit():
            raise InputError(f"version={version_raw[0]!r} is not a number",
                             f"{where}:{version_raw[1]}")
        version = int(version_raw[0])
    hint = get("parentFileNameHint")
    parent_hint = hint[0] if hint else None
    if parent_cid != NO_PARENT and not parent_hint:
        raise InputError("delta disk (parentCID set) without parentFileNameHint", where)
    if not extents:
        raise InputError("descriptor lists no extents", where)
    kind = CREATE_TYPES[create_type]
    for e in extents:
        at = f"{where}:{e.line}"
        if kind == "flat" and e.type not in ("FLAT", "VMFS", "ZERO"):
            raise InputError(f"{create_type} descriptor with a {e.type} extent", at)
        if kind == "sparse" and e.type not in ("SPARSE", "ZERO"):
            raise InputError(f"{create_type} descriptor with a {e.type} extent", at)
    return Descriptor(create_type, cid, parent_cid, extents, parent_hint, version, ddb, notes)


# --------------------------------------------------------------------------- sparse header

_HEADER = struct.Struct("<IIIQQQQIQQQB4sH")


@dataclass
class SparseHeader:
    version: int
    flags: int
    capacity: int       # sectors
    grain_size: int     # sectors
    descriptor_offset: int
    descriptor_size: int
    gtes_per_gt: int
    rgd_offset: int
    gd_offset: int
    overhead: int
    compress: int

    @property
    def compressed(self) -> bool:
        return bool(self.flags & (1 << 16))

    @property
    def zeroed_grain_ok(self) -> bool:
        return bool(self.flags & (1 << 2))


def parse_sparse_header(block: bytes, where: str) -> SparseHeader:
    """Parse and sanity-check the 512-byte KDMV header. Pure."""
    if len(block) < _HEADER.size:
        raise InputError("truncated sparse header", where)
    (magic, version, flags, capacity, grain, doff, dsize, gtes, rgd, gd, overhead, _unclean,
     _nl, compress) = _HEADER.unpack_from(block)
    if magic != int.from_bytes(SPARSE_MAGIC, "little"):
        raise InputError("not a VMDK sparse extent (no KDMV magic)", where)
    if version not in (1, 2, 3):
        raise InputError(f"unsupported sparse extent version {version}", where)
    if capacity == 0 or capacity > (1 << 40):
        raise InputError(f"sparse capacity {capacity} sectors is out of range", where)
    if grain < 8 or grain > 2048 or grain & (grain - 1):
        raise InputError(f"grain size {grain} sectors is not a power of two in 8..2048", where)
    if gtes == 0 or gtes > 512:
        raise InputError(f"{gtes} grain table entries per table (expected 1..512)", where)
    if compress not in (0, 1):
        raise InputError(f"unknown compression algorithm {compress}", where)
    return SparseHeader(version, flags, capacity, grain, doff, dsize, gtes, rgd, gd, overhead,
                        compress)


# --------------------------------------------------------------------------- seSparse header

# ESXi's seSparse (VMFS6 snapshots, `-sesparse.vmdk`) is undocumented; these are the checks
# qemu makes before reading one (qemu/qemu block/vmdk.c: VMDKSESparseConstHeader,
# check_se_sparse_const_header, check_se_sparse_volatile_header, vmdk_open_se_sparse), made
# here so that a damaged file is refused naming it and its field, before qemu opens anything.
_SE_CONST = struct.Struct("<26Q")       # then 304 zero bytes
_SE_VOLATILE = struct.Struct("<4Q")     # then 480 zero bytes
SESPARSE_VOLATILE_MAGIC = 0xCAFECAFE
SESPARSE_VERSION = 0x0000000200000001
SESPARSE_GRAIN_SECTORS = 8              # the only grain size qemu reads (4 KiB)
SESPARSE_GT_SECTORS = 64                # 4096 u64 entries per grain table
SESPARSE_GT_ENTRIES = SESPARSE_GT_SECTORS * SECTOR // 8


@dataclass
class SeSparseHeader:
    capacity: int           # sectors
    gd_offset: int          # sectors, as every offset and size below
    gd_size: int
    gt_offset: int
    gt_size: int
    grains_offset: int
    grains_size: int

    @property
    def gd_entries(self) -> int:
        """Entries qemu reads (grain_dir_size sectors of u64); those past the disk are 0."""
        return self.gd_size * SECTOR // 8

    @property
    def needed_gd_entries(self) -> int:
        return -(-self.capacity // (SESPARSE_GRAIN_SECTORS * SESPARSE_GT_ENTRIES))


def parse_sesparse_header(const: bytes, volatile_at, where: str) -> SeSparseHeader:
    """The const header (`const`, the file's first sector) and the volatile header it points
    at (`volatile_at(sector)` returns that sector), checked as strictly as qemu does."""
    if len(const) < SECTOR:
        raise InputError("seSparse header is truncated", where)
    (magic, version, capacity, grain, gt_size, flags, *rest) = _SE_CONST.unpack_from(const)
    reserved, (vol_off, _vol_size, _jh, _jhs, _j, _js, gd_off, gd_size, gt_off, gt_total,
               _fb, _fbs, _bm, _bms, grains_off, grains_size) = rest[:4], rest[4:]
    if magic != int.from_bytes(SESPARSE_MAGIC, "little"):
        raise InputError("not a seSparse extent (no 0xcafebabe magic)", where)
    if version != SESPARSE_VERSION:
        raise InputError(f"seSparse version {version:#018x} is not the one ESXi writes and "
                         f"qemu reads ({SESPARSE_VERSION:#018x})", where)
    if grain != SESPARSE_GRAIN_SECTORS:
        raise InputError(f"seSparse grain size {grain} sectors: only 8 (4 KiB) is read", where)
    if gt_size != SESPARSE_GT_SECTORS:
        raise InputError(f"seSparse grain table size {gt_size} sectors: only 64 is read",
                         where)
    if flags or any(reserved) or any(const[_SE_CONST.size:SECTOR]):
        raise InputError("seSparse header has flags, reserved fields or padding set that "
                         "qemu does not read (a newer or damaged file)", where)
    if capacity == 0 or capacity > (1 << 37):    # seSparse's maximum: just under 64 TiB
        raise InputError(f"seSparse capacity {capacity} sectors is out of range", where)
    vol = volatile_at(vol_off)
    if len(vol) < SECTOR or _SE_VOLATILE.unpack_from(vol)[0] != SESPARSE_VOLATILE_MAGIC:
        raise InputError(f"seSparse volatile header (sector {vol_off}) has no 0xcafecafe "
                         "magic (damaged or truncated file)", where)
    if _SE_VOLATILE.unpack_from(vol)[3]:
        raise InputError("seSparse journal was not replayed (ESXi did not close this disk "
                         "cleanly) and qemu cannot replay it: consolidate the snapshots on "
                         "ESXi, or copy the files again after ESXi has closed the disk", where)
    if any(vol[_SE_VOLATILE.size:SECTOR]):
        raise InputError("seSparse volatile header has padding set that qemu does not read",
                         where)
    header = SeSparseHeader(capacity, gd_off, gd_size, gt_off, gt_total, grains_off,
                            grains_size)
    if gd_size > MAX_GD_ENTRIES * 8 // SECTOR or header.gd_entries < header.needed_gd_entries:
        raise InputError(f"seSparse grain directory of {gd_size} sectors does not fit a disk "
                         f"of {capacity} sectors", where)
    return header


def _check_sesparse(path: str, ext: Extent, where: str) -> SeSparseHeader:
    with open_regular(path, where, f"extent file {ext.filename!r}") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        header = parse_sesparse_header(
            os.pread(fd, SECTOR, 0),
            lambda sector: os.pread(fd, SECTOR, sector * SECTOR) if sector * SECTOR < size
            else b"", f"{path} (seSparse extent of {where})")
    if header.capacity != ext.sectors:
        raise InputError(f"seSparse extent {ext.filename!r} holds {header.capacity} sectors "
                         f"but the descriptor says {ext.sectors}", where)
    if (header.gd_offset + header.gd_size) * SECTOR > size:
        raise InputError(f"seSparse extent {ext.filename!r} is truncated: its grain directory "
                         "lies past the end of the file", where)
    return header


def read_embedded_descriptor(f, header: SparseHeader, file_size: int, where: str) -> str | None:
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        return None
    start, length = header.descriptor_offset * SECTOR, header.descriptor_size * SECTOR
    if length > MAX_DESCRIPTOR_BYTES * 16 or start + length > file_size:
        raise InputError("embedded descriptor lies outside the file (truncated?)", where)
    f.seek(start)
    raw = f.read(length).split(b"\x00", 1)[0]
    # qemu reserves the descriptor area in every sparse extent it writes but fills it only
    # in monolithic ones: the pieces of a split disk carry an empty (all-NUL) area.
    if not raw.strip():
        return None
    return decode_descriptor(raw, where)


def check_grain_tables(f, header: SparseHeader, file_size: int, where: str) -> dict:
    """Every grain directory/table entry must point inside the file.

    qemu would otherwise read garbage (or fail half-way through a conversion).
    The work is bounded by the file's real size: the directory must fit in the
    file, every table is read once (two directory entries sharing or overlapping
    one table are refused), and the tables may not claim more grains than the
    file can hold. Returns allocation counts used in the inspect output.
    """
    gd_offset = header.gd_offset
    if gd_offset == GD_AT_END:  # streamOptimized: the real header is the footer
        if file_size < 3 * SECTOR:
            raise InputError("stream-optimized extent too short for its footer", where)
        f.seek(file_size - 2 * SECTOR)
        footer = parse_sparse_header(f.read(SECTOR), f"{where} (footer)")
        gd_offset = footer.gd_offset
    file_sectors = file_size // SECTOR
    sectors_per_gt = header.grain_size * header.gtes_per_gt
    n_gdes = -(-header.capacity // sectors_per_gt)
    gt_bytes = header.gtes_per_gt * 4
    gt_sectors = -(-gt_bytes // SECTOR)
    if n_gdes > MAX_GD_ENTRIES:
        raise InputError(f"impossible geometry: {header.capacity} sectors in grains of "
                         f"{header.grain_size} sectors and tables of {header.gtes_per_gt} "
                         f"entries need {n_gdes} grain directory entries (more than "
                         f"{MAX_GD_ENTRIES})", where)
    if gd_offset == 0 or gd_offset == GD_AT_END or gd_offset * SECTOR + n_gdes * 4 > file_size:
        raise InputError(f"grain directory at sector {gd_offset} lies outside the file "
                         f"({file_size} bytes): truncated or corrupted", where)
    f.seek(gd_offset * SECTOR)
    gd = _u32_array(f.read(n_gdes * 4), n_gdes, where, "grain directory")
    used = [i for i, gde in enumerate(gd) if gde]
    if len(used) * gt_bytes > file_size:
        raise InputError(f"impossible geometry: {len(used)} grain tables of {gt_bytes} bytes "
                         f"cannot fit in a file of {file_size} bytes", where)
    used.sort(key=gd.__getitem__)
    for a, b in zip(used, used[1:]):
        if gd[b] - gd[a] < gt_sectors:
            what = "share" if gd[a] == gd[b] else "overlap at"
            raise InputError(f"grain directory entries {a} and {b} {what} the grain table at "
                             f"sector {gd[b]}: corrupted grain directory", where)
    if used and gd[used[-1]] * SECTOR + gt_bytes > file_size:
        i = used[-1]
        raise InputError(f"grain directory entry {i} points to sector {gd[i]}, past the end "
                         f"of the file: corrupted grain directory", where)
    span = 1 if header.compressed else header.grain_size
    limit = file_sectors - span   # the last sector a grain may start at
    allocated = zero = 0
    for i, raw in _read_tables(f, gd, used, gt_bytes):
        gt = _u32_array(raw, header.gtes_per_gt, where, f"grain table {i}")
        zeros = gt.count(0)
        ones = gt.count(1) if header.zeroed_grain_ok else 0
        n_alloc = len(gt) - zeros - ones
        zero += ones
        if n_alloc and max(gt) > limit:
            j = next(j for j, gte in enumerate(gt) if gte > limit)
            raise InputError(f"grain table {i} entry {j} points to sector {gt[j]}, past the "
                             f"end of the file: corrupted grain table", where)
        allocated += n_alloc
        if allocated * span > file_sectors:
            raise InputError(f"impossible geometry: the grain tables claim {allocated} grains "
                             f"of {span} sectors, more than the {file_sectors}-sector file "
                             "holds: corrupted grain tables", where)
    return {"grain_size": header.grain_size * SECTOR, "allocated_grains": allocated,
            "zero_grains": zero}


def _u32_array(raw: bytes, count: int, where: str, what: str) -> array.array:
    if len(raw) < count * 4:
        raise InputError(f"{what} is truncated (the file ends inside it)", where)
    out = array.array("I")
    out.frombytes(raw[:count * 4])
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _read_tables(f, gd, used: list[int], gt_bytes: int, max_span: int = 1 << 20):
    """(directory index, table bytes) in file order; tables lying close together are
    read with one request (matters over HTTPS: one Range request per run)."""
    k = 0
    while k < len(used):
        first = gd[used[k]] * SECTOR
        last = k
        while (last + 1 < len(used) and gd[used[last + 1]] * SECTOR + gt_bytes - first <= max_span
               and gd[used[last + 1]] * SECTOR - (gd[used[last]] * SECTOR + gt_bytes) < 65536):
            last += 1
        f.seek(first)
        blob = f.read(gd[used[last]] * SECTOR + gt_bytes - first)
        for m in range(k, last + 1):
            off = gd[used[m]] * SECTOR - first
            yield used[m], blob[off:off + gt_bytes]
        k = last + 1


# --------------------------------------------------------------------------- loading


@dataclass
class VmdkImage:
    path: str                 # the descriptor (or monolithic sparse file)
    descriptor: Descriptor
    embedded: bool            # descriptor inside a sparse file
    extent_paths: list[str | None]
    grains: list[dict] = field(default_factory=list)
    parent: "VmdkImage | None" = None

    @property
    def chain(self) -> list["VmdkImage"]:
        out, img = [], self
        while img is not None:
            out.append(img)
            img = img.parent
        return out

    @property
    def qemu_readable_type(self) -> bool:
        # qemu 7.2 refuses vmfsThin by name although it is a plain flat extent.
        return self.descriptor.create_type != "vmfsThin"

    def to_dict(self) -> dict:
        d = self.descriptor.to_dict()
        d["path"] = self.path
        d["embedded_descriptor"] = self.embedded
        for e, p in zip(d["extents"], self.extent_paths):
            e["path"] = p
        if self.grains:
            d["grains"] = self.grains
        d["parent"] = self.parent.to_dict() if self.parent else None
        return d


def is_text_descriptor(head: bytes) -> bool:
    """`head` (the first sector) is a VMDK text descriptor, or text that means to be one.

    Besides VMware's own layout, a text whose first setting after blank and comment lines
    is a descriptor key counts, so a descriptor with leading blank lines (VMware reads it)
    or with a misplaced first setting (parse_descriptor says which line) is never read as
    a 512-byte raw disk. Boot sectors and zeros never qualify: NUL bytes end the text.
    """
    head = head.lstrip(b"\xef\xbb\xbf")
    if head.startswith(DESCRIPTOR_MAGIC):
        return True
    text = head.split(b"\x00", 1)[0].decode("latin-1")
    first = _first_setting(text)
    if first is None:
        return False
    m = _SETTING_RE.match(first[1])
    return bool(m) and m.group(1) in _DESCRIPTOR_KEYS


def _cowd_class(head: bytes) -> tuple[str, int, int]:
    """('esxi' | 'legacy' | 'unknown', version, grain sectors) of a COWD header."""
    if len(head) < 4 + _COWD_FIELDS.size:
        return "unknown", 0, 0
    version, _flags, _sectors, grain, _gd = _COWD_FIELDS.unpack_from(head, 4)
    if version == 1 and grain == 1:
        return "esxi", version, grain
    if version in (1, 3):
        return "legacy", version, grain
    return "unknown", version, grain


def data_file_kind(head: bytes) -> str | None:
    """A VMware data file (not a disk on its own), by its header; None otherwise.

    A KDMV sparse extent is a disk on its own only with an embedded descriptor
    (monolithicSparse, streamOptimized); load() tells the two apart.
    """
    if head.startswith(COWD_MAGIC):
        cls, version, grain = _cowd_class(head)
        if cls == "esxi":
            return "the data of an ESXi snapshot (a vmfsSparse -delta.vmdk, COWD header)"
        if cls == "legacy":
            return (f"a VMware Workstation/GSX 2.x-3.x or ESX 2.x COWD disk (header version "
                    f"{version}, grains of {grain} sectors)")
        return f"a COWD file of unknown version {version} (not an ESXi snapshot delta)"
    if head.startswith(SESPARSE_MAGIC):
        return "the data of an ESXi snapshot (a seSparse -sesparse.vmdk)"
    return None


def vmware_header(head: bytes) -> str | None:
    """What VMware structure `head` starts with (KDMV, COWD, seSparse, descriptor)."""
    if head.startswith(SPARSE_MAGIC):
        return "a VMDK sparse extent (KDMV header)"
    if is_text_descriptor(head):
        return "a VMDK descriptor"
    return data_file_kind(head)


def open_regular(path: str, where: str, what: str = "file"):
    """Open a file for reading only if it is a regular file.

    A FIFO named as an extent would block open()/read() forever and a character
    device (/dev/zero, /dev/urandom) never ends: refuse them by type. stat() first,
    then open with O_NONBLOCK (a FIFO swapped in meanwhile cannot block the open)
    and fstat the descriptor we actually hold.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} is missing", where) from None
    except OSError as exc:
        raise InputError(f"{what} cannot be examined: {exc.strerror}", where) from None
    _require_regular(st, what, where)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputError(f"{what} is missing", where) from None
    except IsADirectoryError:
        raise InputError(f"{what} is a directory", where) from None
    except PermissionError:
        raise InputError(f"{what} is not readable (permission denied)", where) from None
    except OSError as exc:
        raise InputError(f"{what} cannot be opened: {exc.strerror}", where) from None
    try:
        _require_regular(os.fstat(fd), what, where)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _require_regular(st: os.stat_result, what: str, where: str) -> None:
    if stat.S_ISREG(st.st_mode):
        return
    kind = ("a directory" if stat.S_ISDIR(st.st_mode) else
            "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else
            "a socket" if stat.S_ISSOCK(st.st_mode) else
            "a character device" if stat.S_ISCHR(st.st_mode) else
            "a block device" if stat.S_ISBLK(st.st_mode) else "not a regular file")
    raise InputError(f"{what} is {kind}, not a regular file: refused", where)


@dataclass
class ExtentOf:
    """Where a data file appears in a descriptor beside it."""

    descriptor: str
    index: int          # 1-based among the descriptor's extent lines
    count: int
    line: int
    create_type: str
    extent_type: str


_EXTENT_LINE_RE = re.compile(r'^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+([A-Z]+)(?:\s+"([^"]*)")?')
_CREATE_TYPE_RE = re.compile(r'^\s*createType\s*=\s*"?([A-Za-z0-9]+)', re.M)
# ESXi / Workstation names of data files and of the descriptor that lists them.
_DATA_SUFFIX_RE = re.compile(r"-(?:delta|sesparse|flat|ctk|s\d{3}|f\d{3})\.vmdk$", re.I)
# version=3 descriptors name their changed-block-tracking file (VMware VDDK programming
# guide, "VMDK versions": changeTrackPath="<disk>-ctk.vmdk").
_CTK_RE = re.compile(r'^\s*changeTrackPath\s*=\s*"([^"]*)"')


def extent_of(path: str, limit: int = 256) -> ExtentOf | None:
    """The descriptor in the same directory whose extents name this file, and where.

    The name VMware gives that descriptor (web01-000001-delta.vmdk -> web01-000001.vmdk)
    is tried first; others are read only if they mention the file's name.
    """
    directory, base = os.path.split(os.path.abspath(path))
    if not base.lower().endswith(".vmdk"):
        return None             # VMware names every extent *.vmdk
    try:
        names = sorted(os.listdir(directory))[:4096]
    except OSError:
        return None
    guess = _DATA_SUFFIX_RE.sub(".vmdk", base)
    if guess in names:
        names.insert(0, guess)
    quoted = f'"{base}"'.encode() if base.isascii() else None
    for name in dict.fromkeys(names):
        if not name.lower().endswith(".vmdk") or name == base or limit <= 0:
            continue
        candidate = os.path.join(directory, name)
        try:
            st = os.stat(candidate)
            if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_DESCRIPTOR_BYTES:
                continue
            limit -= 1
            with open_regular(candidate, candidate) as f:
                head = f.read(MAX_DESCRIPTOR_BYTES)
        except (OSError, InputError):
            continue
        if (quoted is not None and quoted not in head) or not is_text_descriptor(head):
            continue
        try:
            text = decode_descriptor(descriptor_bytes(head), candidate)
        except InputError:
            continue
        extents = [(lineno, m) for lineno, line in enumerate(text.splitlines(), 1)
                   if (m := _EXTENT_LINE_RE.match(line))]
        ct = _CREATE_TYPE_RE.search(text)
        create_type = ct.group(1) if ct else "unknown"
        for i, (lineno, m) in enumerate(extents, 1):
            if m.group(2) == base:
                return ExtentOf(candidate, i, len(extents), lineno, create_type, m.group(1))
        for lineno, line in enumerate(text.splitlines(), 1):
            m = _CTK_RE.match(line)
            if m and m.group(1) == base:
                return ExtentOf(candidate, 0, len(extents), lineno, create_type, "CTK")
    return None


def descriptor_naming(path: str) -> str | None:
    """The descriptor in the same directory whose extents name this data file."""
    found = extent_of(path)
    return found.descriptor if found else None


def _open_instead(path: str, found: ExtentOf | None) -> str:
    """What to open instead of a data file: the descriptor beside it, or where it should be."""
    if found:
        return f"open its descriptor {found.descriptor} instead"
    directory, base = os.path.split(os.path.abspath(path))
    guess = _DATA_SUFFIX_RE.sub(".vmdk", base)
    if guess != base:
        return (f"its descriptor is {guess} (a small text file that lists its extents), which "
                f"is not in {directory}: copy it from the datastore too and open it")
    return (f"open the descriptor (.vmdk) that lists it instead; none in {directory} "
            "names it")


def refuse_data_file(path: str, kind: str, where: str) -> None:
    """Refuse a file that is part of a VMware disk (or an old format) with what to open."""
    try:
        with open_regular(path, where) as f:
            head = f.read(SECTOR)
    except InputError:
        head = b""
    found = extent_of(path)
    instead = _open_instead(path, found)
    if head.startswith(COWD_MAGIC) and _cowd_class(head)[0] != "esxi" and not (
            found and found.extent_type == "VMFSSPARSE"):
        if _cowd_class(head)[0] == "legacy":
            raise InputError(
                f"this is {kind}: a format from before VMDK 4 that qemu's vmdk driver misreads "
                "(it reads every COWD file with the 4096-entry grain tables of ESXi's "
                "vmfsSparse). Convert it to a current format with VMware's tools first "
                "(vmware-vdiskmanager -r, or vmkfstools -i on ESXi)", where)
        raise InputError(f"this is {kind}; if it came from ESXi, {instead}", where)
    if head.startswith((COWD_MAGIC, SESPARSE_MAGIC)):
        if found and found.extent_type == "VMFSSPARSE":   # the descriptor says what it is
            kind = "the data of an ESXi snapshot (a VMFSSPARSE extent, COWD header)"
        raise InputError(
            f"this is {kind}: it holds only the blocks the VM wrote after the snapshot was "
            f"taken, not a disk on its own; {instead} (with --chain to convert the disk as "
            "the VM sees it through the snapshot), or consolidate the snapshots on ESXi "
            "first", where)
    if found and found.extent_type == "CTK":
        raise InputError(
            f"this is the changed-block-tracking file of {found.descriptor} (its "
            f"changeTrackPath, line {found.line}): it records which blocks changed for "
            f"backups, not disk data; open the descriptor {found.descriptor} instead", where)
    if found and found.count > 1:
        raise InputError(
            f"this is extent {found.index} of {found.count} of the {found.create_type} disk "
            f"described by {found.descriptor} (line {found.line}): one piece of a split disk "
            f"holds only part of the disk. Open the descriptor {found.descriptor} instead",
            where)
    if head.startswith(SPARSE_MAGIC) and found is None:
        raise InputError(
            f"this is {kind}: one piece of a split sparse disk (twoGbMaxExtentSparse, named "
            f"like <disk>-s001.vmdk) holds only part of the disk; {instead}", where)
    raise InputError(f"this is {kind}, a data file of a VMware disk, not a disk on its own: "
                     f"{instead}", where)


def _confined(directory: str, name: str, where: str) -> str:
    base = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        raise InputError(f"extent {name!r} resolves to {path}, outside {base}", where)
    return path


def _check_flat(path: str, ext: Extent, where: str) -> None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"extent file {ext.filename!r} is missing", where) from None
    except OSError as exc:
        raise InputError(f"extent file {ext.filename!r} is unreadable: {exc.strerror}",
                         where) from None
    _require_regular(st, f"extent file {ext.filename!r}", where)
    size = st.st_size
    need = (ext.offset + ext.sectors) * SECTOR
    if size < need:
        raise InputError(f"extent file {ext.filename!r} has {size} bytes but the descriptor "
                         f"needs {need} (truncated copy or wrong size)", where)
    if not os.access(path, os.R_OK):
        raise InputError(f"extent file {ext.filename!r} is not readable", where)


def _check_sparse(path: str, ext: Extent, where: str) -> tuple[SparseHeader, dict]:
    with open_regular(path, where, f"extent file {ext.filename!r}") as f:
        size = os.fstat(f.fileno()).st_size
        header = parse_sparse_header(f.read(SECTOR), where)
        if header.capacity != ext.sectors:
            raise InputError(f"sparse extent {ext.filename!r} holds {header.capacity} "
                             f"sectors but the descriptor says {ext.sectors}", where)
        grains = check_grain_tables(f, header, size, where)
    return header, grains


def refuse_extent_piece(path: str, where: str) -> None:
    """A file about to be read as a raw disk that a descriptor beside it lists as one of
    several extents (a twoGbMaxExtentFlat -f002.vmdk: 2 GiB of a larger disk), as
    snapshot data or as its change-tracking file (-ctk.vmdk): refuse it, naming the
    descriptor. The -flat.vmdk of a monolithicFlat
    or vmfs descriptor is the whole disk and passes."""
    found = extent_of(path)
    if found and (found.count > 1 or found.extent_type in ("VMFSSPARSE", "SESPARSE", "CTK")):
        refuse_data_file(path, "a raw extent of a VMware disk", where)


def _refuse_zero(desc: Descriptor, path: str) -> None:
    """qemu's vmdk driver has no ZERO extents: vmdk_parse_extents (block/vmdk.c) skips a
    line without a file name, so qemu reads a disk shorter than the descriptor says."""
    for e in desc.extents:
        if e.type == "ZERO":
            raise InputError(
                f"a ZERO extent ({e.size} bytes of zeros with no file): qemu's vmdk driver "
                "has no ZERO extents and would read the disk that much shorter, so this "
                "descriptor cannot be converted as written", f"{path}:{e.line}")


def _refuse_access(desc: Descriptor, path: str) -> None:
    """Extents not marked RW: qemu skips them (block/vmdk.c, vmdk_parse_extents reads only
    lines whose access is "RW"), so it would see a shorter disk, or none at all (qemu 7.2
    then stops on an assertion, `s->num_extents`, in vmdk_get_info)."""
    directory, name = os.path.split(os.path.abspath(path))
    for e in desc.extents:
        if e.access == "RW" or e.type == "ZERO":
            continue
        at = f"{path}:{e.line}"
        if e.access == "RDONLY":
            copy = re.sub(r"(?i)\.vmdk$", "", name) + "-rw.vmdk"
            raise InputError(
                f"extent {e.filename!r} is RDONLY: VMware's access mode for an extent the VM "
                "may read but never write (a read-only disk). qemu reads only extents marked "
                "RW and skips the others, so it would not see this part of the disk. "
                "Converting only reads the source, so a copy of the descriptor marked RW "
                f"converts exactly this data: in {directory} run "
                f"sed 's/^RDONLY /RW /' {name} > {copy} and convert {copy}", at)
        raise InputError(
            f"extent {e.filename!r} is NOACCESS: VMware gives the VM no access to this part "
            "of the disk, so it is not part of the disk the VM sees and cannot be converted. "
            "Only if you know the extent holds the disk's data, mark it RW in a copy of the "
            "descriptor beside it and convert the copy", at)


def load(path: str, *, _depth: int = 0) -> VmdkImage:
    """Parse a .vmdk (descriptor or monolithic sparse), validate every extent and parent."""
    where = path
    if _depth > 64:
        raise InputError("snapshot chain deeper than 64 links (a loop?)", where)
    with open_regular(path, where, "VMDK file" if _depth == 0 else "parent disk") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(SECTOR)
        if not head:
            raise InputError("file is empty", where)
        kind = data_file_kind(head)
        if kind:
            refuse_data_file(path, kind, where)
        if head.startswith(SPARSE_MAGIC):
            header = parse_sparse_header(head, where)
            text = read_embedded_descriptor(f, header, size, where)
            if text is None:
                refuse_data_file(path, "a VMDK sparse extent without an embedded "
                                 "descriptor (KDMV header)", where)
            embedded = True
        elif is_text_descriptor(head):
            if size > MAX_DESCRIPTOR_BYTES:
                raise InputError(f"descriptor is {size} bytes; refusing anything over "
                                 f"{MAX_DESCRIPTOR_BYTES}", where)
            f.seek(0)
            text = decode_descriptor(descriptor_bytes(f.read()), where)
            embedded = False
        else:
            raise InputError("not a VMDK: neither a descriptor nor a KDMV sparse extent",
                             where)
    desc = parse_descriptor(text, where)
    if embedded and len(desc.extents) > 1:
        # A piece of a split disk that carries the whole disk's descriptor: qemu would
        # read this file alone as if it were the disk.
        refuse_data_file(path, f"a VMDK sparse extent whose embedded descriptor lists "
                         f"{len(desc.extents)} extents ({desc.create_type})", where)
    if not embedded:
        _refuse_access(desc, path)
        _refuse_zero(desc, path)
    directory = os.path.dirname(os.path.abspath(path))
    paths: list[str | None] = []
    grains: list[dict] = []
    for ext in desc.extents:
        at = f"{where}:{ext.line}" if not embedded else where
        if ext.filename is None:
            paths.append(None)
            continue
        if embedded and len(desc.extents) == 1 and ext.type == "SPARSE":
            ext_path = os.path.abspath(path)  # the extent is this file, whatever it was named
        else:
            ext_path = _confined(directory, ext.filename, at)
        paths.append(ext_path)
        if ext.type in ("FLAT", "VMFS"):
            _check_flat(ext_path, ext, at)
        elif ext.type == "SPARSE":
            _, g = _check_sparse(ext_path, ext, at)
            grains.append(g)
        elif ext.type == "SESPARSE":
            _check_sesparse(ext_path, ext, at)
        # VMFSSPARSE (ESXi COWD deltas): qemu validates their internal tables.
    image = VmdkImage(os.path.abspath(path), desc, embedded, paths, grains)
    if desc.has_parent:
        hint = desc.parent_hint or ""
        parent_path = _confined(directory, _safe_name(hint, where), where)
        parent = load(parent_path, _depth=_depth + 1)
        if parent.descriptor.cid != desc.parent_cid:
            raise InputError(
                f"snapshot chain is broken: parentCID {desc.parent_cid:08x} but "
                f"{os.path.basename(parent_path)} has CID {parent.descriptor.cid:08x} (the "
                "parent was modified after the snapshot was taken)", where)
        if parent.descriptor.virtual_size != desc.virtual_size:
            raise InputError("snapshot and parent differ in size", where)
        image.parent = parent
    return image


def sanitized_descriptor(image: VmdkImage) -> str:
    """A qemu-readable copy of a validated descriptor with absolute extent paths.

    Used for createTypes qemu refuses by name (vmfsThin, a flat file that is
    thin on VMFS) and lets qemu read only the extents we validated.
    """
    d = image.descriptor
    create = "vmfs" if d.create_type == "vmfsThin" else d.create_type
    lines = ["# Disk DescriptorFile", "version=1", f"CID={d.cid:08x}",
             f"parentCID={d.parent_cid:08x}", f'createType="{create}"']
    if d.parent_hint and image.parent is not None:
        lines.append(f'parentFileNameHint="{image.parent.path}"')
    # qemu 7.2 counts an extent line twice when a blank line precedes it; VMware's
    # own layout (a comment line first) is read correctly.
    lines.append("# Extent description")
    for e, p in zip(d.extents, image.extent_paths):
        if p is None:
            lines.append(f"{e.access} {e.sectors} ZERO")
        elif e.type == "FLAT":
            lines.append(f'{e.access} {e.sectors} FLAT "{p}" {e.offset}')
        elif e.type == "VMFS" and e.offset == 0:  # qemu takes no offset on VMFS lines
            lines.append(f'{e.access} {e.sectors} VMFS "{p}"')
        elif e.type == "VMFS":
            lines.append(f'{e.access} {e.sectors} FLAT "{p}" {e.offset}')
        else:
            lines.append(f'{e.access} {e.sectors} {e.type} "{p}"')
    lines.append("# The Disk Data Base")
    for k, v in d.ddb.items():
        lines.append(f'{k} = "{v}"')
    return "\n".join(lines) + "\n"
