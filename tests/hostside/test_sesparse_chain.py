"""ESXi seSparse snapshot chains (issue 17): the default snapshot format on VMFS6 (ESXi 6.5+),
`<name>-sesparse.vmdk` under a createType "seSparse" descriptor.

qemu-img cannot create seSparse files, so benchmarks/esx_chain.py writes them from the layout
qemu's block/vmdk.c reads (its docstring cites the source). qemu is the independent judge of
that writer here: it must read the chain as base + the snapshot's writes and refuse a header
its strict checks reject. Then the real product converts the chain, verified, sources
untouched."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from hostside_support import host_cli

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import esx_chain  # noqa: E402

pytestmark = pytest.mark.integration

MiB = 1 << 20
VIRTUAL = 64 * MiB
K4 = 4096
# What the base (the -flat.vmdk) holds before the snapshot
BASE = [(0, MiB), (20 * MiB, MiB), (33 * MiB, 2 * MiB)]
# The snapshot's writes, stored in this order: the first one is over 4096 grains, so the
# ones stored after it have grain numbers >= 4096 and use both parts of the entry's
# split grain number; one crosses a 16 MiB grain-table boundary; 48-64 MiB has no grain
# table at all (its directory entry is 0: the parent's data).
RUNS = [(2 * MiB, 16 * MiB + 8 * K4), (32 * MiB - 8192, 16384), (12288, 8192),
        (40 * MiB, 65536)]
# Zero grains over base data: they read as zeros, not as the parent
ZEROED = [(20 * MiB + 65536, 65536), (34 * MiB, K4)]


@pytest.fixture(scope="module")
def se_chain(tmp_path_factory):
    """(top descriptor, raw reference: base + zeroed + runs)."""
    root = tmp_path_factory.mktemp("sesparse")
    rng = random.Random(17)
    flat = root / "base-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(VIRTUAL)
        for off, length in BASE:
            f.seek(off)
            f.write(rng.randbytes(length))
    runs = [(off, rng.randbytes(length)) for off, length in RUNS]
    top = esx_chain.build_se_chain(root, flat, VIRTUAL, runs, ZEROED)
    return top, esx_chain.write_reference(flat, root.parent / f"{root.name}-ref.raw", runs, ZEROED)


def qemu_img(*args) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-img", *map(str, args)], capture_output=True, text=True)


def digests(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir())}


def test_qemu_reads_the_chain_as_base_plus_the_snapshot_s_writes(se_chain):
    top, ref = se_chain
    info = qemu_img("info", "--backing-chain", top)
    assert info.returncode == 0, info.stderr
    assert "create type: seSparse" in info.stdout and "format: SESPARSE" in info.stdout
    assert "cluster size: 4096" in info.stdout and "create type: vmfs\n" in info.stdout
    same = qemu_img("compare", "-f", "raw", "-F", "vmdk", ref, top)
    assert same.returncode == 0, same.stdout + same.stderr
    base = top.parent / "base-flat.vmdk"
    assert qemu_img("compare", "-f", "raw", "-F", "vmdk", base, top).returncode == 1


def test_every_kind_of_grain_entry_is_read_as_such(se_chain):
    """qemu-img map of the top: depth 0 = this layer (an allocated grain, or a zero grain:
    zero and no data), depth 1 = the parent (unallocated entry, or no grain table)."""
    top, _ = se_chain
    res = qemu_img("map", "--output=json", top)
    assert res.returncode == 0, res.stderr
    entries = json.loads(res.stdout)

    def at(offset):
        return next(e for e in entries if e["start"] <= offset < e["start"] + e["length"])
    assert at(12288)["depth"] == 0 and at(12288)["data"]                 # allocated
    assert at(RUNS[0][0] + RUNS[0][1] - 1)["depth"] == 0                  # grain number >= 4096
    zero = at(20 * MiB + 65536)
    assert zero["depth"] == 0 and zero["zero"] and not zero["data"]       # zero grain
    assert at(K4)["depth"] == 1                                           # unallocated entry
    assert at(50 * MiB)["depth"] == 1                                     # no grain table


@pytest.mark.parametrize("offset, value, refusal", [
    (0, 0xCAFEBABF, "Bad const header magic"),
    (8, 0x0000000100000001, "Unsupported version"),
    (24, 16, "Unsupported grain size: 16"),
    (32, 128, "Unsupported grain table size: 128"),
    (512, 0xCAFECAFF, "Bad volatile header magic"),
    (512 + 24, 1, "Replaying journal not supported"),
])
def test_qemu_refuses_a_corrupted_header(se_chain, tmp_path, offset, value, refusal):
    """qemu's checks are strict (check_se_sparse_const_header / _volatile_header), so its
    reading the chain above is evidence that the writer's headers are right."""
    top, _ = se_chain
    copy = tmp_path / "chain"
    shutil.copytree(top.parent, copy)
    extent = copy / "snap-000001-sesparse.vmdk"
    with open(extent, "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value))
    res = qemu_img("info", copy / top.name)
    assert res.returncode == 1 and refusal in res.stderr, res.stderr


@pytest.mark.parametrize("to", ["qcow2", "raw"])
def test_guestprep_host_converts_the_chain_verified_and_leaves_it_untouched(se_chain, tmp_path,
                                                                            to):
    top, ref = se_chain
    before = digests(top.parent)
    dest = tmp_path / f"web.{to}"
    r = host_cli("convert", top, "--chain", "--to", to, "--dest", dest, "--json",
                 "--progress", "none")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["source"]["vmdk"]["create_type"] == "seSparse"
    assert [Path(p).name for p in m["source"]["chain"]] == ["snap-000001.vmdk", "base.vmdk"]
    ver = m["verification"]
    assert ver["performed"] and ver["ok"], ver
    assert ver["compared_bytes"] > 0
    same = qemu_img("compare", "-f", "raw", "-F", to, ref, dest)
    assert same.returncode == 0, same.stdout + same.stderr
    assert digests(top.parent) == before


@pytest.mark.parametrize("offset, value, says", [
    (24, 9, "seSparse grain size 9 sectors: only 8 (4 KiB) is read"),
    (512 + 24, 1, "seSparse journal was not replayed"),
    (16, VIRTUAL // 512 * 2, "holds 262144 sectors but the descriptor says 131072"),
    (8 * 16, 1 << 30, "grain directory lies past the end of the file"),
])
def test_a_damaged_header_is_refused_naming_the_extent_and_the_field(se_chain, tmp_path,
                                                                     offset, value, says):
    """Checked by us before qemu opens anything: the message names the -sesparse.vmdk and
    what is wrong in it, not a temporary descriptor qemu was handed."""
    top, _ = se_chain
    copy = tmp_path / "chain"
    shutil.copytree(top.parent, copy)
    with open(copy / "snap-000001-sesparse.vmdk", "r+b") as f:
        f.seek(offset)
        f.write(struct.pack("<Q", value))
    r = host_cli("convert", copy / top.name, "--chain", "--to", "raw",
                 "--dest", tmp_path / "out.raw", "--progress", "none")
    assert r.returncode == 2, r.stderr
    assert "snap-000001-sesparse.vmdk" in r.stderr and says in r.stderr, r.stderr
    assert "json:" not in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out.raw").exists()


def test_any_header_value_is_refused_cleanly_or_read(se_chain, tmp_path):
    """Every const/volatile header field set to values a damaged file could hold: vmdk.load
    accepts the file or raises InputError (a clear message), never anything else."""
    from hostside import vmdk
    from hostside.errors import InputError
    top, _ = se_chain
    copy = tmp_path / "chain"
    shutil.copytree(top.parent, copy)
    extent = copy / "snap-000001-sesparse.vmdk"
    good = extent.read_bytes()
    rng = random.Random(5)
    for field in [*range(26), *range(64, 68)]:
        for value in (0, 1, 2 ** 63, 2 ** 64 - 1, rng.getrandbits(64)):
            raw = bytearray(good)
            struct.pack_into("<Q", raw, field * 8, value)
            extent.write_bytes(raw)
            try:
                vmdk.load(str(copy / top.name))
            except InputError:
                pass


# --------------------------------------------------------------------------- the raw view

def _data_ranges_by_qemu(top: Path) -> list[list[int]]:
    """Where qemu's vmdk driver reads data through the chain (map: data and not zero),
    adjacent entries merged."""
    res = qemu_img("map", "--output=json", top)
    assert res.returncode == 0, res.stderr
    out: list[list[int]] = []
    for e in json.loads(res.stdout):
        if e["data"] and not e["zero"]:
            if out and out[-1][0] + out[-1][1] == e["start"]:
                out[-1][1] += e["length"]
            else:
                out.append([e["start"], e["length"]])
    return out


def _view_ranges(top: Path) -> list[list[int]]:
    from hostside import extents, vmdk
    out: list[list[int]] = []
    for r in extents.vmdk_view(vmdk.load(str(top))):
        if r.is_data:
            if out and out[-1][0] + out[-1][1] == r.start:
                out[-1][1] += r.length
            else:
                out.append([r.start, r.length])
    return out


def test_the_chain_is_copied_through_a_raw_view_placed_where_qemu_reads_data(se_chain,
                                                                           tmp_path):
    """qemu-img convert reads raw windows of the -sesparse.vmdk and the -flat.vmdk (its
    holes as zeros), never the vmdk driver's grain-by-grain walk; the view's data is where
    qemu's own reading of the chain has data."""
    top, ref = se_chain
    assert _view_ranges(top) == _data_ranges_by_qemu(top)
    dest = tmp_path / "web.qcow2"
    r = host_cli("convert", top, "--chain", "--to", "qcow2", "--dest", dest, "--json",
                 "--progress", "none")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["source_view"] and m["source_view"]["data_runs"] >= len(RUNS)
    assert not any('"driver":"vmdk"' in a for a in m["command"])
    assert m["verification"]["source_map"] == "vmdk grain tables (the view the copy read)"
    assert m["measure"]["method"] == "vmdk grain tables"
    assert qemu_img("compare", "-f", "raw", "-F", "qcow2", ref, dest).returncode == 0


def test_two_sesparse_snapshots_over_a_flat_base(tmp_path):
    """snap-2 over snap-1 over the base: each layer's zero grains hide what is below,
    unallocated grains read through; qemu reads the chain as the reference, and so must we."""
    rng = random.Random(23)
    flat = tmp_path / "base-flat.vmdk"
    flat.write_bytes(rng.randbytes(8 * MiB))
    esx_chain.write_descriptor(tmp_path / "base.vmdk", "vmfs",
                               f'RW {8 * MiB // 512} VMFS "base-flat.vmdk"', cid="00000001")
    layers = [([(MiB, rng.randbytes(MiB)), (5 * MiB, rng.randbytes(8192))], [(3 * MiB, MiB)]),
              ([(MiB + 4096, rng.randbytes(4096))], [(MiB + 65536, 65536), (5 * MiB, 4096)])]
    parent = "base.vmdk"
    for n, (runs, zeroed) in enumerate(layers, 1):
        esx_chain.write_sesparse(tmp_path / f"snap-{n}-sesparse.vmdk", 8 * MiB, runs, zeroed)
        top = esx_chain.write_descriptor(
            tmp_path / f"snap-{n}.vmdk", "seSparse",
            f'RW {8 * MiB // 512} SESPARSE "snap-{n}-sesparse.vmdk"', cid=f"0000000{n + 1}",
            parent_cid=f"0000000{n}", parent_hint=parent)
        parent = top.name
    assert _view_ranges(top) == _data_ranges_by_qemu(top)
    dest = tmp_path / "out.raw"
    r = host_cli("convert", top, "--chain", "--to", "raw", "--dest", dest, "--json",
                 "--progress", "none")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["source_view"]
    same = qemu_img("compare", "-F", "raw", top, dest)      # qemu's reading is the reference
    assert same.returncode == 0, same.stdout + same.stderr


def test_a_fragmented_snapshot_is_left_to_qemu(se_chain):
    from hostside import extents
    top, _ = se_chain
    extent = str(top.parent / "snap-000001-sesparse.vmdk")
    assert extents.sesparse_runs(extent, VIRTUAL) is not None
    assert extents.sesparse_runs(extent, VIRTUAL, limit=2) is None


@pytest.mark.parametrize("entry, says", [
    (0x7000000000000000, "grain table 0 entry 3 (0x7000000000000000) is of no known kind"),
    (0x3000000000000000 | 10 ** 6, "grain table 0 entry 3 points past the end of the file"),
])
def test_a_damaged_grain_table_entry_is_refused_before_the_copy(se_chain, tmp_path, entry,
                                                                says):
    """qemu would stop mid-copy with an I/O error (or read zeros past the end)."""
    top, _ = se_chain
    copy = tmp_path / "chain"
    shutil.copytree(top.parent, copy)
    with open(copy / "snap-000001-sesparse.vmdk", "r+b") as f:
        gt_offset = struct.unpack_from("<Q", f.read(512), 18 * 8)[0]
        f.seek(gt_offset * 512 + 3 * 8)
        f.write(struct.pack("<Q", entry))
    r = host_cli("convert", copy / top.name, "--chain", "--to", "raw",
                 "--dest", tmp_path / "out.raw", "--progress", "none")
    assert r.returncode == 2, r.stderr
    assert "snap-000001-sesparse.vmdk" in r.stderr and says in r.stderr, r.stderr
    assert not (tmp_path / "out.raw").exists()


def test_two_directory_entries_naming_one_table_are_refused(tmp_path):
    """ESXi gives every 16 MiB of the disk its own table; a damaged directory that names one
    table many times would make the work grow with the virtual size, not the file."""
    from hostside import extents
    from hostside.errors import InputError
    extent = tmp_path / "x-sesparse.vmdk"
    esx_chain.write_sesparse(extent, 64 * MiB, [(0, bytes(K4))], [(20 * MiB, K4)])
    with open(extent, "r+b") as f:
        gd_offset = struct.unpack_from("<Q", f.read(512), 16 * 8)[0]
        f.seek(gd_offset * 512)
        first, second = struct.unpack("<2Q", f.read(16))
        assert first and second and first != second
        f.seek(gd_offset * 512 + 8)
        f.write(struct.pack("<Q", first))
    with pytest.raises(InputError, match="grain directory entry 1 names a grain table"):
        extents.sesparse_runs(str(extent), 64 * MiB)
