"""Build an ESXi-style vmfsSparse snapshot chain for the convert benchmark: a `vmfs`
descriptor over a flat extent (the base disk on a VMFS datastore) and a `vmfsSparse`
descriptor over a COWD redo log (`<name>-delta.vmdk`) with the guest's writes since the
snapshot. qemu-img cannot create COWD files, so this writes one.

The COWD layout is the one qemu reads (qemu/qemu block/vmdk.c, vmdk_open_vmfs_sparse and
vmdk_add_extent): the big-endian magic 'COWD', then little-endian u32 fields version, flags,
disk_sectors, granularity (grain size in sectors), l1dir_offset (sectors), l1dir_size
(entries), file_sectors, cylinders, heads, sectors_per_track; 4096 entries per grain table
(L2); every table entry a u32 sector offset, 0 meaning "not in this layer" (read the parent).
ESXi redo logs use 512-byte grains (granularity 1) and a 4-sector header, as here.

seSparse (the default snapshot format on VMFS6, ESXi 6.5+: `<name>-sesparse.vmdk`, createType
"seSparse", extent type SESPARSE) is not documented by VMware; the layout here is the one qemu
reads and checks strictly (qemu/qemu block/vmdk.c, VMDKSESparseConstHeader,
VMDKSESparseVolatileHeader, check_se_sparse_const_header, check_se_sparse_volatile_header,
vmdk_open_se_sparse and the seSparse branch of get_cluster_offset; unchanged since qemu 4.1,
read at qemu commit 004915a9, proven against this machine's qemu-img 7.2 by the tests):
- sector 0, the const header: 26 little-endian u64 then 304 zero bytes: magic 0xcafebabe,
  version 0x0000000200000001, capacity (sectors), grain_size 8 (sectors: 4 KiB grains, the
  only size qemu accepts), grain_table_size 64 (sectors: 4096 u64 entries, 16 MiB of disk per
  table), flags 0, reserved1-4 0, then (offset, size) in sectors of the volatile header,
  journal header, journal, grain directory, grain tables, free bitmap, backmap and grains;
- the volatile header: magic 0xcafecafe, free_gt_number, next_txn_seq_number,
  replay_journal (must be 0: a dirty journal is refused), 480 zero bytes;
- grain directory entry (u64): 0 = no table (the parent's data), else 0x10000000 in the top
  32 bits and the table's index in the low 32: the table is at
  grain_tables_offset + index * 64 sectors;
- grain table entry (u64), by its top nibble: 0x0 (the whole entry 0) unallocated, read the
  parent; 0x1 SCSI-unmapped and 0x2 zero grain, both read as zeros; 0x3 allocated, grain
  number ((e & 0x0fff000000000000) >> 48) | ((e & 0x0000ffffffffffff) << 12), its data at
  grains_offset + number * 8 sectors. Anything else is an I/O error.
qemu reads neither the journal nor the free bitmap nor the backmap; they are left empty.
"""

from __future__ import annotations

import array
import os
import struct
import sys
from pathlib import Path

SECTOR = 512
GT_ENTRIES = 4096           # qemu: l2_size 4096 for VMDK3
HEADER_SECTORS = 4


def write_descriptor(path: Path, create_type: str, extent: str, *, cid: str,
                     parent_cid: str = "ffffffff", parent_hint: str | None = None) -> Path:
    hint = f'parentFileNameHint="{parent_hint}"\n' if parent_hint else ""
    path.write_text(
        "# Disk DescriptorFile\nversion=1\nencoding=\"UTF-8\"\n"
        f"CID={cid}\nparentCID={parent_cid}\ncreateType=\"{create_type}\"\n{hint}\n"
        f"# Extent description\n{extent}\n\n"
        "# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
        "ddb.virtualHWVersion = \"13\"\n")
    return path


