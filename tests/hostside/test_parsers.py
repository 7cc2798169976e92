"""Pure parsers: VMDK descriptors, sparse headers, MBR/GPT, filesystem signatures.

Hand-built inputs for each rule, plus bounded hypothesis fuzzing: garbage must
give InputError (descriptors) or `problems` (partition tables), never a crash.
"""

from __future__ import annotations

import struct
import uuid
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostside import filesystems, partitions, vmdk
from hostside.errors import InputError

pytestmark = pytest.mark.unit

FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

GOOD = """# Disk DescriptorFile
version=1
encoding="UTF-8"
CID=fffffffe
parentCID=ffffffff
isNativeSnapshot="no"
createType="vmfs"

# Extent description
RW 8388608 VMFS "web01-flat.vmdk"

# The Disk Data Base
#DDB

ddb.adapterType = "lsilogic"
ddb.thinProvisioned = "1"
ddb.uuid = "60 00 C2 9a"
"""


def test_esxi_descriptor_parses():
    d = vmdk.parse_descriptor(GOOD, "web01.vmdk")
    assert d.create_type == "vmfs"
    assert d.cid == 0xFFFFFFFE and not d.has_parent
    assert [(e.type, e.filename, e.sectors) for e in d.extents] == \
        [("VMFS", "web01-flat.vmdk", 8388608)]
    assert d.virtual_size == 4 << 30
    assert d.to_dict()["thin"] is True and d.to_dict()["adapter_type"] == "lsilogic"


def test_split_and_zero_extents_add_up():
    text = GOOD.replace('createType="vmfs"', 'createType="twoGbMaxExtentFlat"').replace(
        'RW 8388608 VMFS "web01-flat.vmdk"',
        'RW 4194304 FLAT "a-f001.vmdk" 0\nRW 4194304 FLAT "a-f002.vmdk" 0\nRW 2048 ZERO')
    d = vmdk.parse_descriptor(text)
    assert [e.filename for e in d.extents] == ["a-f001.vmdk", "a-f002.vmdk", None]
    assert d.virtual_size == (4194304 * 2 + 2048) * 512


def test_delta_needs_parent_hint():
    text = GOOD.replace("parentCID=ffffffff", "parentCID=0000abcd").replace(
        'createType="vmfs"', 'createType="vmfsSparse"').replace(" VMFS ", " VMFSSPARSE ")
    with pytest.raises(InputError, match="parentFileNameHint"):
        vmdk.parse_descriptor(text)
    d = vmdk.parse_descriptor(text.replace("isNative", 'parentFileNameHint="web01.vmdk"\nisNative'))
    assert d.has_parent and d.parent_hint == "web01.vmdk" and d.parent_cid == 0xABCD


@pytest.mark.parametrize("name", ["../../etc/shadow", "/etc/shadow", "sub/../../x",
                                  "..\\..\\boot.ini", "C:\\disk-flat.vmdk"])
def test_extent_escaping_its_directory_is_refused(name):
    with pytest.raises(InputError, match="outside|absolute") as exc:
        vmdk.parse_descriptor(GOOD.replace("web01-flat.vmdk", name), "evil.vmdk")
    assert "evil.vmdk:10" in str(exc.value)  # names the file and line


@pytest.mark.parametrize("change,match", [
    (('createType="vmfs"', 'createType="vmfsRawDeviceMap"'), "raw device mapping"),
    (('createType="vmfs"', 'createType="weird"'), "unknown createType"),
    (('createType="vmfs"\n', ""), "no createType"),
    (("CID=fffffffe", "CID=zz"), "hex"),
    (('RW 8388608 VMFS "web01-flat.vmdk"', ""), "no extents"),
    (('RW 8388608 VMFS', 'RW 0 VMFS'), "out of range"),
    (('RW 8388608 VMFS', 'RW 8 BOGUS'), "unparseable|unsupported"),
    (('RW 8388608 VMFS "web01-flat.vmdk"', 'RW 8388608 SPARSE "x.vmdk"'), "vmfs descriptor"),
    (("version=1", "version=\x00"), "NUL"),
])
def test_bad_descriptors_are_named(change, match):
    with pytest.raises(InputError, match=match):
        vmdk.parse_descriptor(GOOD.replace(*change), "d.vmdk")


