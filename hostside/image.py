"""Inspect a source image: what it is, how qemu must open it, how big it is.

Combines our own VMDK parsing (vmdk.py) with `qemu-img info`. The result,
`Source`, is what audit and convert consume.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field

from hostside import qemu, remote, vmdk
from hostside.errors import InputError, SourceUnreachable
from hostside.qemu import ImageSpec

QCOW2_MAGIC = b"QFI\xfb"
FORMATS = ("vmdk", "qcow2", "raw")


@dataclass
class Segment:
    """One piece of the disk, at `offset` in the virtual disk (flat extents)."""

    spec: ImageSpec
    offset: int
    size: int


@dataclass
class Source:
    spec: ImageSpec
    format: str
    virtual_size: int
    actual_size: int | None
    vmdk: vmdk.VmdkImage | None = None
    chain: list[str] = field(default_factory=list)   # top first, for delta chains
    qemu_info: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    is_block_device: bool = False
    local_files: list[str] = field(default_factory=list)  # every file qemu will read
    # Streams to concatenate for a conversion. Flat VMDK extents are read as raw
    # windows of their files: qemu's vmdk driver reports flat extents as fully
    # allocated, so it would read every hole; the raw driver sees them.
    segments: list[Segment] = field(default_factory=list)
    # Allocated bytes counted from VMDK grain tables (None: ask qemu-img measure).
    # qemu's own measure walks every grain of the virtual size; this does not.
    data_estimate: int | None = None

    def __post_init__(self) -> None:
        if not self.segments:
            self.segments = [Segment(self.spec, 0, self.virtual_size)]

    def to_dict(self) -> dict:
        return {
            "source": self.spec.label,
            "format": self.format,
            "virtual_size": self.virtual_size,
            "actual_size": self.actual_size,
            "remote": self.spec.is_remote,
            "block_device": self.is_block_device,
            "chain": self.chain,
            "vmdk": self.vmdk.to_dict() if self.vmdk else None,
            "notes": self.notes,
        }


@dataclass
class SourceOptions:
    format: str | None = None        # force a format instead of sniffing
    chain: bool = False              # accept a snapshot chain, read through its top
    cookie: str | None = None        # HTTPS session cookie value (never logged)
    insecure: bool = False           # HTTPS without certificate verification


def _sniff(path: str) -> str:
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        raise InputError("file is empty", path)
    if head.startswith(vmdk.SPARSE_MAGIC) or vmdk.is_text_descriptor(head):
        return "vmdk"
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    if head.startswith(b"COWD"):
        raise InputError("ESX 2/3 COWD sparse delta: consolidate the snapshot on ESXi first",
                         path)
    return "raw"


def _check_readable(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except PermissionError:
        raise InputError("permission denied", path) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a directory, not a disk image", path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise InputError("neither a regular file nor a block device", path)
    try:
        with open(path, "rb") as f:
            f.read(1)
    except PermissionError:
        raise InputError("not readable (permission denied)", path) from None
    except OSError as exc:
        raise InputError(f"not readable: {exc.strerror}", path) from None
    return st


def inspect(src: str, opts: SourceOptions, secrets: remote.SecretDir) -> Source:
    if opts.format is not None and opts.format not in FORMATS:
        raise InputError(f"unknown format {opts.format!r} (expected one of "
                         f"{', '.join(FORMATS)})", "--format")
    if remote.is_url(src):
        spec = remote.https_spec(src, opts.format, cookie=opts.cookie, insecure=opts.insecure)
        try:
            data = qemu.info(spec)
        except InputError as exc:
            raise SourceUnreachable(exc.message + _remote_hint(exc.message), spec.label) \
                from None
        return Source(spec, spec.format, int(data["virtual-size"]), data.get("actual-size"),
                      qemu_info=data, notes=["streamed through qemu's curl driver"])

    path = os.path.abspath(src)
    st = _check_readable(path)
    if st.st_size == 0 and stat.S_ISREG(st.st_mode):
        raise InputError("file is empty", path)
    fmt = opts.format or _sniff(path)
    is_block = stat.S_ISBLK(st.st_mode)
    if fmt == "vmdk":
        return _inspect_vmdk(path, opts, secrets)
    spec = qemu.local_spec(path, fmt)
    data = qemu.info(spec, backing_chain=False)
    if fmt == "qcow2":
        _check_qcow2_references(path, data, opts)
    if data.get("format") != fmt:
        raise InputError(f"qemu reads this as {data.get('format')!r}, not {fmt!r}", path)
    return Source(spec, fmt, int(data["virtual-size"]), data.get("actual-size"),
                  qemu_info=data, is_block_device=is_block, local_files=[path])


def _check_qcow2_references(path: str, data: dict, opts: SourceOptions) -> None:
    """A qcow2 names other files qemu will read (backing file, external data file):
    like VMDK extents they must sit beside it, or a crafted image reads anything."""
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise InputError("qcow2 with an external data file is not accepted as a source", path)
    backing = data.get("full-backing-filename") or data.get("backing-filename")
    if not backing:
        return
    if not opts.chain:
        raise InputError(
            f"qcow2 has a backing file ({data.get('backing-filename')}): it is one layer of "
            "a chain. Pass --chain to convert the whole chain through this top image", path)
    base = os.path.realpath(os.path.dirname(path))
    target = os.path.realpath(os.path.join(base, backing))
    if "://" in backing or os.path.commonpath([base, target]) != base:
        raise InputError(f"backing file {backing!r} lies outside {base}", path)


def _remote_hint(message: str) -> str:
    low = message.lower()
    if "certificate" in low or "ssl" in low:
        return (" (the server's certificate is not trusted here: install its CA on this "
                "node, or pass --insecure knowingly)")
    if "403" in low or "401" in low:
        return " (session cookie missing, wrong or expired: log in again and pass the new one)"
    return ""


def _inspect_vmdk(path: str, opts: SourceOptions, secrets: remote.SecretDir) -> Source:
    image = vmdk.load(path)
    chain = [img.path for img in image.chain]
    notes = []
    if image.descriptor.has_parent and not opts.chain:
        raise InputError(
            f"this is a snapshot (delta) disk: a chain of {len(chain)} images "
            f"({' -> '.join(os.path.basename(p) for p in chain)}). Converting one layer "
            "alone gives a disk with holes. Consolidate the snapshots on ESXi, or pass "
            "--chain to convert the whole chain as seen through this top image", path)
    if len(chain) > 1:
        notes.append(f"converting a {len(chain)}-image snapshot chain through its top image")
    if image.qemu_readable_type:
        spec = qemu.local_spec(path, "vmdk")
    else:
        # qemu refuses createType=vmfsThin by name: hand it our validated copy.
        copy = secrets.write("descriptor.vmdk", vmdk.sanitized_descriptor(image))
        spec = qemu.local_spec(copy, "vmdk", label=path)
        notes.append(f"{image.descriptor.create_type}: read through a validated descriptor copy")
    data = qemu.info(spec)
    size = int(data["virtual-size"])
    if size != image.descriptor.virtual_size:
        raise InputError(f"qemu sees {size} bytes but the descriptor's extents add up to "
                         f"{image.descriptor.virtual_size}", path)
    files = []
    for img in image.chain:
        files.append(img.path)
        files += [p for p in img.extent_paths if p and p not in files]
    actual = sum(os.stat(p).st_blocks * 512 for p in dict.fromkeys(files))
    return Source(spec, "vmdk", size, actual, vmdk=image, chain=chain, qemu_info=data,
                  notes=notes, local_files=list(dict.fromkeys(files)),
                  segments=_flat_segments(image), data_estimate=_grain_estimate(image))


def _grain_estimate(image: vmdk.VmdkImage) -> int | None:
    total = 0
    for img in image.chain:
        sparse = [e for e in img.descriptor.extents if e.type == "SPARSE"]
        if len(sparse) != len(img.grains) or any(e.type not in ("SPARSE", "ZERO")
                                                 for e in img.descriptor.extents):
            return None
        total += sum(g["allocated_grains"] * g["grain_size"] for g in img.grains)
    return total


def _flat_segments(image: vmdk.VmdkImage) -> list[Segment]:
    """Raw windows over flat extents, or [] when qemu's vmdk driver must read it."""
    d = image.descriptor
    if d.has_parent or not all(e.type in ("FLAT", "VMFS") for e in d.extents):
        return []
    out, pos = [], 0
    for e, path in zip(d.extents, image.extent_paths):
        spec = ImageSpec({"driver": "raw", "offset": str(e.offset * vmdk.SECTOR),
                          "size": str(e.size), "file.driver": "file", "file.filename": path},
                         path)
        out.append(Segment(spec, pos, e.size))
        pos += e.size
    return out
