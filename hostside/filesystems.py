"""Filesystem signatures at the start of a partition. Pure: bytes in, name out."""

from __future__ import annotations

import struct

# Bytes to read from a partition's start to see every signature below
# (Btrfs keeps its superblock at 64 KiB).
PROBE_BYTES = 65536 + 4096

EXT_COMPAT_JOURNAL = 0x4
EXT4_INCOMPAT = 0x40 | 0x80 | 0x200 | 0x400  # extents, 64bit, flex_bg, ea_inode...


def _at(data: bytes, offset: int, length: int) -> bytes:
    return data[offset:offset + length]


def detect(data: bytes) -> str | None:
    """Name of the filesystem/volume signature in `data`, or None."""
    if _at(data, 3, 8) == b"NTFS    ":
        return "ntfs"
    if _at(data, 3, 8) == b"EXFAT   ":
        return "exfat"
    if _at(data, 0, 6) == b"LUKS\xba\xbe":
        return "luks"
    if _at(data, 0, 4) == b"XFSB":
        return "xfs"
    for sector in range(4):
        if _at(data, sector * 512, 8) == b"LABELONE" and _at(data, sector * 512 + 24, 8) == \
                b"LVM2 001":
            return "lvm2_pv"
    if _at(data, 65536 + 64, 8) == b"_BHRfS_M":
        return "btrfs"
    if _at(data, 1024 + 56, 2) == b"\x53\xef":
        sb = 1024
        compat, incompat = struct.unpack_from("<II", data, sb + 92) if len(data) >= sb + 100 \
            else (0, 0)
        if incompat & EXT4_INCOMPAT:
            return "ext4"
        return "ext3" if compat & EXT_COMPAT_JOURNAL else "ext2"
    if _at(data, 4096 - 10, 10) in (b"SWAPSPACE2", b"SWAP-SPACE"):
        return "swap"
    if _at(data, 510, 2) == b"\x55\xaa":
        if _at(data, 82, 8) == b"FAT32   ":
            return "fat32"
        if _at(data, 54, 8) in (b"FAT16   ", b"FAT     "):
            return "fat16"
        if _at(data, 54, 8) == b"FAT12   ":
            return "fat12"
    return None

