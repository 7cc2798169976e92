"""Where a disk's data is: allocation maps from our grain tables, the file system, or qemu.

Three sources of the same kind of answer, a list of `Run`s covering the virtual disk:

- `vmdk_view`: from a validated VMDK's own grain directories/tables (and flat extents;
  for an ESXi seSparse snapshot chain, each layer's grains over its base), read by us.
  Used to hand qemu-img a raw view of the allocated runs: qemu 7.2's vmdk driver answers
  block status one grain at a time, so a 64 GiB disk costs it a million calls even when
  it holds 1 GiB; windows over the data plus `null-co` zero runs do not.
- `file_runs`: SEEK_DATA/SEEK_HOLE of a regular file.
- `qemu_map`: `qemu-img map --output=json` (qemu's own reading of any format, used by the
  verification so that it does not depend on our grain-table parsing).
"""

from __future__ import annotations

import array
import errno
import json
import os
import re
import struct
import sys
from hostside.record import dataclass

from hostside import vmdk
from hostside.errors import InputError, ToolFailed

SECTOR = 512


@dataclass
class Run:
    """[start, start+length) of the virtual disk: data at `offset` in `path`, or zeros."""

    start: int
    length: int
    path: str | None = None      # None: reads as zeros
    offset: int = 0              # byte offset in `path`

    @property
    def end(self) -> int:
        return self.start + self.length

    @property
    def is_data(self) -> bool:
        return self.path is not None


def _append(runs: list[Run], run: Run) -> None:
    """Append, merging with the previous run when both are contiguous (guest and file)."""
    if runs:
        last = runs[-1]
        if last.end == run.start and last.path == run.path and (
                run.path is None or last.offset + last.length == run.offset):
            last.length += run.length
            return
    runs.append(run)


# --------------------------------------------------------------------------- VMDK view


def vmdk_view(image: vmdk.VmdkImage) -> list[Run] | None:
    """Runs of a validated VMDK, or None when qemu must read it itself (compressed or
    stream-optimized grains, vmfsSparse COWD deltas, a fragmented seSparse snapshot)."""
    d = image.descriptor
    if d.has_parent:
        return _sesparse_chain_view(image)
    runs: list[Run] = []
    pos = 0
    for ext, path in zip(d.extents, image.extent_paths):
        if ext.type == "ZERO" or path is None:
            _append(runs, Run(pos, ext.size))
        elif ext.type in ("FLAT", "VMFS"):
            # one window per flat extent: the raw driver sees its holes itself
            _append(runs, Run(pos, ext.size, path, ext.offset * SECTOR))
        elif ext.type == "SPARSE":
            part = sparse_runs(path, pos, ext.size)
            if part is None:
                return None
            for r in part:
                _append(runs, r)
        else:
            return None
        pos += ext.size
    return runs