@FUZZ
@given(st.text(max_size=600))
def test_fuzz_descriptor_text(text):
    try:
        d = vmdk.parse_descriptor(text, "fuzz.vmdk")
    except InputError:
        return
    assert d.extents and d.create_type in vmdk.CREATE_TYPES
    for e in d.extents:
        assert e.sectors > 0
        assert e.filename is None or (".." not in e.filename.replace("\\", "/").split("/")
                                      and not e.filename.startswith("/"))


@FUZZ
@given(st.lists(st.sampled_from([
    "# Disk DescriptorFile", "version=1", "CID=12345678", "parentCID=ffffffff",
    'createType="monolithicFlat"', 'createType="twoGbMaxExtentSparse"',
    'RW 2048 FLAT "a-flat.vmdk" 0', 'RW 4096 SPARSE "a-s001.vmdk"', "RW 16 ZERO",
    'RDONLY 99 FLAT "../x" 5', 'parentFileNameHint="p.vmdk"', "parentCID=00000001",
    'ddb.adapterType = "ide"', "garbage line", "", 'RW 1 VMFS "/abs"']), max_size=14))
def test_fuzz_descriptor_structure(lines):
    """Structured fuzzing reaches the cross-field rules, not just the tokenizer."""
    try:
        d = vmdk.parse_descriptor("\n".join(lines))
    except InputError:
        return
    assert d.virtual_size == sum(e.sectors for e in d.extents) * 512
    if d.has_parent:
        assert d.parent_hint


@FUZZ
@given(st.sampled_from(["UTF-8", "windows-1252", "Shift_JIS", "GBK", "base64", "rot13", "idna",
                        "utf-16", "zz", "ascii"]),
       st.binary(max_size=200), st.booleans())
def test_fuzz_declared_encoding(encoding, body, bom):
    """Any encoding= name and any bytes: text or a clean InputError naming the file."""
    raw = (b"\xef\xbb\xbf" if bom else b"") + b'# Disk DescriptorFile\nencoding="' \
        + encoding.encode() + b'"\n' + body
    try:
        text = vmdk.decode_descriptor(raw, "fuzz.vmdk")
    except InputError as exc:
        assert exc.where.startswith("fuzz.vmdk:")
    else:
        assert isinstance(text, str) and not text.startswith("\ufeff")


def _sparse_header(**over):
    f = dict(magic=0x564D444B, version=1, flags=3, capacity=2048, grain=128, doff=1, dsize=20,
             gtes=512, rgd=21, gd=25, overhead=128, unclean=0, nl=b"\n \r\n", compress=0)
    f.update(over)
    return struct.pack("<IIIQQQQIQQQB4sH", *f.values()).ljust(512, b"\0")


@pytest.mark.parametrize("over,match", [
    ({"magic": 0}, "KDMV"), ({"grain": 100}, "power of two"), ({"gtes": 0}, "grain table"),
    ({"capacity": 0}, "capacity"), ({"version": 9}, "version"), ({"compress": 7}, "compression"),
])
def test_sparse_header_sanity(over, match):
    with pytest.raises(InputError, match=match):
        vmdk.parse_sparse_header(_sparse_header(**over), "x.vmdk")


@FUZZ
@given(st.binary(min_size=0, max_size=600))
def test_fuzz_sparse_header(data):
    try:
        h = vmdk.parse_sparse_header(b"KDMV" + data, "fuzz")
    except InputError:
        return
    assert h.capacity > 0 and h.grain_size & (h.grain_size - 1) == 0


# --------------------------------------------------------------------------- partitions

DISK = 64 << 20


def _mbr(entries, sig=True) -> bytearray:
    s = bytearray(512)
    for i, (status, ptype, start, count) in enumerate(entries):
        struct.pack_into("<B3xB3xII", s, 446 + 16 * i, status, ptype, start, count)
    if sig:
        s[510:512] = b"\x55\xaa"
    return s


