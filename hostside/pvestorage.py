"""Proxmox storage ids -> where guestprep-host writes a volume.

A hand-off names target volumes the way Proxmox does (``local-zfs:vm-120-disk-0``,
``local:120/vm-120-disk-0.qcow2``); the node's ``/etc/pve/storage.cfg`` says what a
storage id is (a directory, a ZFS pool, an LVM thin pool). Only the storage types
guestprep-host can create volumes on are accepted; anything else is refused by name.
"""

from __future__ import annotations

import os
import re
from hostside.record import dataclass, field

from hostside.errors import InputError, TargetRefused

FILE_TYPES = ("dir", "nfs", "cifs", "cephfs")   # volumes are files under <path>/images/
_HEADER_RE = re.compile(r"^([a-z][a-z0-9]*):\s*([A-Za-z][A-Za-z0-9._-]*)\s*$")
_STORAGE_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]*$")
_FILE_VOLNAME_RE = re.compile(r"^(\d+)/(vm-(\d+)-[A-Za-z0-9_.+-]+)\.(raw|qcow2)$")
_BLOCK_VOLNAME_RE = re.compile(r"^vm-(\d+)-[A-Za-z0-9_+-][A-Za-z0-9_.+-]*$")


@dataclass
class Storage:
    id: str
    type: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def is_file(self) -> bool:
        return self.type in FILE_TYPES

    def base_path(self) -> str:
        # cephfs without a path option is mounted by Proxmox at /mnt/pve/<id>
        return self.options.get("path") or f"/mnt/pve/{self.id}"


def parse_storage_cfg(text: str, where: str) -> dict[str, Storage]:
    """``type: id`` headers, each followed by indented ``key value`` lines."""
    out: dict[str, Storage] = {}
    current: Storage | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if not line[0].isspace():
            m = _HEADER_RE.match(line)
            if not m:
                raise InputError(f"line {n}: expected 'type: storage-id', got {line!r}", where)
            current = Storage(m.group(2), m.group(1))
            if current.id in out:
                raise InputError(f"line {n}: storage {current.id!r} is defined twice", where)
            out[current.id] = current
            continue
        if current is None:
            raise InputError(f"line {n}: option before any storage header", where)
        key, _, value = line.strip().partition(" ")
        current.options[key] = value.strip() or "1"
    return out


def load_storage_cfg(path: str) -> dict[str, Storage]:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise InputError("no such file (not a Proxmox VE node? pass --storage-cfg, or --dest "
                         "with one disk)", path) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path) from None
    return parse_storage_cfg(text, path)


@dataclass
class Placement:
    """One target volume: its Proxmox volid and what `make_target` needs."""

    volid: str
    kind: str        # qcow2 | raw | zvol | lvmthin (hostside target kinds)
    dest: str        # file path, pool/dataset/name or vg/thinpool/name
    fmt: str         # qcow2 | raw
    storage_type: str
    volblocksize: str | None = None   # zvols: the storage's blocksize option
    makes_dir: str | None = None      # file storages: images/<vmid>/, created if missing


def split_volid(volid: str, where: str) -> tuple[str, str]:
    sid, sep, volname = volid.partition(":")
    if not sep or not _STORAGE_ID_RE.match(sid) or not volname:
        raise InputError(f"{volid!r} is not a Proxmox volume id (storage:volume)", where)
    return sid, volname


def storage_of(storages: dict[str, Storage], sid: str, where: str, cfg_path: str) -> Storage:
    st = storages.get(sid)
    if st is None:
        raise InputError(f"storage {sid!r} is not defined in {cfg_path} "
                         f"(has: {', '.join(sorted(storages)) or 'none'})", where)
    if st.options.get("disable") not in (None, "0"):
        raise TargetRefused(f"storage {sid!r} is disabled in {cfg_path}", where)
    content = st.options.get("content")
    if content is not None and "images" not in content.split(","):
        raise TargetRefused(f"storage {sid!r} does not hold VM disk images (content {content})",
                            where)
    if not (st.is_file or st.type in ("zfspool", "lvmthin")):
        raise TargetRefused(f"storage {sid!r} is of type {st.type!r}: guestprep-host writes "
                            f"to {', '.join(FILE_TYPES)}, zfspool and lvmthin storages only "
                            "(give --dest for this disk)", where)
    return st


def volname_for(st: Storage, vmid: int, number: int, fmt: str) -> str:
    """Proxmox's own naming: vm-<vmid>-disk-<n>, files under <vmid>/ with an extension."""
    name = f"vm-{vmid}-disk-{number}"
    return f"{vmid}/{name}.{fmt}" if st.is_file else name


def place(st: Storage, volname: str, fmt: str | None, where: str) -> Placement:
    """Where volume `volname` of storage `st` lives; `fmt` overrides a file volume's format."""
    volid = f"{st.id}:{volname}"
    if st.is_file:
        m = _FILE_VOLNAME_RE.match(volname)
        if not m or m.group(1) != m.group(3):
            raise InputError(f"{volid!r}: a volume on {st.type} storage must be named "
                             "<vmid>/vm-<vmid>-<name>.raw|qcow2", where)
        vmid, stem, ext = m.group(1), m.group(2), m.group(4)
        fmt = fmt or ext
        if fmt != ext:
            volname, volid = f"{vmid}/{stem}.{fmt}", f"{st.id}:{vmid}/{stem}.{fmt}"
        directory = os.path.join(st.base_path(), "images", vmid)
        return Placement(volid, fmt, os.path.join(directory, f"{stem}.{fmt}"), fmt, st.type,
                         makes_dir=directory)
    if not _BLOCK_VOLNAME_RE.match(volname):
        raise InputError(f"{volid!r}: a volume on {st.type} storage must be named "
                         "vm-<vmid>-<name>", where)
    if fmt == "qcow2":
        why = "ZFS (never qcow2 on ZFS: double copy-on-write)" if st.type == "zfspool" \
            else "LVM-thin (block volumes hold raw data)"
        raise TargetRefused(f"storage {st.id!r} is {why}: the format must be raw", where)
    if st.type == "zfspool":
        pool = st.options.get("pool")
        if not pool:
            raise InputError(f"zfspool storage {st.id!r} has no pool option", where)
        return Placement(volid, "zvol", f"{pool}/{volname}", "raw", st.type,
                         volblocksize=st.options.get("blocksize"))
    vg, thinpool = st.options.get("vgname"), st.options.get("thinpool")
    if not vg or not thinpool:
        raise InputError(f"lvmthin storage {st.id!r} needs vgname and thinpool options", where)
    return Placement(volid, "lvmthin", f"{vg}/{thinpool}/{volname}", "raw", st.type)
