"""Verify a converted target against its source at the cost of the data, not the disk.

`qemu-img compare` reads both images end to end (every hole of a 64 GiB disk through
the vmdk driver's one-grain-at-a-time block status). Here instead:

1. the source's allocation: for a sparse VMDK copied through a raw view, the view itself
   (our grain tables: qemu's vmdk driver would answer one grain at a time, a million
   calls for 64 GiB); otherwise qemu's own `qemu-img map --output=json` through the same
   driver and chain it reads (started alongside the copy);
2. the target's allocation comes from its block status: SEEK_DATA/SEEK_HOLE of a raw
   file, `qemu-img map` of a qcow2 (data clusters at their file offsets), a block device
   is all data;
3. every range where either side holds data is read and compared byte for byte (source
   bytes by pread at the offset qemu reported, target bytes likewise); a range both sides
   report as zero is proven zero by block status, not read;
4. the target's `sha256-data-runs/3` digest is computed in the same pass over the
   target (pieces hashed on worker threads: hashlib releases the GIL), so nothing
   reads it twice.

When a side cannot be read by offset (compressed grains or clusters, https sources,
multi-file layers we cannot place), the old way is used: `qemu-img compare` and a
separate digest pass. The result says which method ran, over which ranges.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import stat
import subprocess
import tempfile
import threading
from hostside.record import dataclass

TYPE_CHECKING = False
if TYPE_CHECKING:      # typing is not imported at run time (start-up cost)
    from typing import Callable

from hostside import extents, qemu
from hostside.errors import ToolFailed, VerificationFailed

# The digest of the target as stored (what finalize recomputes before it attaches a volume).
# /3: the data runs of /2, hashed in pieces (see _PieceHasher) so that every core hashes;
# /2: one sha256 over every run in turn (one core: the verification's largest cost).
# /2: data runs from FIEMAP (unwritten extents are holes), SEEK_DATA only where FIEMAP is missing.
# /1 took every SEEK_DATA run, which on ext4 also counts fallocated-unwritten regions once cached:
# the same bytes gave another value, so a digest is only ever compared with one of its own kind.
DIGEST_ALGORITHM = "sha256-data-runs/3"
DIGEST_V2 = "sha256-data-runs/2"
KNOWN_DIGESTS = (DIGEST_ALGORITHM, DIGEST_V2)   # target_digest(path, algorithm) computes these
CHUNK = 4 << 20
PIECE = 16 << 20     # /3 piece boundaries: multiples of this file offset (and run ends)
METHOD = "extent-compare/1"
MAX_LISTED_RANGES = 256


# --------------------------------------------------------------------------- digest


def target_digest(path: str, algorithm: str = DIGEST_ALGORITHM) -> dict:
    """The digest of the target as stored, for finalize to recognise the volume.

    Data runs: files, every written extent (FIEMAP, unwritten extents as holes;
    SEEK_DATA/SEEK_HOLE without it), holes skipped, so a sparse 1 TiB disk costs its
    data, not its size; block devices (zvol, LV), one run 0+size, every byte.

    sha256-data-runs/3: every run is cut at the file offsets that are multiples of 16 MiB
    into pieces; each piece's bytes are hashed alone (sha256), and the digest is the
    sha256 of one line per piece, in file order: b"<offset>+<length> <piece sha256 hex>\n".
    sha256-data-runs/2: sha256 of b"<offset>+<length>\n" followed by its bytes, per run.
    Recompute either with this function; any write to the volume changes it.
    """
    if algorithm not in KNOWN_DIGESTS:
        raise ValueError(f"unknown digest algorithm {algorithm!r} (known: {KNOWN_DIGESTS})")
    fd = os.open(path, os.O_RDONLY)
    try:
        size, runs = _digest_runs(fd)
        if algorithm == DIGEST_V2:
            return {"algorithm": DIGEST_V2, "sha256": _digest_v2(fd, runs), "size": size}
        return {"algorithm": algorithm, "sha256": _hash_pieces(fd, runs), "size": size}
    finally:
        os.close(fd)


def _digest_v2(fd: int, runs: list[tuple[int, int]]) -> str:
    h = hashlib.sha256()
    for start, length in runs:
        h.update(f"{start}+{length}\n".encode())
        done = 0
        while done < length:
            chunk = os.pread(fd, min(CHUNK, length - done), start + done)
            if not chunk:
                break
            h.update(chunk)
            done += len(chunk)
    return h.hexdigest()


class _PieceHasher:
    """sha256-data-runs/3 on worker threads (hashlib releases the GIL while it hashes a
    large buffer, so `workers` pieces are hashed at once). A piece's chunks all go, in
    order, to one worker; the pieces are dealt round-robin."""

    def __init__(self, workers: int | None = None):
        n = workers or max(1, min(4, os.cpu_count() or 1))
        self.queues: list[queue.Queue] = [queue.Queue(maxsize=4) for _ in range(n)]
        self.pieces: list[tuple[int, int, object]] = []
        self.threads = [threading.Thread(target=self._work, args=(q,), daemon=True)
                        for q in self.queues]
        for t in self.threads:
            t.start()
        self._open = True

    @staticmethod
    def _work(q: queue.Queue) -> None:
        while True:
            item = q.get()
            if item is None:
                return
            item[0].update(item[1])

    def piece(self, offset: int, length: int) -> None:
        """The chunks fed from now on belong to the piece [offset, offset+length)."""
        self.pieces.append((offset, length, hashlib.sha256()))

    def feed(self, data: bytes) -> None:
        k = len(self.pieces) - 1
        self.queues[k % len(self.queues)].put((self.pieces[k][2], data))

    def close(self) -> None:
        if self._open:
            self._open = False
            for q in self.queues:
                q.put(None)
            for t in self.threads:
                t.join()

    def hashed(self) -> dict[tuple[int, int], str]:
        """(offset, length) -> sha256 hex of every piece fed."""
        self.close()
        return {(offset, length): h.hexdigest() for offset, length, h in self.pieces}


def _pieces(runs: list[tuple[int, int]]):
    """(offset, length) of every /3 piece of these runs, in file order."""
    for start, length in runs:
        pos, end = start, start + length
        while pos < end:
            cut = min(end, (pos // PIECE + 1) * PIECE)
            yield pos, cut - pos
            pos = cut


def _chunks(runs: list[tuple[int, int]], hasher: _PieceHasher):
    """(offset, length) of every chunk to read, in file order, telling `hasher` where each
    piece starts: a chunk never crosses a piece boundary."""
    for start, length in _pieces(runs):
        hasher.piece(start, length)
        for pos in range(start, start + length, CHUNK):
            yield pos, min(CHUNK, start + length - pos)


def _top(runs: list[tuple[int, int]], hashed: dict[tuple[int, int], str]) -> str:
    top = hashlib.sha256()
    for offset, length in _pieces(runs):
        top.update(f"{offset}+{length} {hashed[offset, length]}\n".encode())
    return top.hexdigest()


def _hash_pieces(fd: int, runs: list[tuple[int, int]],
                 known: dict[tuple[int, int], str] | None = None) -> str:
    """The /3 digest of these runs; pieces already in `known` are not read again."""
    known = dict(known or {})
    todo = [(a, n) for a, n in _pieces(runs) if (a, n) not in known]
    hasher = _PieceHasher()
    try:
        for pos, n in _chunks(todo, hasher):
            data = os.pread(fd, n, pos)
            if not data:
                break
            hasher.feed(data)
        known.update(hasher.hashed())
    finally:
        hasher.close()
    return _top(runs, known)


def _digest_runs(fd: int) -> tuple[int, list[tuple[int, int]]]:
    size = os.lseek(fd, 0, os.SEEK_END)
    if stat.S_ISREG(os.fstat(fd).st_mode):
        return size, extents.file_runs(fd, size)
    return size, [(0, size)]


# --------------------------------------------------------------------------- source map


class SourceMap:
    """`qemu-img map` of the source, run in the background while qemu-img converts."""

    def __init__(self, spec: qemu.ImageSpec):
        self.spec = spec
        self._out = tempfile.TemporaryFile()
        self._err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [qemu.tool("qemu-img"), "map", "--output=json", spec.image_arg()],
            stdout=self._out, stderr=self._err, stdin=subprocess.DEVNULL,
            preexec_fn=qemu.die_with_parent)

    def entries(self) -> list[extents.MapEntry]:
        try:
            rc = self.proc.wait()
            self._out.seek(0)
            self._err.seek(0)
            if rc != 0:
                err = self._err.read().decode("utf-8", "replace").strip().splitlines()
                raise ToolFailed("qemu-img map of the source failed: "
                                 + (err[-1] if err else f"exit code {rc}"), self.spec.label)
            return extents.parse_map(self._out.read().decode(), self.spec.label)
        finally:
            self.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        self._err.close()


def can_map(source) -> bool:
    """Local sources whose data files we can name for every depth of the chain."""
    return not source.spec.is_remote and _resolver(source) is not None


def _resolver(source):
    """depth -> [(guest start, guest end, file or None)] for every layer, or None."""
    if source.format == "raw":
        return {0: [(0, source.virtual_size, source.local_files[0])]}
    if source.format == "qcow2":
        chain = source.chain or source.local_files[:1]
        return {d: [(0, source.virtual_size, p)] for d, p in enumerate(chain)}
    if source.format == "vmdk" and source.vmdk is not None:
        out = {}
        for d, img in enumerate(source.vmdk.chain):
            layer, pos = [], 0
            for e, p in zip(img.descriptor.extents, img.extent_paths):
                layer.append((pos, pos + e.size, p))
                pos += e.size
            out[d] = layer
        return out
    return None


@dataclass
class Piece:
    start: int
    end: int
    path: str | None     # None: zeros
    offset: int = 0      # in path, for `start`


def _source_pieces(source, entries: list[extents.MapEntry]) -> list[Piece] | None:
    layers = _resolver(source)
    if layers is None:
        return None
    out: list[Piece] = []
    for e in entries:
        if e.zero:
            out.append(Piece(e.start, e.start + e.length, None))
            continue
        if not e.data or e.offset is None or e.depth not in layers:
            return None      # compressed, or not placeable: read through qemu instead
        # split at extent boundaries (qemu merges entries whose offsets happen to continue)
        for lo, hi, path in layers[e.depth]:
            a, b = max(lo, e.start), min(hi, e.start + e.length)
            if a >= b:
                continue
            if path is None:
                return None
            out.append(Piece(a, b, path, e.offset + (a - e.start)))
    return out


def _target_pieces(target, fd: int, virtual_size: int, ahead: bool = False
                   ) -> tuple[list[Piece], str] | None:
    st = os.fstat(fd)
    if target.fmt == "qcow2":
        spec = qemu.local_spec(target.write_path, "qcow2")
        proc = qemu.run(["map", "--output=json", spec.image_arg()], what=target.path,
                        timeout=None)
        out = []
        for e in extents.parse_map(proc.stdout, target.path):
            if e.zero:
                out.append(Piece(e.start, e.start + e.length, None))
            elif e.data and e.offset is not None and e.depth == 0:
                out.append(Piece(e.start, e.start + e.length, target.write_path, e.offset))
            else:
                return None          # compressed clusters
        return out, "qemu-img map (qcow2 driver)"
    size = os.lseek(fd, 0, os.SEEK_END)
    if stat.S_ISREG(st.st_mode):
        out, pos = [], 0
        # while the fsync runs, the page cache's view (a superset of the written extents)
        runs = extents.seek_runs(fd, size) if ahead else extents.file_runs(fd, size)
        for start, length in runs:
            if start > pos:
                out.append(Piece(pos, start, None))
            out.append(Piece(start, start + length, target.write_path, start))
            pos = start + length
        if pos < size:
            out.append(Piece(pos, size, None))
        return out, "SEEK_DATA/SEEK_HOLE"
    return [Piece(0, size, target.write_path, 0)], "block device: every byte"


def _pairs(src: list[Piece], tgt: list[Piece]):
    """(start, end, source piece, target piece) over the union of both boundaries."""
    i = j = 0
    pos = 0
    while i < len(src) and j < len(tgt):
        s, t = src[i], tgt[j]
        end = min(s.end, t.end)
        if end > pos:
            yield pos, end, s, t
        pos = end
        if s.end == end:
            i += 1
        if t.end == end:
            j += 1


# --------------------------------------------------------------------------- the check


class _Files:
    def __init__(self):
        self.fds: dict[str, int] = {}

    def read(self, path: str, offset: int, length: int, what: str) -> bytes:
        fd = self.fds.get(path)
        if fd is None:
            fd = self.fds[path] = os.open(path, os.O_RDONLY)
        data = os.pread(fd, length, offset)
        if len(data) != length:
            raise VerificationFailed(f"{what} ends early: {len(data)} of {length} bytes at "
                                     f"offset {offset} of {path}", path)
        return data

    def close(self):
        for fd in self.fds.values():
            os.close(fd)


def _slice_of(p: Piece, a: int, b: int) -> tuple[str | None, int]:
    return p.path, p.offset + (a - p.start) if p.path else 0


def _view_pieces(source) -> list[Piece]:
    """The source as the copy read it: our grain-table view (data runs, zeros between)."""
    out, pos = [], 0
    for r in source.view:
        if r.start > pos:
            out.append(Piece(pos, r.start, None))
        out.append(Piece(r.start, r.end, r.path, r.offset))
        pos = r.end
    if pos < source.virtual_size:
        out.append(Piece(pos, source.virtual_size, None))
    return out


def extent_verify(source, target, src_entries: list[extents.MapEntry] | None,
                  flushed: Callable[[], None] | None = None) -> tuple[dict, dict] | None:
    """(verification, digest), or None when this method cannot place every byte.
    `src_entries` None: the source side is the copy's own view (Source.view).
    `flushed`: see _compare_and_digest (None: the target is durable already)."""
    src = _view_pieces(source) if src_entries is None else _source_pieces(source, src_entries)
    if src is None:
        return None
    covered = sum(p.end - p.start for p in src)
    if covered != source.virtual_size:
        raise VerificationFailed(f"qemu maps {covered} bytes of the source but it has "
                                 f"{source.virtual_size}", source.spec.label)
    fd = os.open(target.write_path, os.O_RDONLY)
    files = _Files()
    try:
        ahead = flushed is not None and stat.S_ISREG(os.fstat(fd).st_mode)
        got = _target_pieces(target, fd, source.virtual_size, ahead)
        if got is None:
            return None
        tgt, tgt_how = got
        tsize = tgt[-1].end if tgt else 0
        if tsize < source.virtual_size or (target.fmt == "qcow2" and tsize != source.virtual_size):
            raise VerificationFailed(f"target holds {tsize} bytes, the source "
                                     f"{source.virtual_size}", target.path)
        if tsize > source.virtual_size:   # a larger device: its tail must read as zeros
            src = src + [Piece(source.virtual_size, tsize, None)]
        compare: list[tuple[int, int, int, str | None, int]] = []  # t_off, len, guest, s_path, s_off
        zero_src: list[tuple[int, int, str, int]] = []              # guest, len, s_path, s_off
        proven_zero = 0
        ranges: list[list[int]] = []
        for a, b, s, t in _pairs(src, tgt):
            s_path, s_off = _slice_of(s, a, b)
            if t.path is not None:
                compare.append((t.offset + (a - t.start), b - a, a, s_path, s_off))
                _add_range(ranges, a, b)
            elif s_path is not None:
                zero_src.append((a, b - a, s_path, s_off))
                _add_range(ranges, a, b)
            else:
                proven_zero += b - a
        compare.sort()
        digest = _compare_and_digest(fd, target, compare, files, flushed)
        zero = bytes(CHUNK)
        for guest, length, s_path, s_off in zero_src:
            for k in range(0, length, CHUNK):
                n = min(CHUNK, length - k)
                if files.read(s_path, s_off + k, n, "source") != zero[:n]:
                    raise VerificationFailed(f"target reads zeros at guest offset {guest + k} "
                                             "but the source holds data there", target.path)
    finally:
        files.close()
        os.close(fd)
    listed = ranges if len(ranges) <= MAX_LISTED_RANGES else None
    result = {
        "performed": True, "ok": True, "method": METHOD,
        "source_map": ("vmdk grain tables (the view the copy read)" if src_entries is None
                       else "qemu-img map (" + ("vmdk" if source.format == "vmdk" else
                                                source.format) + " driver)"),
        "target_map": tgt_how,
        "compared_bytes": sum(c[1] for c in compare) + sum(z[1] for z in zero_src),
        "zero_by_block_status_bytes": proven_zero,
        "ranges_count": len(ranges),
        "ranges_sha256": hashlib.sha256(json.dumps(ranges).encode()).hexdigest(),
        "ranges": listed,
        "digest": "computed in the same pass",
    }
    return result, digest


def _add_range(ranges: list[list[int]], a: int, b: int) -> None:
    if ranges and ranges[-1][0] + ranges[-1][1] == a:
        ranges[-1][1] += b - a
    else:
        ranges.append([a, b - a])


def _compare_and_digest(fd: int, target, compare, files: _Files,
                        flushed: Callable[[], None] | None = None) -> dict:
    """One pass over the target's data runs in file order: hash every chunk (worker
    threads) and compare the pieces that carry guest data with the source.

    `flushed`: the target's fsync is still running; it returns (or raises) once it is done.
    The pass then runs alongside it over the page cache's view of the data (SEEK_DATA: a
    superset of the written extents, the same bytes the fsync is writing); the digest's
    runs are the written extents after the fsync, and a piece whose bounds differ from
    what was hashed is read again."""
    size = os.lseek(fd, 0, os.SEEK_END)
    ahead = flushed is not None and stat.S_ISREG(os.fstat(fd).st_mode)
    if ahead:
        runs = extents.seek_runs(fd, size)
    else:
        if flushed is not None:
            flushed()
        size, runs = _digest_runs(fd)
    hasher = _PieceHasher()
    zero = bytes(CHUNK)
    k = 0                       # next compare item
    pos_in = None               # how far item k has been compared (target offset)

    def check(t_off: int, data: bytes, item) -> None:
        _, _, guest, s_path, s_off = item
        delta = t_off - item[0]
        n = len(data)
        want = zero[:n] if s_path is None else files.read(s_path, s_off + delta, n, "source")
        if data != want:
            raise VerificationFailed(f"target differs from source in the {n} bytes at guest "
                                     f"offset {guest + delta}", target.path)

    def direct(item, a: int, b: int) -> None:   # a part outside the target's data runs
        for c in range(a, b, CHUNK):
            n = min(CHUNK, b - c)
            check(c, files.read(target.write_path, c, n, "target"), item)

    try:
        for pos, n in _chunks(runs, hasher):
            data = os.pread(fd, n, pos)
            if len(data) != n:
                raise VerificationFailed(f"target ends early at offset {pos}", target.path)
            hasher.feed(data)
            c0, c1 = pos, pos + n
            while k < len(compare) and compare[k][0] < c1:
                item = compare[k]
                i0, i1 = item[0], item[0] + item[1]
                done = i0 if pos_in is None else pos_in
                if done < c0:
                    direct(item, done, min(c0, i1))
                    done = min(c0, i1)
                a, b = max(done, c0), min(i1, c1)
                if a < b:
                    check(a, data[a - c0:b - c0], item)
                if i1 <= c1:
                    k, pos_in = k + 1, None
                else:
                    pos_in = c1
                    break
        while k < len(compare):        # pieces past the last data run of the file
            item = compare[k]
            direct(item, item[0] if pos_in is None else pos_in, item[0] + item[1])
            k, pos_in = k + 1, None
        hashed = hasher.hashed()
    finally:
        hasher.close()
    if not ahead:
        return {"algorithm": DIGEST_ALGORITHM, "sha256": _top(runs, hashed), "size": size}
    flushed()
    size, written = _digest_runs(fd)
    return {"algorithm": DIGEST_ALGORITHM, "sha256": _hash_pieces(fd, written, hashed),
            "size": size}


def compare_verify(source, target) -> dict:
    """The old way: `qemu-img compare` of each source segment against the target."""
    dest = qemu.local_spec(target.write_path, target.fmt)
    result: dict = {"performed": True, "method": "qemu-img compare"}
    segments = source.segments
    if getattr(source, "view_segments", False):
        segments = [type(segments[0])(source.spec, 0, source.virtual_size)]
    single = len(segments) == 1
    for seg in segments:
        # Each segment against the same window of the target; a single segment
        # against the whole target (compare then also checks the target's tail).
        other = dest if single else qemu.window_spec(dest, seg.offset, seg.size)
        proc = qemu.run(["compare", seg.spec.image_arg(), other.image_arg()],
                        what=target.path, specs=[seg.spec], ok_codes=(0, 1), timeout=None)
        result["compare"] = {"rc": proc.returncode, "segments": len(segments),
                             "message": proc.stdout.strip()[-200:]}
        if proc.returncode == 1:
            where = "" if single else f" (segment at byte {seg.offset})"
            raise VerificationFailed(f"target differs from source{where}: "
                                     f"{proc.stdout.strip()}", target.path)
    result["ok"] = True
    return result


def check_qcow2(target) -> dict:
    """`qemu-img check` (metadata only): refcounts, leaks, corruptions."""
    dest = qemu.local_spec(target.write_path, target.fmt)
    proc = qemu.run(["check", "--output=json", dest.image_arg()],
                    what=target.path, ok_codes=(0, 1, 2, 3), timeout=None)
    try:
        check = json.loads(proc.stdout) if proc.stdout.strip() else {}
    except json.JSONDecodeError:
        check = {}
    out = {"rc": proc.returncode, "corruptions": check.get("corruptions", 0),
           "leaks": check.get("leaks", 0)}
    if proc.returncode != 0 or check.get("corruptions"):
        raise VerificationFailed(f"qemu-img check reports a damaged qcow2 "
                                 f"(rc {proc.returncode})", target.path)
    return out


def verify(source, target, source_map: SourceMap | None = None,
           flushed: Callable[[], None] | None = None) -> tuple[dict, dict]:
    """(verification result, target digest): extent comparison when every byte can be
    placed, else `qemu-img compare` and a separate digest pass. `flushed`: the target's
    fsync still runs; called (it waits, or raises the fsync's error) before the digest's
    runs are taken and before this returns. None: the target is durable already."""
    wait = flushed or (lambda: None)
    check = check_qcow2(target) if target.fmt == "qcow2" else None
    got = None
    if getattr(source, "view_segments", False):
        # qemu's vmdk driver would walk every grain of the virtual size for its map (the
        # cost the view avoids); the grain tables were validated by vmdk.load and are read
        # as qemu's block/vmdk.c reads them (tests hold the two to the same bytes).
        if source_map is not None:
            source_map.close()
        got = extent_verify(source, target, None, flushed)
    else:
        if source_map is None and can_map(source):
            source_map = SourceMap(source.spec)
        if source_map is not None:
            got = extent_verify(source, target, source_map.entries(), flushed)
    wait()
    if got is None:
        result, digest = compare_verify(source, target), target_digest(target.write_path)
        result["digest"] = "separate pass"
    else:
        result, digest = got
    if check is not None:
        result["check"] = check
    return result, digest
