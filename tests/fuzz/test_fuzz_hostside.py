"""Fuzz the host-side parsers: VMDK descriptors, sparse (monolithicSparse/streamOptimized)
headers and grain tables, whole .vmdk files, MBR/EBR/GPT.

Property: a clean hostside InputError (the project's own error type) or a valid result,
within a time bound; never another exception, and never a read outside the declared
files (file opens are watched with an audit hook; grain-table reads are bounds-checked).
"""

from __future__ import annotations

import io
import os
import struct
import sys
import tempfile
import time
import uuid
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hostside import partitions, vmdk
from hostside.errors import InputError
from tests.fuzz import FUZZ

pytestmark = [pytest.mark.fuzz, pytest.mark.unit]

TIME_BOUND_S = 5.0
SECTOR = 512

# --------------------------------------------------------------------------- file watch

_WATCH: dict = {"on": False, "opened": []}


def _audit(event, args):
    if _WATCH["on"] and event == "open" and args and isinstance(args[0], (str, bytes)):
        _WATCH["opened"].append(os.fsdecode(args[0]))


sys.addaudithook(_audit)   # process-wide and permanent; it records only while "on"


class _Watch:
    def __enter__(self):
        _WATCH["opened"] = []
        _WATCH["on"] = True
        self.t0 = time.monotonic()
        return self

    def __exit__(self, *exc):
        _WATCH["on"] = False
        self.elapsed = time.monotonic() - self.t0
        self.opened = list(_WATCH["opened"])


# --------------------------------------------------------------------------- descriptors

ACCESS = st.sampled_from(["RW", "RDONLY", "NOACCESS", "rw", "XX"])
ETYPE = st.sampled_from(["FLAT", "SPARSE", "ZERO", "VMFS", "VMFSSPARSE", "SESPARSE", "VMFSRDM",
                         "BOGUS"])
NAMES = st.sampled_from(["d-flat.vmdk", "../../etc/shadow", "/etc/passwd", "sub/x.vmdk",
                         "C:\\x.vmdk", "", "a\x00b", "d-s001.vmdk", "..", "x\"y", "😀.vmdk",
                         "json:{}", "https://h/x"])
CREATE = st.sampled_from(["monolithicSparse", "streamOptimized", "twoGbMaxExtentSparse",
                          "monolithicFlat", "twoGbMaxExtentFlat", "vmfs", "vmfsThin",
                          "vmfsSparse", "seSparse", "vmfsRDM", "fullDevice", "custom", "x"])
NUM = st.one_of(st.integers(0, 2 ** 70), st.sampled_from([0, 1, 8, 2 ** 40, 2 ** 40 + 1]))
HEX = st.one_of(st.sampled_from(["ffffffff", "fffffffe", "0", "123456789", "zz", ""]),
                st.integers(0, 2 ** 40).map(lambda n: f"{n:x}"))


@st.composite
def extent_lines(draw):
    name = draw(NAMES)
    offset = draw(st.one_of(st.just(""), NUM.map(lambda n: f" {n}")))
    return f'{draw(ACCESS)} {draw(NUM)} {draw(ETYPE)} "{name}"{offset}'


@st.composite
def descriptors(draw):
    lines = ["# Disk DescriptorFile", "version=1", f"CID={draw(HEX)}",
             f"parentCID={draw(HEX)}", f'createType="{draw(CREATE)}"']
    if draw(st.booleans()):
        lines.append(f'parentFileNameHint="{draw(NAMES)}"')
    lines += draw(st.lists(extent_lines(), max_size=5))
    lines += draw(st.lists(st.text(max_size=40), max_size=3))
    lines.append('ddb.adapterType = "lsilogic"')
    order = draw(st.permutations(range(len(lines))))
    return "\n".join(lines[i] for i in order) if draw(st.booleans()) else "\n".join(lines)