def _reader(blocks: dict[int, bytes], size=DISK):
    def read(offset, length):
        out = bytearray(length)
        for lba, data in blocks.items():
            a, b = lba * 512, lba * 512 + len(data)
            lo, hi = max(a, offset), min(b, offset + length)
            if lo < hi:
                out[lo - offset:hi - offset] = data[lo - a:hi - a]
        return bytes(out[:max(0, min(length, size - offset))])
    return read


def test_mbr_with_logical_chain():
    mbr = _mbr([(0x80, 0x07, 63, 20000), (0, 0x0F, 22528, 100000)])
    ebr1 = _mbr([(0, 0x83, 2048, 10000), (0, 0x05, 20000, 30000)])
    ebr2 = _mbr([(0, 0x82, 2048, 8000)])
    t = partitions.parse(_reader({0: mbr, 22528: ebr1, 22528 + 20000: ebr2}), DISK)
    assert t.scheme == "mbr" and not t.problems
    got = [(p.number, p.kind, p.start, p.type) for p in t.partitions]
    assert got == [(1, "primary", 63, "0x07"), (2, "extended", 22528, "0x0f"),
                   (5, "logical", 24576, "0x83"), (6, "logical", 22528 + 20000 + 2048, "0x82")]
    assert t.partitions[0].bootable


def test_mbr_logical_loop_and_overlap_are_problems():
    mbr = _mbr([(0, 0x05, 2048, 50000), (0, 0x83, 4096, 1000)])
    ebr = _mbr([(0, 0x83, 2048, 1000), (0, 0x05, 0, 1)])  # next EBR points at itself
    t = partitions.parse(_reader({0: mbr, 2048: ebr}), DISK)
    assert any("loops" in p for p in t.problems)
    assert any("overlap" in p for p in t.problems)


def test_no_signature_means_no_table():
    assert partitions.parse(_reader({0: _mbr([(0, 0x83, 2048, 10)], sig=False)}), DISK) \
        .scheme == "none"


def _gpt(disk_sectors, parts, *, backup=True, backup_lba=None):
    entries = bytearray(128 * 128)
    for i, (tguid, first, last, name) in enumerate(parts):
        struct.pack_into("<16s16sQQQ72s", entries, i * 128, uuid.UUID(tguid).bytes_le,
                         uuid.uuid4().bytes_le, first, last, 0, name.encode("utf-16-le"))
    ecrc = zlib.crc32(entries) & 0xFFFFFFFF
    last = disk_sectors - 1

    def header(current, other, entries_lba):
        h = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0,
                                  current, other, 34, last - 33, uuid.uuid4().bytes_le,
                                  entries_lba, 128, 128, ecrc))
        struct.pack_into("<I", h, 16, zlib.crc32(h) & 0xFFFFFFFF)
        return bytes(h)

    blocks = {0: _mbr([(0, 0xEE, 1, min(disk_sectors - 1, 0xFFFFFFFF))]),
              1: header(1, backup_lba or last, 2), 2: bytes(entries)}
    if backup:
        blocks[last - 32] = bytes(entries)
        blocks[last] = header(last, 1, last - 32)
    return blocks


def test_gpt_with_esp_and_backup():
    n = DISK // 512
    blocks = _gpt(n, [(partitions.ESP_GUID, 2048, 43007, "EFI"),
                      ("0fc63daf-8483-4772-8e79-3d69d8477de4", 43008, n - 2048, "root")])
    t = partitions.parse(_reader(blocks), DISK)
    assert t.scheme == "gpt" and not t.problems
    assert t.gpt.backup_ok
    assert [(p.start, p.type_name, p.name) for p in t.partitions] == \
        [(2048, "EFI system", "EFI"), (43008, "Linux filesystem", "root")]
    assert t.partitions[0].is_esp