def write_cowd(path: Path, virtual: int, runs: list[tuple[int, bytes]],
               granularity: int = 1) -> None:
    """A COWD redo log of `virtual` bytes holding `runs` (offset, data), both grain-aligned."""
    grain = granularity * SECTOR
    sectors = virtual // SECTOR
    l1_entries = -(-sectors // (GT_ENTRIES * granularity))
    l1_sectors = -(-(l1_entries * 4) // SECTOR)
    gt_sectors = GT_ENTRIES * 4 // SECTOR
    grains_per_table = GT_ENTRIES
    tables_needed = sorted({t for off, data in runs
                            for t in range(off // grain // grains_per_table,
                                           (off + len(data) - 1) // grain // grains_per_table + 1)})
    l1 = array.array("I", [0] * l1_entries)
    next_sector = HEADER_SECTORS + l1_sectors
    tables: dict[int, array.array] = {}
    for t in tables_needed:
        l1[t] = next_sector
        tables[t] = array.array("I", [0] * GT_ENTRIES)
        next_sector += gt_sectors
    data_start = next_sector
    for off, data in runs:
        if off % grain or len(data) % grain:
            raise ValueError("runs must be grain-aligned")
        for i in range(len(data) // grain):
            g = off // grain + i
            tables[g // grains_per_table][g % grains_per_table] = next_sector
            next_sector += granularity
    header = b"COWD" + struct.pack("<10I", 1, 3, sectors, granularity, HEADER_SECTORS,
                                   l1_entries, next_sector, 0, 0, 0)
    if struct.pack("<I", 1) != array.array("I", [1]).tobytes():
        raise RuntimeError("COWD tables are little-endian; this writer needs a little-endian host")
    with open(path, "wb") as f:
        f.write(header.ljust(HEADER_SECTORS * SECTOR, b"\0"))
        f.write(l1.tobytes().ljust(l1_sectors * SECTOR, b"\0"))
        for t in tables_needed:
            f.write(tables[t].tobytes())
        assert f.tell() == data_start * SECTOR
        for _, data in runs:
            f.write(data)
        f.flush()
        os.fsync(f.fileno())


def build_chain(directory: Path, base_flat: Path, virtual: int,
                runs: list[tuple[int, bytes]]) -> Path:
    """base.vmdk (vmfs, extent `base_flat`) <- snap-000001.vmdk (vmfsSparse, COWD delta).
    Returns the top descriptor: what a VM's .vmx names while the snapshot exists."""
    sectors = virtual // SECTOR
    write_descriptor(directory / "base.vmdk", "vmfs",
                     f'RW {sectors} VMFS "{base_flat.name}"', cid="5a1e0001")
    delta = directory / "snap-000001-delta.vmdk"
    write_cowd(delta, virtual, runs)
    return write_descriptor(directory / "snap-000001.vmdk", "vmfsSparse",
                            f'RW {sectors} VMFSSPARSE "{delta.name}"', cid="5a1e0002",
                            parent_cid="5a1e0001", parent_hint="base.vmdk")


# ---------------------------------------------------------------------------- seSparse

SE_GRAIN = 4096                     # qemu: grain_size must be 8 sectors
SE_GT_ENTRIES = 4096                # qemu: grain_table_size must be 64 sectors of u64
SE_GT_BYTES = SE_GT_ENTRIES * 8
SE_CONST_MAGIC = 0xCAFEBABE
SE_VOLATILE_MAGIC = 0xCAFECAFE
SE_VERSION = 0x0000000200000001
SE_GDE_ALLOCATED = 0x1000000000000000
SE_GTE_ZERO = 0x2000000000000000
SE_GTE_ALLOCATED = 0x3000000000000000


def se_grain_entry(number: int) -> int:
    """The grain table entry of the grain stored `number`-th in the grains area (the
    inverse of get_cluster_offset's bit shuffle: low 12 bits of the number in bits 48-59)."""
    return SE_GTE_ALLOCATED | ((number & 0xFFF) << 48) | (number >> 12)


def write_sesparse(path: Path, virtual: int, runs: list[tuple[int, bytes]],
                   zeroed: list[tuple[int, int]] = ()) -> None:
    """A seSparse extent of `virtual` bytes holding `runs` (offset, data), stored in the
    order given (as ESXi stores grains in write order), and `zeroed` (offset, length)
    ranges as zero-grain entries (what a guest's discard or a zeroing write leaves on
    ESXi). Everything else is unallocated: it reads the parent. All 4 KiB-aligned."""
    if virtual % SE_GRAIN:
        raise ValueError("the virtual size must be a multiple of 4 KiB grains")
    entries: dict[int, int] = {}
    number = 0
    for off, data in runs:
        if off % SE_GRAIN or len(data) % SE_GRAIN or off + len(data) > virtual:
            raise ValueError("runs must be grain-aligned and inside the disk")
        for g in range(off // SE_GRAIN, (off + len(data)) // SE_GRAIN):
            entries[g] = se_grain_entry(number)
            number += 1
    for off, length in zeroed:
        if off % SE_GRAIN or length % SE_GRAIN or off + length > virtual:
            raise ValueError("zeroed ranges must be grain-aligned and inside the disk")
        for g in range(off // SE_GRAIN, (off + length) // SE_GRAIN):
            entries.setdefault(g, SE_GTE_ZERO)     # a grain holding data stays data
    gd_entries = -(-virtual // (SE_GRAIN * SE_GT_ENTRIES))
    gd_sectors = -(-gd_entries * 8 // SECTOR)
    used_tables = sorted({g // SE_GT_ENTRIES for g in entries})
    gd = array.array("Q", [0] * (gd_sectors * SECTOR // 8))
    tables: dict[int, array.array] = {}
    for index, t in enumerate(used_tables):
        gd[t] = SE_GDE_ALLOCATED | index
        tables[t] = array.array("Q", [0] * SE_GT_ENTRIES)
    for g, entry in entries.items():
        tables[g // SE_GT_ENTRIES][g % SE_GT_ENTRIES] = entry
    # Layout (sectors): const header 0, volatile header 1, journal header 2, journal 3-10,
    # grain directory, grain tables, free bitmap and backmap (empty), grains 4 KiB-aligned.
    gd_offset = 11
    gt_offset = gd_offset + gd_sectors
    gt_sectors = max(1, len(used_tables)) * SE_GT_BYTES // SECTOR
    grains_offset = -(-(gt_offset + gt_sectors) // 8) * 8
    grains_sectors = number * SE_GRAIN // SECTOR
    const = struct.pack(
        "<26Q", SE_CONST_MAGIC, SE_VERSION, virtual // SECTOR, SE_GRAIN // SECTOR,
        SE_GT_BYTES // SECTOR, 0, 0, 0, 0, 0,
        1, 1,                           # volatile header
        2, 1, 3, 8,                     # journal header, journal
        gd_offset, gd_sectors, gt_offset, gt_sectors,
        grains_offset, 0, grains_offset, 0,        # free bitmap, backmap: empty
        grains_offset, grains_sectors)
    volatile = struct.pack("<4Q", SE_VOLATILE_MAGIC, len(used_tables), 1, 0)
    if sys.byteorder != "little":
        raise RuntimeError("seSparse tables are little-endian; this writer needs a "
                           "little-endian host")
    with open(path, "wb") as f:
        f.write(const.ljust(SECTOR, b"\0"))
        f.write(volatile.ljust(SECTOR, b"\0"))
        f.seek(gd_offset * SECTOR)
        f.write(gd.tobytes())
        for t in used_tables:
            f.write(tables[t].tobytes())
        f.seek(grains_offset * SECTOR)
        for _, data in runs:
            f.write(data)
        f.truncate((grains_offset + grains_sectors) * SECTOR)
        f.flush()
        os.fsync(f.fileno())


def build_se_chain(directory: Path, base_flat: Path, virtual: int,
                   runs: list[tuple[int, bytes]],
                   zeroed: list[tuple[int, int]] = ()) -> Path:
    """base.vmdk (vmfs, extent `base_flat`) <- snap-000001.vmdk (seSparse). Returns the top
    descriptor: what a VM's .vmx names while the snapshot exists."""
    sectors = virtual // SECTOR
    write_descriptor(directory / "base.vmdk", "vmfs",
                     f'RW {sectors} VMFS "{base_flat.name}"', cid="5e1e0001")
    extent = directory / "snap-000001-sesparse.vmdk"
    write_sesparse(extent, virtual, runs, zeroed)
    return write_descriptor(directory / "snap-000001.vmdk", "seSparse",
                            f'RW {sectors} SESPARSE "{extent.name}"', cid="5e1e0002",
                            parent_cid="5e1e0001", parent_hint="base.vmdk")


def write_reference(flat: Path, ref: Path, runs: list[tuple[int, bytes]],
                    zeroed: list[tuple[int, int]] = ()) -> Path:
    """The raw bytes a chain over `flat` must read as: the base (its holes kept), the zeroed ranges,
    then the runs."""
    import subprocess

    subprocess.run(["cp", "--sparse=always", str(flat), str(ref)], check=True)
    with open(ref, "r+b") as f:
        for off, length in zeroed:
            f.seek(off)
            f.write(bytes(length))
        for off, data in runs:
            f.seek(off)
            f.write(data)
    return ref