@FUZZ
@given(st.one_of(descriptors(), st.text(max_size=400)))
def test_descriptor_parser(text):
    t0 = time.monotonic()
    try:
        d = vmdk.parse_descriptor(text, "fuzz.vmdk")
    except InputError as exc:
        assert exc.message
    else:
        assert d.extents and d.create_type in vmdk.CREATE_TYPES
        for e in d.extents:   # what the parser lets through is confined by construction
            assert e.filename is None or (not e.filename.startswith("/")
                                          and ".." not in e.filename.replace("\\", "/").split("/"))
            assert 0 < e.sectors <= 1 << 40
        d.to_dict()
    assert time.monotonic() - t0 < TIME_BOUND_S


# --------------------------------------------------------------------------- sparse headers

_HEADER = struct.Struct("<4sIIQQQQIQQQB4sH")
MAGIC = st.sampled_from([b"KDMV", b"COWD", b"KDMX", b"\0\0\0\0"])
U32 = st.one_of(st.integers(0, 2 ** 32 - 1), st.sampled_from([0, 1, 8, 128, 512, 513]))
U64 = st.one_of(st.integers(0, 2 ** 64 - 1), st.sampled_from([0, 1, 2 ** 40, 2 ** 64 - 1]))


@st.composite
def sparse_headers(draw):
    return _HEADER.pack(draw(MAGIC), draw(st.sampled_from([1, 2, 3, 4, 0])), draw(U32),
                        draw(U64), draw(st.sampled_from([8, 16, 128, 2048, 0, 7, 4096])),
                        draw(U64), draw(U64), draw(st.sampled_from([512, 1, 0, 513, 128])),
                        draw(U64), draw(U64), draw(U64), 0, b"\n \r\n",
                        draw(st.sampled_from([0, 1, 2])))


@FUZZ
@given(st.one_of(sparse_headers(), st.binary(max_size=600)))
def test_sparse_header_parser(block):
    try:
        h = vmdk.parse_sparse_header(block, "fuzz.vmdk")
    except InputError:
        return
    assert 0 < h.capacity <= 1 << 40 and 8 <= h.grain_size <= 2048 and 0 < h.gtes_per_gt <= 512


class _BoundedFile(io.BytesIO):
    """A file image that fails the test on any read past its end."""

    def read(self, n=-1):
        assert 0 <= self.tell() <= len(self.getbuffer()), f"seek outside the file: {self.tell()}"
        if n is not None and n > 0:
            assert self.tell() + n <= len(self.getbuffer()), \
                f"read of {n} at {self.tell()} past the end ({len(self.getbuffer())})"
        return super().read(n)


@st.composite
def sparse_images(draw):
    """A KDMV file with a directory and tables whose entries hypothesis chooses (mostly
    plausible, sometimes hostile: shared tables, pointers past the end, huge counts)."""
    grain = draw(st.sampled_from([8, 16, 128]))
    gtes = draw(st.sampled_from([512, 4, 1, 128]))
    n_gdes = draw(st.integers(1, 64))
    capacity = draw(st.one_of(st.just(n_gdes * grain * gtes), st.integers(1, 2 ** 40)))
    size_sectors = draw(st.integers(3, 4096))
    gd_offset = draw(st.one_of(st.integers(0, size_sectors + 4), st.just(vmdk.GD_AT_END)))
    flags = draw(st.sampled_from([3, 3 | (1 << 16) | (1 << 17), 1, 7]))
    head = _HEADER.pack(b"KDMV", 1, flags, capacity, grain, 0, 0, gtes, 0, gd_offset, 0, 0,
                        b"\n \r\n", 1 if flags & (1 << 16) else 0)
    buf = bytearray(size_sectors * SECTOR)
    buf[:len(head)] = head
    table_at = st.one_of(st.integers(0, size_sectors + 8), st.just(2 ** 32 - 1))
    gd = draw(st.lists(table_at, min_size=n_gdes, max_size=n_gdes))
    if gd_offset != vmdk.GD_AT_END and gd_offset * SECTOR + 4 * n_gdes <= len(buf):
        struct.pack_into(f"<{n_gdes}I", buf, gd_offset * SECTOR, *gd)
    for at in set(gd):
        if 0 < at and at * SECTOR + 4 * gtes <= len(buf):
            entries = draw(st.lists(st.one_of(st.integers(0, size_sectors + 8),
                                              st.sampled_from([0, 1, 2 ** 32 - 1])),
                                    min_size=gtes, max_size=gtes))
            struct.pack_into(f"<{gtes}I", buf, at * SECTOR, *entries)
    if gd_offset == vmdk.GD_AT_END:   # streamOptimized: footer holds the real directory
        footer = _HEADER.pack(b"KDMV", 1, flags, capacity, grain, 0, 0, gtes, 0,
                              draw(st.integers(0, size_sectors)), 0, 0, b"\n \r\n", 1)
        buf[len(buf) - 2 * SECTOR:len(buf) - 2 * SECTOR + len(footer)] = footer
    return bytes(buf)