def test_gpt_backup_missing_or_misplaced():
    n = DISK // 512
    parts = [(partitions.ESP_GUID, 2048, 4095, "EFI")]
    t = partitions.parse(_reader(_gpt(n, parts, backup=False)), DISK)
    assert t.gpt and not t.gpt.backup_ok and "backup GPT header" in t.gpt.backup_problem
    t = partitions.parse(_reader(_gpt(n, parts, backup_lba=n - 100)), DISK)
    assert not t.gpt.backup_ok and "resized" in t.gpt.backup_problem


def test_gpt_bad_crc_falls_back_and_says_so():
    n = DISK // 512
    blocks = _gpt(n, [(partitions.ESP_GUID, 2048, 4095, "EFI")])
    hdr = bytearray(blocks[1])
    hdr[40] ^= 0xFF
    blocks[1] = bytes(hdr)
    t = partitions.parse(_reader(blocks), DISK)
    assert t.scheme == "mbr" and any("CRC32" in p for p in t.problems)


@FUZZ
@given(st.binary(min_size=0, max_size=2048), st.integers(min_value=0, max_value=1 << 34))
def test_fuzz_partition_table_bytes(head, disk_size):
    data = bytearray(head.ljust(1024, b"\0"))
    data[510:512] = b"\x55\xaa"  # get past the signature most of the time
    t = partitions.parse(_reader({0: bytes(data)}, disk_size), disk_size)
    assert t.scheme in ("none", "mbr", "gpt")
    for p in t.partitions:
        assert p.sectors > 0 and p.start >= 0


@FUZZ
@given(st.lists(st.tuples(st.sampled_from([0, 0x80]), st.sampled_from([0, 5, 7, 0x0F, 0x83, 0xEE]),
                          st.integers(0, 200000), st.integers(0, 200000)), min_size=4, max_size=4),
       st.lists(st.tuples(st.integers(0, 0x0F), st.integers(0, 5000)), max_size=6))
def test_fuzz_mbr_chains(entries, ebr_links):
    blocks = {0: _mbr(entries)}
    for i, (ptype, rel) in enumerate(ebr_links):
        blocks[2048 + i * 7] = _mbr([(0, 0x83, 1, 10), (0, 5 if ptype else 0, rel, 10)])
    t = partitions.parse(_reader(blocks), DISK)
    assert len(t.partitions) <= 4 + partitions.MAX_LOGICAL


# --------------------------------------------------------------------------- signatures


def _sig(offset, data, size=filesystems.PROBE_BYTES):
    b = bytearray(size)
    b[offset:offset + len(data)] = data
    return bytes(b)


@pytest.mark.parametrize("data,name", [
    (_sig(3, b"NTFS    "), "ntfs"),
    (_sig(0, b"XFSB"), "xfs"),
    (_sig(65536 + 64, b"_BHRfS_M"), "btrfs"),
    (_sig(512, b"LABELONE" + b"\0" * 16 + b"LVM2 001"), "lvm2_pv"),
    (_sig(4086, b"SWAPSPACE2"), "swap"),
    (_sig(0, b"LUKS\xba\xbe"), "luks"),
    (_sig(1080, b"\x53\xef"), "ext2"),
    (bytes(_sig(1080, b"\x53\xef")[:1116]) + struct.pack("<II", 4, 0) +
     bytes(filesystems.PROBE_BYTES - 1124), "ext3"),
    (bytes(_sig(1080, b"\x53\xef")[:1116]) + struct.pack("<II", 4, 0x2C0) +
     bytes(filesystems.PROBE_BYTES - 1124), "ext4"),
    (bytes(_sig(510, b"\x55\xaa")[:82]) + b"FAT32   " + bytes(_sig(510, b"\x55\xaa")[90:]),
     "fat32"),
    (bytes(filesystems.PROBE_BYTES), None),
])
def test_signatures(data, name):
    assert filesystems.detect(data) == name


@FUZZ
@given(st.binary(max_size=5000))
def test_fuzz_signatures(data):
    assert filesystems.detect(data) in (None, "ntfs", "exfat", "luks", "xfs", "lvm2_pv",
                                        "btrfs", "ext2", "ext3", "ext4", "swap", "fat32",
                                        "fat16", "fat12")