def sparse_runs(path: str, base: int, size: int) -> list[Run] | None:
    """The grains of one uncompressed sparse extent as runs (None: compressed).

    Mirrors qemu's block/vmdk.c get_cluster_offset(): a grain table entry 0 is
    unallocated (zeros, no parent here), 1 is a zeroed grain when the header has the
    zeroed-grain flag, anything else is the grain's sector in the file.
    """
    with vmdk.open_regular(path, path, "extent file") as f:
        fd = f.fileno()
        file_size = os.fstat(fd).st_size
        header = vmdk.parse_sparse_header(os.pread(fd, SECTOR, 0), path)
        if header.compressed or header.gd_offset == vmdk.GD_AT_END:
            return None
        grain = header.grain_size * SECTOR
        gtes = header.gtes_per_gt
        capacity = min(header.capacity * SECTOR, size)
        n_gdes = -(-header.capacity // (header.grain_size * gtes))
        gd = _u32(os.pread(fd, n_gdes * 4, header.gd_offset * SECTOR), n_gdes, path)
        zero_ok = header.zeroed_grain_ok
        runs: list[Run] = []
        used = [i for i, gde in enumerate(gd) if gde]
        used.sort(key=gd.__getitem__)
        # vmdk._read_tables reads neighbouring tables with one request
        empty = bytes(gtes * 4)
        for i, raw in sorted(vmdk._read_tables(f, gd, used, gtes * 4)):
            if raw == empty:       # memcmp; most tables of a big thin disk are empty
                continue
            gt = _u32(raw, gtes, path)
            first = base + i * gtes * grain
            for j, k, value in _gt_runs(gt, header.grain_size, zero_ok):
                start = first + j * grain
                length = min(k * grain, base + capacity - start)
                if length <= 0:
                    break
                if value is None:
                    continue
                off = value * SECTOR
                if off + length > file_size:
                    raise InputError(f"grain table {i} points past the end of the file "
                                     "(the file changed since it was checked?)", path)
                _append(runs, Run(start, length, path, off))
    return runs


# ESXi seSparse snapshots (VMFS6): a layer's grains over what its parent reads as.
# A layer fragmented into more runs than this is left to qemu's vmdk driver (the raw view
# would open too many windows anyway: image.MAX_VIEW_RUNS).
MAX_SESPARSE_RUNS = 8192
_SE_GDE_ALLOCATED = 0x10000000          # top 32 bits of a grain directory entry in use


def _sesparse_chain_view(image: vmdk.VmdkImage) -> list[Run] | None:
    """seSparse snapshots (one SESPARSE extent each) over a base we can view: each layer's
    grains laid over its parent's runs, as qemu's vmdk_co_preadv reads them (an unallocated
    grain reads the parent, a zero grain reads zeros). None for any other chain."""
    layers = image.chain                        # top first
    if any(len(img.extent_paths) != 1 or img.descriptor.extents[0].type != "SESPARSE"
           or img.extent_paths[0] is None for img in layers[:-1]):
        return None
    runs = vmdk_view(layers[-1])
    if runs is not None:
        runs = _flat_holes_as_zeros(runs, layers[-1])
    for img in reversed(layers[:-1]):
        if runs is None:
            return None
        upper = sesparse_runs(img.extent_paths[0], img.descriptor.extents[0].size)
        runs = None if upper is None else overlay(runs, upper)
    return runs


def _flat_holes_as_zeros(runs: list[Run], base: vmdk.VmdkImage) -> list[Run]:
    """The base's flat windows cut to its file's data (holes read as zeros): so that the
    verification reads what the chain holds, as qemu-img map of the chain reports it,
    not every hole of a thin -flat.vmdk."""
    flat = {p for e, p in zip(base.descriptor.extents, base.extent_paths)
            if e.type in ("FLAT", "VMFS")}
    out: list[Run] = []
    for r in runs:
        if r.path not in flat:
            _append(out, r)
            continue
        with vmdk.open_regular(r.path, r.path, "extent file") as f:
            held = file_runs(f.fileno(), r.offset + r.length)
        data = [Run(r.start + a - r.offset, b - a, r.path, a) for off, length in held
                if (a := max(off, r.offset)) < (b := min(off + length, r.offset + r.length))]
        for piece in overlay([Run(r.start, r.length)], data):
            _append(out, piece)
    return out


def sesparse_runs(path: str, size: int, limit: int = MAX_SESPARSE_RUNS) -> list[Run] | None:
    """The grains one seSparse layer holds, as runs: allocated grains as data in `path`,
    zero and SCSI-unmapped grains as zeros; what it leaves unallocated is absent (read the
    parent). None beyond `limit` runs. Mirrors the seSparse branch of get_cluster_offset
    in qemu's block/vmdk.c; an entry qemu would fail on (an I/O error mid-copy) is
    refused here, naming the table."""
    where = f"{path} (seSparse extent)"
    grain = vmdk.SESPARSE_GRAIN_SECTORS * SECTOR
    entries = vmdk.SESPARSE_GT_ENTRIES
    with vmdk.open_regular(path, path, "extent file") as f:
        fd = f.fileno()
        file_size = os.fstat(fd).st_size
        h = vmdk.parse_sesparse_header(
            os.pread(fd, SECTOR, 0), lambda sector: os.pread(fd, SECTOR, sector * SECTOR)
            if sector * SECTOR < file_size else b"", where)
        n_gdes = h.needed_gd_entries
        gd = _u64(os.pread(fd, n_gdes * 8, h.gd_offset * SECTOR), n_gdes, where)
        runs: list[Run] = []
        empty = bytes(entries * 8)
        seen: set[int] = set()      # each table read once: the work is bounded by the file
        for i, gde in enumerate(gd):
            if gde == 0:
                continue
            if gde >> 32 != _SE_GDE_ALLOCATED:
                raise InputError(f"grain directory entry {i} ({gde:#018x}) is of no known kind",
                                 where)
            if gde in seen:
                raise InputError(f"grain directory entry {i} names a grain table another "
                                 "entry names too (damaged file)", where)
            seen.add(gde)
            table_at = (h.gt_offset + (gde & 0xFFFFFFFF) * vmdk.SESPARSE_GT_SECTORS) * SECTOR
            raw = os.pread(fd, entries * 8, table_at)
            if len(raw) < entries * 8:
                raise InputError(f"grain table {i} lies past the end of the file", where)
            if raw == empty:
                continue
            first = i * entries * grain
            for j, k, value in _se_table_runs(_u64(raw, entries, where), raw, i, where):
                start = first + j * grain
                length = min(k * grain, size - start)
                if length <= 0:
                    break
                if value >> 60 == 3:            # allocated: the grain number, bits shuffled
                    number = ((value >> 48) & 0xFFF) | ((value & 0xFFFFFFFFFFFF) << 12)
                    off = (h.grains_offset + number * vmdk.SESPARSE_GRAIN_SECTORS) * SECTOR
                    if off + k * grain > file_size:
                        raise InputError(f"grain table {i} entry {j} points past the end of "
                                         "the file (truncated copy?)", where)
                    _append(runs, Run(start, length, path, off))
                else:                           # SCSI-unmapped, zero grain
                    _append(runs, Run(start, length))
                if len(runs) > limit:
                    return None
    return runs


_ZEROS8 = re.compile(rb"(?:\0{8})*")     # whole unallocated entries from an aligned position
_SE_NEXT_GRAIN = 1 << 48                # entry of grain n+1 - entry of grain n (same n >> 12)


def _se_table_runs(gt: array.array, raw: bytes, table: int, where: str):
    """(first entry, entries, entry value) per run of one seSparse grain table, unallocated
    entries skipped: zero grains of one kind, or grains stored consecutively in the file
    (whose entries step by 1 << 48 until the grain number's low 12 bits wrap). Work is per
    run (slice comparisons), not per entry."""
    n = len(gt)
    j = 0
    while j < n:
        v = gt[j]
        if v == 0:
            j = max(j + 1, _ZEROS8.match(raw, 8 * j).end() // 8)
            continue
        kind = v >> 60
        if kind in (1, 2):
            k = _gallop(gt, j, lambda m: array.array("Q", [v]) * m)
        elif kind == 3:
            room = 0x1000 - ((v >> 48) & 0xFFF)
            k = _gallop(gt, j, lambda m: array.array(
                "Q", range(v, v + m * _SE_NEXT_GRAIN, _SE_NEXT_GRAIN)), room)
        else:
            raise InputError(f"grain table {table} entry {j} ({v:#018x}) is of no known "
                             "kind", where)
        yield j, k, v
        j += k


def overlay(lower: list[Run], upper: list[Run]) -> list[Run]:
    """`upper` (a snapshot layer's runs) over `lower` (what its parent reads as); both
    sorted and non-overlapping, gaps read as zeros in `lower` and as the parent in `upper`."""
    out: list[Run] = []
    i, pos = 0, 0
    for u in [*upper, Run(1 << 80, 0)]:         # the sentinel flushes what is left below
        while i < len(lower) and lower[i].start < u.start:
            piece = _piece(lower[i], pos, u.start)
            if piece is not None:
                _append(out, piece)
            if lower[i].end > u.start:
                break
            i += 1
        if u.length:
            _append(out, Run(u.start, u.length, u.path, u.offset))
            pos = u.end
            while i < len(lower) and lower[i].end <= pos:
                i += 1
    return out


def _piece(run: Run, a: int, b: int) -> Run | None:
    """The part of `run` within [a, b), or None."""
    a, b = max(a, run.start), min(b, run.end)
    if a >= b:
        return None
    return Run(a, b - a, run.path, run.offset + (a - run.start) if run.path else 0)


def _entries(raw: bytes, count: int, where: str, typecode: str) -> array.array:
    """`count` little-endian table entries of array type `typecode` ("I": u32, "Q": u64)."""
    out = array.array(typecode)
    if len(raw) < count * out.itemsize:
        raise InputError("grain directory or table is truncated", where)
    out.frombytes(raw[:count * out.itemsize])
    if sys.byteorder == "big":
        out.byteswap()
    return out


def _u64(raw: bytes, count: int, where: str) -> array.array:
    return _entries(raw, count, where, "Q")


def _u32(raw: bytes, count: int, where: str) -> array.array:
    return _entries(raw, count, where, "I")


def _gt_runs(gt: array.array, grain_sectors: int, zero_ok: bool):
    """(first entry, entries, first sector or None for zeros) per run of one table.

    Work is per run, not per entry: zero runs are found with bytes.lstrip, data runs
    (consecutive grains stored consecutively, what VMware and qemu write) by
    comparing slices with an arithmetic progression, galloping.
    """
    n = len(gt)
    raw = gt.tobytes()
    j = 0
    while j < n:
        v = gt[j]
        if v == 0:
            k = max(1, (_ZEROS.match(raw, 4 * j).end() - 4 * j) // 4)
            yield j, k, None
        elif v == 1 and zero_ok:
            k = _gallop(gt, j, lambda m: array.array("I", [1]) * m)
            yield j, k, None
        else:
            step = grain_sectors
            limit = (0xFFFFFFFF - v) // step + 1   # progression stays a u32
            k = _progression(gt, j, v, step, limit)
            yield j, k, v
        j += k


_ZEROS = re.compile(rb"(?:\0\0\0\0)*")   # whole zero entries from an aligned position


def _progression(gt: array.array, j: int, v: int, step: int, limit: int) -> int:
    """Length of the run of consecutive grains starting at entry j: a guess from the
    end points (cheap), confirmed by one slice comparison; galloping if it fails."""
    cap = min(len(gt) - j, limit)
    good, k = 1, 2
    while k <= cap and gt[j + k - 1] == v + (k - 1) * step:
        good, k = k, k * 2
    hi = min(k, cap + 1)
    while hi - good > 1:
        mid = (good + hi) // 2
        if gt[j + mid - 1] == v + (mid - 1) * step:
            good = mid
        else:
            hi = mid
    if gt[j:j + good] == array.array("I", range(v, v + good * step, step)):
        return good
    return _gallop(gt, j, lambda m: array.array("I", range(v, v + m * step, step)), limit)


def _gallop(gt: array.array, j: int, expected, limit: int | None = None) -> int:
    """Largest k with gt[j:j+k] == expected(k) (k >= 1, expected(1) == gt[j:j+1])."""
    hi_cap = len(gt) - j if limit is None else min(len(gt) - j, limit)
    good, k = 1, 2
    while k <= hi_cap and gt[j:j + k] == expected(k):
        good, k = k, k * 2
    hi = min(k, hi_cap + 1)     # first size known (or assumed) not to match
    while hi - good > 1:
        mid = (good + hi) // 2
        if gt[j:j + mid] == expected(mid):
            good = mid
        else:
            hi = mid
    return good


# --------------------------------------------------------------------------- files


def file_runs(fd: int, size: int) -> list[tuple[int, int]]:
    """(offset, length) of every data run of a regular file, holes skipped.

    Written extents from FIEMAP (after its sync): an *unwritten* extent (fallocated,
    reads as zeros; qemu's qcow2 driver zero-fills the rest of a new cluster that way)
    counts as a hole. SEEK_DATA is not used for that: ext4 and XFS answer it for unwritten
    extents from the page cache, so the same file's "data runs" change after any read of
    them. Where FIEMAP is not supported (tmpfs, NFS) SEEK_DATA/SEEK_HOLE, which such
    file systems answer from their real allocation.
    """
    runs = _fiemap_runs(fd, size)
    return runs if runs is not None else seek_runs(fd, size)


def seek_runs(fd: int, size: int) -> list[tuple[int, int]]:
    """SEEK_DATA/SEEK_HOLE runs: the page cache's view on ext4/XFS (an unwritten extent
    with cached pages counts as data), so a superset of FIEMAP's written extents."""
    runs: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:   # only a hole is left
                break
            raise
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        if end <= start:
            break
        runs.append((start, end - start))
        pos = end
    return runs


# Linux include/uapi/linux/fiemap.h and Documentation/filesystems/fiemap.rst
_FS_IOC_FIEMAP = 0xC020660B            # _IOWR('f', 11, struct fiemap)
_FIEMAP_FLAG_SYNC = 0x1
_FIEMAP_EXTENT_LAST = 0x1
_FIEMAP_EXTENT_UNWRITTEN = 0x800
_FIEMAP_HEAD = struct.Struct("=QQIIII")        # start, length, flags, mapped, count, reserved
_FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")   # logical, physical, length, 2x reserved, flags, 3x reserved
_FIEMAP_BATCH = 512


def _fiemap_runs(fd: int, size: int) -> list[tuple[int, int]] | None:
    import fcntl
    runs: list[tuple[int, int]] = []
    pos = 0
    flags = _FIEMAP_FLAG_SYNC
    while pos < size:
        buf = bytearray(_FIEMAP_HEAD.size + _FIEMAP_BATCH * _FIEMAP_EXTENT.size)
        _FIEMAP_HEAD.pack_into(buf, 0, pos, size - pos, flags, 0, _FIEMAP_BATCH, 0)
        try:
            fcntl.ioctl(fd, _FS_IOC_FIEMAP, buf)
        except OSError as exc:
            if exc.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return None
            raise
        flags = 0                      # synced once is enough
        mapped = _FIEMAP_HEAD.unpack_from(buf, 0)[3]
        if mapped == 0:
            break
        last = False
        for k in range(mapped):
            logical, _, length, _, _, eflags, _, _, _ = _FIEMAP_EXTENT.unpack_from(
                buf, _FIEMAP_HEAD.size + k * _FIEMAP_EXTENT.size)
            pos = max(pos, logical + length)
            last = last or bool(eflags & _FIEMAP_EXTENT_LAST)
            if eflags & _FIEMAP_EXTENT_UNWRITTEN:
                continue
            a, b = max(0, logical), min(size, logical + length)
            if a >= b:
                continue
            if runs and runs[-1][0] + runs[-1][1] == a:
                runs[-1] = (runs[-1][0], b - runs[-1][0])
            else:
                runs.append((a, b - a))
        if last:
            break
    return runs


# --------------------------------------------------------------------------- qemu-img map


@dataclass
class MapEntry:
    start: int
    length: int
    depth: int
    zero: bool
    data: bool
    offset: int | None


def parse_map(text: str, what: str) -> list[MapEntry]:
    """`qemu-img map --output=json` (qemu's qemu-img.c dump_map_entry: start, length,
    depth, present, zero, data, offset when known)."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise ToolFailed("qemu-img map printed something that is not JSON", what) from None
    out = []
    for e in doc:
        out.append(MapEntry(int(e["start"]), int(e["length"]), int(e.get("depth", 0)),
                            bool(e.get("zero")), bool(e.get("data")),
                            int(e["offset"]) if "offset" in e else None))
    return out