@FUZZ
@given(sparse_images())
def test_grain_tables_are_bounded_by_the_file(blob):
    t0 = time.monotonic()
    f = _BoundedFile(blob)
    try:
        header = vmdk.parse_sparse_header(blob[:SECTOR], "fuzz.vmdk")
        counts = vmdk.check_grain_tables(f, header, len(blob), "fuzz.vmdk")
    except InputError as exc:
        assert exc.message
    else:
        span = 1 if header.compressed else header.grain_size
        assert counts["allocated_grains"] * span <= len(blob) // SECTOR
    assert time.monotonic() - t0 < TIME_BOUND_S


# --------------------------------------------------------------------------- whole files


def _monolithic(desc_text: bytes, header: bytes) -> bytes:
    buf = bytearray(64 * SECTOR)
    buf[:len(header)] = header
    buf[SECTOR:SECTOR + len(desc_text)] = desc_text[:20 * SECTOR]
    return bytes(buf)


@st.composite
def vmdk_files(draw):
    kind = draw(st.sampled_from(["text", "sparse", "cowd", "sesparse", "junk"]))
    if kind == "text":
        return draw(descriptors()).encode("utf-8", "surrogatepass")
    if kind == "sparse":
        capacity = draw(st.sampled_from([8, 64, 2 ** 40, 0]))
        head = _HEADER.pack(b"KDMV", 1, 3, capacity, 8, 1, draw(st.sampled_from([1, 20, 0])),
                            512, 0, draw(st.integers(0, 70)), 0, 0, b"\n \r\n", 0)
        return _monolithic(draw(descriptors()).encode("utf-8", "surrogatepass"), head)
    if kind == "cowd":
        return b"COWD" + draw(st.binary(max_size=600))
    if kind == "sesparse":
        return (0xCAFEBABE).to_bytes(8, "little") + draw(st.binary(max_size=600))
    return draw(st.binary(max_size=1200))


@FUZZ
@given(vmdk_files(), st.sampled_from(["plain", "fifo-extent", "flat-extent"]))
def test_vmdk_load_reads_only_declared_files(content, sibling):
    """load() on a crafted file in a scratch directory: nothing outside it is opened
    (extents naming /etc/passwd, ../.., json:... are refused before any open)."""
    with tempfile.TemporaryDirectory() as root:
        inside = os.path.join(root, "ds")
        os.mkdir(inside)
        outside = os.path.join(root, "secret.vmdk")
        with open(outside, "wb") as f:
            f.write(b"\0" * 4096)
        path = os.path.join(inside, "d.vmdk")
        with open(path, "wb") as f:
            f.write(content)
        if sibling == "fifo-extent":
            os.mkfifo(os.path.join(inside, "d-flat.vmdk"))
        elif sibling == "flat-extent":
            with open(os.path.join(inside, "d-flat.vmdk"), "wb") as f:
                f.truncate(64 * SECTOR)
        with _Watch() as w:
            try:
                vmdk.load(path)
            except InputError as exc:
                assert exc.message
        assert w.elapsed < TIME_BOUND_S
        real_inside = os.path.realpath(inside)
        for p in w.opened:
            assert os.path.realpath(p).startswith(real_inside + os.sep), f"opened {p}"


