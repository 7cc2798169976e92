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
"""

from __future__ import annotations

import array
import os
import struct
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
