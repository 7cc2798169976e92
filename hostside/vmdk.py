"""VMDK descriptors and sparse headers, parsed by us (not trusted to qemu).

We parse before qemu opens anything so that a hostile or damaged descriptor
(an extent pointing at ../../etc/shadow, sizes that do not add up, a grain
table pointing past the end of the file) is refused with a message naming the
file and line, instead of qemu reading whatever the descriptor says.
"""

from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass, field

from hostside.errors import InputError

SECTOR = 512
NO_PARENT = 0xFFFFFFFF
GD_AT_END = 0xFFFFFFFFFFFFFFFF
SPARSE_MAGIC = b"KDMV"
DESCRIPTOR_MAGIC = b"# Disk DescriptorFile"
MAX_DESCRIPTOR_BYTES = 64 * 1024  # real descriptors are < 2 KiB

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


def parse_descriptor(text: str, where: str = "descriptor") -> Descriptor:
    """Parse descriptor text. Pure: no file access. Raises InputError."""
    if "\x00" in text:
        raise InputError("descriptor contains NUL bytes (not a text descriptor)", where)
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
    return Descriptor(create_type, cid, parent_cid, extents, parent_hint, version, ddb)


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


def read_embedded_descriptor(f, header: SparseHeader, file_size: int, where: str) -> str | None:
    if header.descriptor_offset == 0 or header.descriptor_size == 0:
        return None
    start, length = header.descriptor_offset * SECTOR, header.descriptor_size * SECTOR
    if length > MAX_DESCRIPTOR_BYTES * 16 or start + length > file_size:
        raise InputError("embedded descriptor lies outside the file (truncated?)", where)
    f.seek(start)
    raw = f.read(length).split(b"\x00", 1)[0]
    return raw.decode("utf-8", errors="replace")


def check_grain_tables(f, header: SparseHeader, file_size: int, where: str) -> dict:
    """Every grain directory/table entry must point inside the file.

    qemu would otherwise read garbage (or fail half-way through a conversion).
    Returns allocation counts used in the inspect output.
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
    if gd_offset == 0 or gd_offset == GD_AT_END or gd_offset * SECTOR + n_gdes * 4 > file_size:
        raise InputError(f"grain directory at sector {gd_offset} lies outside the file "
                         f"({file_size} bytes): truncated or corrupted", where)
    f.seek(gd_offset * SECTOR)
    gd = struct.unpack(f"<{n_gdes}I", f.read(n_gdes * 4))
    allocated = zero = 0
    for i, gde in enumerate(gd):
        if gde == 0:
            continue
        if gde * SECTOR + header.gtes_per_gt * 4 > file_size:
            raise InputError(f"grain directory entry {i} points to sector {gde}, past the end "
                             f"of the file: corrupted grain directory", where)
        f.seek(gde * SECTOR)
        raw = f.read(header.gtes_per_gt * 4)
        for j, gte in enumerate(struct.unpack(f"<{header.gtes_per_gt}I", raw)):
            if gte == 0:
                continue
            if gte == 1 and header.zeroed_grain_ok:
                zero += 1
                continue
            end = gte + (1 if header.compressed else header.grain_size)
            if end > file_sectors or gte < 1:
                raise InputError(f"grain table {i} entry {j} points to sector {gte}, past the "
                                 f"end of the file: corrupted grain table", where)
            allocated += 1
    return {"grain_size": header.grain_size * SECTOR, "allocated_grains": allocated,
            "zero_grains": zero}


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
    return head.lstrip(b"\xef\xbb\xbf").startswith(DESCRIPTOR_MAGIC)


def _confined(directory: str, name: str, where: str) -> str:
    base = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(base, name))
    if os.path.commonpath([base, path]) != base:
        raise InputError(f"extent {name!r} resolves to {path}, outside {base}", where)
    return path


def _check_flat(path: str, ext: Extent, where: str) -> None:
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise InputError(f"extent file {ext.filename!r} is missing", where) from None
    except OSError as exc:
        raise InputError(f"extent file {ext.filename!r} is unreadable: {exc.strerror}",
                         where) from None
    need = (ext.offset + ext.sectors) * SECTOR
    if size < need:
        raise InputError(f"extent file {ext.filename!r} has {size} bytes but the descriptor "
                         f"needs {need} (truncated copy or wrong size)", where)
    if not os.access(path, os.R_OK):
        raise InputError(f"extent file {ext.filename!r} is not readable", where)


def _check_sparse(path: str, ext: Extent, where: str) -> tuple[SparseHeader, dict]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header = parse_sparse_header(f.read(SECTOR), where)
            if header.capacity != ext.sectors:
                raise InputError(f"sparse extent {ext.filename!r} holds {header.capacity} "
                                 f"sectors but the descriptor says {ext.sectors}", where)
            grains = check_grain_tables(f, header, size, where)
    except FileNotFoundError:
        raise InputError(f"extent file {ext.filename!r} is missing", where) from None
    except PermissionError:
        raise InputError(f"extent file {ext.filename!r} is not readable", where) from None
    return header, grains


def load(path: str, *, _depth: int = 0) -> VmdkImage:
    """Parse a .vmdk (descriptor or monolithic sparse), validate every extent and parent."""
    where = path
    if _depth > 64:
        raise InputError("snapshot chain deeper than 64 links (a loop?)", where)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(SECTOR)
            if not head:
                raise InputError("file is empty", where)
            if head.startswith(SPARSE_MAGIC):
                header = parse_sparse_header(head, where)
                text = read_embedded_descriptor(f, header, size, where)
                if text is None:
                    raise InputError("sparse extent opened directly has no embedded "
                                     "descriptor: open its descriptor file instead", where)
                embedded = True
            elif is_text_descriptor(head):
                if size > MAX_DESCRIPTOR_BYTES:
                    raise InputError(f"descriptor is {size} bytes; refusing anything over "
                                     f"{MAX_DESCRIPTOR_BYTES}", where)
                f.seek(0)
                # qemu pads descriptor files with NULs to a sector; only trailing ones.
                text = f.read().rstrip(b"\x00").decode("utf-8", errors="replace")
                embedded = False
            else:
                raise InputError("not a VMDK: neither a descriptor nor a KDMV sparse extent",
                                 where)
    except IsADirectoryError:
        raise InputError("is a directory", where) from None
    except FileNotFoundError:
        raise InputError("no such file", where) from None
    except PermissionError:
        raise InputError("permission denied", where) from None
    desc = parse_descriptor(text, where)
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
        # VMFSSPARSE/SESPARSE (ESXi deltas): qemu validates their internal tables.
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