# --------------------------------------------------------------------------- MBR / EBR / GPT


def _mbr_entry(status, ptype, start, count):
    return struct.pack("<B3xB3xII", status, ptype, start, count)


@st.composite
def disks(draw):
    """A small disk image with an MBR (maybe protective), EBR chains and GPT headers whose
    fields hypothesis chooses; CRCs are right most of the time so the deep paths run."""
    sectors = draw(st.integers(4, 256))
    buf = bytearray(sectors * SECTOR)
    field = st.one_of(st.integers(0, sectors + 4), st.sampled_from([0, 1, 2 ** 32 - 1]))
    ptype = st.sampled_from([0x00, 0x05, 0x0F, 0x85, 0x07, 0x83, 0xEE, 0xEF])
    for i in range(4):
        buf[446 + 16 * i:462 + 16 * i] = _mbr_entry(draw(st.sampled_from([0, 0x80])),
                                                    draw(ptype), draw(field), draw(field))
    buf[510:512] = draw(st.sampled_from([b"\x55\xaa"] * 4 + [b"\0\0"]))  # mostly signed
    for _ in range(draw(st.integers(0, 6))):   # EBRs anywhere
        at = draw(st.integers(1, sectors - 1)) * SECTOR
        buf[at + 446:at + 462] = _mbr_entry(0, draw(ptype), draw(field), draw(field))
        buf[at + 462:at + 478] = _mbr_entry(0, draw(ptype), draw(field), draw(field))
        buf[at + 510:at + 512] = b"\x55\xaa"
    if draw(st.booleans()):
        n_entries = draw(st.sampled_from([4, 128, 0, 5000]))
        entry_size = draw(st.sampled_from([128, 256, 0, 100]))
        entries_lba = draw(st.one_of(st.just(2), field))
        entries = bytearray()
        for _ in range(min(n_entries, 4)):
            first, last = draw(field), draw(field)
            entries += (uuid.UUID(partitions.ESP_GUID).bytes_le + uuid.uuid4().bytes_le
                        + struct.pack("<QQQ", first, last, 0) + "p".encode("utf-16-le").ljust(72, b"\0"))
        entries = bytes(entries.ljust(max(n_entries * max(entry_size, 1), 0)
                                      if n_entries * entry_size <= 64 * 1024 else 0, b"\0"))
        if entries_lba * SECTOR + len(entries) <= len(buf):
            buf[entries_lba * SECTOR:entries_lba * SECTOR + len(entries)] = entries
        for lba, backup in ((1, sectors - 1), (sectors - 1, 1)):
            hdr = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0,
                                        lba, draw(st.one_of(st.just(backup), field)), 34,
                                        draw(field), uuid.uuid4().bytes_le, entries_lba,
                                        n_entries, entry_size, zlib.crc32(entries)))
            crc = zlib.crc32(hdr[:92]) if draw(st.integers(0, 4)) else 0
            struct.pack_into("<I", hdr, 16, crc)
            buf[lba * SECTOR:lba * SECTOR + len(hdr)] = hdr
    return bytes(buf)


@FUZZ
@given(st.one_of(disks(), st.binary(min_size=0, max_size=4096)))
def test_partition_parser_never_raises(disk):
    requested = []

    def read(offset, length):
        assert offset >= 0 and length >= 0
        requested.append(length)
        return disk[offset:offset + length]

    t0 = time.monotonic()
    table = partitions.parse(read, len(disk))
    assert time.monotonic() - t0 < TIME_BOUND_S
    assert table.scheme in ("mbr", "gpt", "none")
    assert len(requested) <= partitions.MAX_LOGICAL + 8
    assert sum(requested) <= 4 * (1 << 20)        # never more than the entry arrays allow
    table.to_dict()
