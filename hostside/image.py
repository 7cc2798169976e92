"""Inspect a source image: what it is, how qemu must open it, how big it is.

Combines our own VMDK parsing (vmdk.py) with `qemu-img info`. The result,
`Source`, is what audit and convert consume.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from hostside.record import dataclass, field

from hostside import extents, qemu, vmdk
from hostside.errors import InputError, SourceUnreachable
from hostside.qemu import ImageSpec

# remote (http.client, ssl) is imported only for https:// sources: start-up time is
# part of every conversion.

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
    # Where the data is, as read by us (grain tables, a plain file): lets the audit read
    # without qemu and, for sparse VMDKs, `segments` be a raw view of the data runs.
    view: list[extents.Run] | None = None
    view_segments: bool = False      # segments are a raw view (data windows + null-co)
    estimate_method: str = "vmdk grain tables"
    how: str = "qemu-img info"       # how the size and format were established

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
            "inspected_by": self.how,
        }


@dataclass
class SourceOptions:
    format: str | None = None        # force a format instead of sniffing
    chain: bool = False              # accept a snapshot chain, read through its top
    cookie: str | None = None        # HTTPS session cookie value (never logged)
    insecure: bool = False           # HTTPS without certificate verification
    raw_despite_vmdk_header: bool = False  # --format raw on a file with VMware metadata


RAW_OVERRIDE_FLAG = "--raw-despite-vmdk-header"
MAX_CHAIN = 64


def _sniff(head: bytes, path: str) -> str:
    if not head:
        raise InputError("file is empty", path)
    kind = vmdk.data_file_kind(head)
    if kind:
        vmdk.refuse_data_file(path, kind, path)
    if head.startswith(vmdk.SPARSE_MAGIC) or vmdk.is_text_descriptor(head):
        return "vmdk"
    if head.startswith(QCOW2_MAGIC):
        return "qcow2"
    return "raw"


def _check_raw(head: bytes, opts: SourceOptions, where: str, notes: list[str]) -> None:
    """--format raw on VMware metadata would convert the metadata as if it were the disk
    (a 512-byte "disk" from a snapshot descriptor, skipping the snapshot refusal)."""
    kind = vmdk.vmware_header(head)
    if kind is None:
        return
    if not opts.raw_despite_vmdk_header:
        raise InputError(f"--format raw, but this file starts with {kind}: its bytes are "
                         "VMware metadata, not a disk. Open the .vmdk descriptor without "
                         f"--format, or pass {RAW_OVERRIDE_FLAG} if you really want these "
                         "bytes as a raw disk", where)
    notes.append(f"read as raw although it starts with {kind} ({RAW_OVERRIDE_FLAG})")


def _check_readable(path: str) -> tuple[os.stat_result, bytes]:
    """(stat, first sector) of a regular file or block device; anything else refused by
    type before it is opened (a FIFO would block the open, /dev/zero never ends)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except PermissionError:
        raise InputError("permission denied", path) from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError("is a directory, not a disk image", path)
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise InputError("neither a regular file nor a block device (FIFO, socket or "
                         "character device): refused", path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except PermissionError:
        raise InputError("not readable (permission denied)", path) from None
    except OSError as exc:
        raise InputError(f"not readable: {exc.strerror}", path) from None
    try:
        st = os.fstat(fd)   # what we hold, not what the name pointed at a moment ago
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise InputError("neither a regular file nor a block device: refused", path)
        head = os.pread(fd, 512, 0)
    except OSError as exc:
        raise InputError(f"not readable: {exc.strerror}", path) from None
    finally:
        os.close(fd)
    return st, head


def inspect(src: str, opts: SourceOptions, secrets) -> Source:
    """`secrets`: a private directory with `write(name, text) -> path` (remote.SecretDir
    or scratch.PrivateDir)."""
    if opts.format is not None and opts.format not in FORMATS:
        raise InputError(f"unknown format {opts.format!r} (expected one of "
                         f"{', '.join(FORMATS)})", "--format")
    if src.lower().startswith(("https://", "http://")):   # remote.is_url, without importing it
        return _inspect_remote(src, opts)

    path = os.path.abspath(src)
    st, head = _check_readable(path)
    if st.st_size == 0 and stat.S_ISREG(st.st_mode):
        raise InputError("file is empty", path)
    fmt = opts.format or _sniff(head, path)
    is_block = stat.S_ISBLK(st.st_mode)
    if fmt == "vmdk":
        return _inspect_vmdk(path, opts, secrets)
    if fmt == "qcow2":
        return _inspect_qcow2(path, opts, is_block)
    notes: list[str] = []
    _check_raw(head, opts, path, notes)
    if opts.format is None and stat.S_ISREG(st.st_mode):
        # a -f002.vmdk is 2 GiB of a larger disk, a -ctk.vmdk no disk at all; a -flat.vmdk passes
        vmdk.refuse_extent_piece(path, path)
    spec = qemu.local_spec(path, fmt)
    # A raw file or device is its own map: its size is the disk's size (no qemu-img info).
    size = st.st_size if not is_block else _device_size(path)
    return Source(spec, fmt, size, st.st_blocks * 512 if not is_block else None,
                  is_block_device=is_block, local_files=[path], notes=notes,
                  view=[extents.Run(0, size, path, 0)], how="stat",
                  data_estimate=size if is_block else min(size, st.st_blocks * 512),
                  estimate_method="allocated blocks of the file" if not is_block
                  else "device size")


def _device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _inspect_qcow2(path: str, opts: SourceOptions, is_block: bool) -> Source:
    """Walk the chain ourselves (each image opened with no backing), confine every
    backing file to the top image's directory, then hand qemu the chain spelled out:
    it never follows a name found inside an image."""
    base = os.path.realpath(os.path.dirname(path))
    levels: list[tuple[str, str, dict]] = []
    seen: set[str] = set()
    cur, fmt = path, "qcow2"
    while True:
        if len(levels) >= MAX_CHAIN:
            raise InputError(f"backing chain deeper than {MAX_CHAIN} images (a loop?)", path)
        seen.add(os.path.realpath(cur))
        data = qemu.info(qemu.local_spec(cur, fmt))
        if data.get("format") != fmt:
            raise InputError(f"qemu reads this as {data.get('format')!r}, not {fmt!r}", cur)
        levels.append((cur, fmt, data))
        if fmt != "qcow2":
            break
        _check_qcow2_references(cur, data)
        backing = data.get("backing-filename")
        if not backing:
            break
        if not opts.chain:
            raise InputError(
                f"qcow2 has a backing file ({backing}): it is one layer of a chain. Pass "
                "--chain to convert the whole chain through this top image", cur)
        target = _confined_backing(cur, backing, base)
        if target in seen:
            raise InputError(f"backing file {backing!r} loops back into the chain", cur)
        b_st, b_head = _check_readable(target)
        if not stat.S_ISREG(b_st.st_mode):
            raise InputError(f"backing file {backing!r} is not a regular file", cur)
        declared = data.get("backing-filename-format")
        sniffed = _sniff(b_head, target)
        if sniffed not in ("qcow2", "raw") or (declared and declared != sniffed):
            raise InputError(f"backing file {backing!r} is {sniffed}"
                             + (f" but the image declares {declared}" if declared else "")
                             + ": only qcow2 or raw backing files are accepted", cur)
        if sniffed == "raw":
            _check_raw(b_head, SourceOptions(), target, [])
        cur, fmt = target, sniffed
    spec = None
    for p, f, _ in reversed(levels):
        spec = qemu.local_spec(p, f, label=path if p == path else None, backing=spec)
    assert spec is not None
    top = levels[0][2]
    notes = ([f"converting a {len(levels)}-image backing chain through its top image"]
             if len(levels) > 1 else [])
    return Source(spec, "qcow2", int(top["virtual-size"]), top.get("actual-size"),
                  chain=[p for p, _, _ in levels] if len(levels) > 1 else [], qemu_info=top,
                  is_block_device=is_block, local_files=[p for p, _, _ in levels], notes=notes)


def _confined_backing(image_path: str, backing: str, base: str) -> str:
    if "://" in backing or backing.startswith("json:") or re.match(r"^[a-z0-9+_-]+:", backing):
        raise InputError(f"backing file {backing!r} is a protocol, not a file beside the "
                         "image", image_path)
    target = os.path.realpath(os.path.join(os.path.dirname(image_path), backing))
    if os.path.commonpath([base, target]) != base:
        raise InputError(f"backing file {backing!r} lies outside {base}", image_path)
    return target


def _check_qcow2_references(path: str, data: dict) -> None:
    """A qcow2 may name an external data file: qemu would read it whatever it is."""
    specific = (data.get("format-specific") or {}).get("data") or {}
    if specific.get("data-file"):
        raise InputError("qcow2 with an external data file is not accepted as a source", path)


def _remote_hint(message: str, insecure: bool = False) -> str:
    low = message.lower()
    if "certificate" in low or "ssl" in low or "tls" in low:
        if insecure:   # verification was already off: the hint would be wrong
            return (" (TLS failed although certificate verification is off: check the "
                    "URL, port and the server's TLS setup)")
        return (" (the server's certificate is not trusted here: install its CA on this "
                "node, or pass --insecure knowingly)")
    if "403" in low or "401" in low:
        return " (session cookie missing, wrong or expired: log in again and pass the new one)"
    return ""


def _inspect_remote(url: str, opts: SourceOptions) -> Source:
    """An https:// source gets the same validation as a local one: we fetch and parse
    its header / descriptor / grain tables ourselves first (same TLS settings and
    cookie as qemu), and qemu gets only what we validated, never a backing file."""
    from hostside import remote
    spec = remote.https_spec(url, opts.format, cookie=opts.cookie, insecure=opts.insecure)
    where = spec.label
    fmt = spec.format
    notes = ["streamed through qemu's curl driver"]
    segments: list[Segment] = []
    image_info = None
    estimate = None
    with remote.RemoteFile(url, cookie=opts.cookie, insecure=opts.insecure,
                           hint=_remote_hint) as rf:
        head = rf.read_at(0, 512)
        if not head:
            raise InputError("remote file is empty", where)
        if fmt == "raw":
            _check_raw(head, opts, where, notes)
            if head.startswith(QCOW2_MAGIC) and not opts.raw_despite_vmdk_header:
                raise InputError("--format raw, but this is a qcow2 image: pass --format "
                                 "qcow2", where)
        elif fmt == "qcow2":
            _check_remote_qcow2(head, where)
        else:
            image_info, spec, segments, estimate = _remote_vmdk(rf, head, url, spec, opts)
    try:
        data = qemu.info(spec)
    except InputError as exc:
        raise SourceUnreachable(exc.message + _remote_hint(exc.message, opts.insecure),
                                spec.label) from None
    if fmt == "qcow2":
        _check_qcow2_references(where, data)
        if data.get("backing-filename"):   # second opinion: we already refused these
            raise InputError("qcow2 over https names a backing file: refused", where)
    size = int(data["virtual-size"])
    if image_info is not None and size != image_info.descriptor.virtual_size:
        raise InputError(f"qemu sees {size} bytes but the descriptor says "
                         f"{image_info.descriptor.virtual_size}", where)
    return Source(spec, fmt, size, data.get("actual-size"), qemu_info=data, notes=notes,
                  vmdk=image_info, segments=segments, data_estimate=estimate)


def _check_remote_qcow2(head: bytes, where: str) -> None:
    if not head.startswith(QCOW2_MAGIC) or len(head) < 104:
        raise InputError("not a qcow2 image (no QFI magic)", where)
    version, backing_offset, backing_size = struct.unpack_from(">IQI", head, 4)
    if backing_offset or backing_size:
        raise InputError("qcow2 over https names a backing file: a chain cannot be read "
                         "safely over https; consolidate it, or copy the chain to the node",
                         where)
    if version >= 3:
        incompatible = struct.unpack_from(">Q", head, 72)[0]
        if incompatible & (1 << 2):
            raise InputError("qcow2 with an external data file is not accepted as a source",
                             where)


def _remote_vmdk(rf, head: bytes, url: str, spec: ImageSpec, opts: SourceOptions):
    from hostside import remote
    where = spec.label
    kind = vmdk.data_file_kind(head)
    if kind:
        raise InputError(f"this is {kind}, a data file of a VMware disk, not a disk on its "
                         "own: give the URL of its descriptor (.vmdk) instead", where)
    if head.startswith(vmdk.SPARSE_MAGIC):
        header = vmdk.parse_sparse_header(head, where)
        text = vmdk.read_embedded_descriptor(rf, header, rf.size, where)
        if text is None:
            raise InputError("this is a VMDK sparse extent without an embedded descriptor: "
                             "give the URL of its descriptor (.vmdk) instead", where)
        desc = vmdk.parse_descriptor(text, where)
        _refuse_remote_parent(desc, where)
        if len(desc.extents) != 1 or desc.extents[0].type != "SPARSE":
            raise InputError("a sparse VMDK over https must be one self-contained file "
                             "(monolithicSparse or streamOptimized)", where)
        if header.capacity != desc.extents[0].sectors:
            raise InputError(f"sparse extent holds {header.capacity} sectors but its "
                             f"descriptor says {desc.extents[0].sectors}", where)
        grains = vmdk.check_grain_tables(rf, header, rf.size, where)
        image = vmdk.VmdkImage(url, desc, True, [where], [grains])
        return image, spec, [], grains["allocated_grains"] * grains["grain_size"]
    if not vmdk.is_text_descriptor(head):
        raise InputError("not a VMDK: neither a descriptor nor a KDMV sparse extent", where)
    if rf.size > vmdk.MAX_DESCRIPTOR_BYTES:
        raise InputError(f"descriptor is {rf.size} bytes; refusing anything over "
                         f"{vmdk.MAX_DESCRIPTOR_BYTES}", where)
    text = vmdk.decode_descriptor(vmdk.descriptor_bytes(rf.read_at(0, rf.size)), where)
    desc = vmdk.parse_descriptor(text, where)
    _refuse_remote_parent(desc, where)
    data_extents = [e for e in desc.extents if e.type != "ZERO"]
    if len(desc.extents) != 1 or data_extents[0].type not in ("FLAT", "VMFS"):
        raise InputError("over https only a descriptor with one flat extent (ESXi vmfs / "
                         "vmfsThin, monolithicFlat) is read; give the -flat.vmdk URL, or "
                         "convert from the datastore mounted on this node", where)
    ext = data_extents[0]
    if re.search(r"[\\/]", ext.filename or ""):
        raise InputError(f"extent {ext.filename!r} is not a file beside the descriptor",
                         f"{where}:{ext.line}")
    ext_url = remote.sibling_url(url, ext.filename or "")
    # qemu never sees the descriptor: it reads the extent as a raw window we define.
    with remote.RemoteFile(ext_url, cookie=opts.cookie, insecure=opts.insecure,
                           hint=_remote_hint) as ef:
        ef.read_at(0, 1)
        need = (ext.offset + ext.sectors) * vmdk.SECTOR
        if ef.size is None or ef.size < need:
            raise InputError(f"extent {ext.filename!r} has {ef.size} bytes but the descriptor "
                             f"needs {need}", f"{where}:{ext.line}")
    flat = remote.https_spec(ext_url, "raw", cookie=opts.cookie, insecure=opts.insecure)
    window = qemu.window_spec(flat, ext.offset * vmdk.SECTOR, ext.size, label=where)
    image = vmdk.VmdkImage(url, desc, False, [remote.redact_url(ext_url)])
    return image, window, [], None


def _refuse_remote_parent(desc: vmdk.Descriptor, where: str) -> None:
    if desc.has_parent:
        raise InputError("this is a snapshot (delta) disk: a snapshot chain cannot be read "
                         "over https. Consolidate the snapshots on ESXi first", where)


def _inspect_vmdk(path: str, opts: SourceOptions, secrets) -> Source:
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
    if not image.qemu_readable_type:
        notes.append(f"{image.descriptor.create_type}: read through a validated descriptor copy")
    spec = _vmdk_spec(image, secrets)
    files = []
    for img in image.chain:
        files.append(img.path)
        files += [p for p in img.extent_paths if p and p not in files]
    files = list(dict.fromkeys(files))
    blocks = {p: os.stat(p).st_blocks * 512 for p in files}
    actual = sum(blocks.values())
    size = image.descriptor.virtual_size
    view = extents.vmdk_view(image)
    segments = _view_segments(view, size) if view is not None else None
    if segments is not None:
        # qemu reads only the data runs we found (raw windows + null-co zeros); it
        # never parses this VMDK during the copy, so its size needs no cross-check here.
        # The verification reads the source through qemu's vmdk driver (qemu-img map).
        notes.append(f"copied through a raw view of {sum(1 for r in view if r.is_data)} "
                     "data runs from the grain tables")
        return Source(spec, "vmdk", size, actual, vmdk=image, chain=chain, notes=notes,
                      local_files=files, segments=segments,
                      data_estimate=_view_estimate(image, view, blocks), view=view,
                      view_segments=True, how="vmdk grain tables")
    data = qemu.info(spec)
    qsize = int(data["virtual-size"])
    if qsize != size:
        raise InputError(f"qemu sees {qsize} bytes but the descriptor's extents add up to "
                         f"{size}", path)
    estimate = _grain_estimate(image)
    if estimate is None and len(chain) > 1:
        # ESXi delta chains (vmfsSparse/seSparse): what the chain's files hold on disk
        # bounds its data; a whole-chain `qemu-img measure` walks every grain of every
        # layer (8.8-17.7 s measured in issue 17).
        estimate = min(actual, size)
        how = "allocated blocks of the chain's files"
    else:
        how = "vmdk grain tables"
    return Source(spec, "vmdk", size, actual, vmdk=image, chain=chain, qemu_info=data,
                  notes=notes, local_files=files,
                  segments=_flat_segments(image), data_estimate=estimate,
                  how="vmdk parser + qemu-img info", estimate_method=how)


def _view_estimate(image: vmdk.VmdkImage, view: list[extents.Run], blocks: dict) -> int:
    """Data bytes: sparse runs as counted, flat extents as far as their files are
    allocated (a thin -flat.vmdk holds holes the raw driver skips)."""
    flat = {p for img in image.chain      # a seSparse chain's view reaches its base
            for e, p in zip(img.descriptor.extents, img.extent_paths)
            if e.type in ("FLAT", "VMFS")}
    total = sum(r.length for r in view if r.is_data and r.path not in flat)
    sizes: dict[str, int] = {}
    for r in view:
        if r.path in flat:
            sizes[r.path] = sizes.get(r.path, 0) + r.length
    return total + sum(min(n, blocks.get(p, n)) for p, n in sizes.items())


# A raw view opens the source file once per data run (qemu opens a file per source
# image): bounded so that the file descriptors and the argv stay small.
MAX_VIEW_RUNS = 4096
MAX_VIEW_ARGV = 1 << 20


def _view_segments(view: list[extents.Run], size: int) -> list[Segment] | None:
    """Data windows and null-co zero runs covering [0, size), or None when too many."""
    data = sum(1 for r in view if r.is_data)
    if data > MAX_VIEW_RUNS or not _enough_fds(data + 64):
        return None
    out: list[Segment] = []
    pos = 0
    for r in view + [extents.Run(size, 0)]:
        if r.start > pos:
            out.append(Segment(_zero_spec(r.start - pos), pos, r.start - pos))
        if r.length:
            spec = (ImageSpec({"driver": "raw", "offset": str(r.offset), "size": str(r.length),
                               "file.driver": "file", "file.filename": r.path}, r.path)
                    if r.is_data else _zero_spec(r.length))
            out.append(Segment(spec, r.start, r.length))
        pos = max(pos, r.end)
    if sum(len(s.spec.image_arg()) + 1 for s in out) > MAX_VIEW_ARGV:
        return None
    return out


def _zero_spec(length: int) -> ImageSpec:
    # qemu's block/null.c: read-zeroes makes reads return zeros and block status report
    # BDRV_BLOCK_ZERO, so qemu-img convert skips the whole run in one call.
    return ImageSpec({"driver": "null-co", "size": str(length), "read-zeroes": "on"},
                     "zeros")


def _enough_fds(need: int) -> bool:
    """Raise our soft RLIMIT_NOFILE (inherited by qemu-img) when the hard limit allows."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return True
    if hard != resource.RLIM_INFINITY and hard < need:
        return False
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    except (ValueError, OSError):
        return False
    return True


def _vmdk_spec(image: vmdk.VmdkImage, secrets) -> ImageSpec:
    """How qemu opens a validated VMDK (chain): a text descriptor is handed over as our
    validated copy (absolute, checked extent paths; qemu refuses vmfsThin by name and
    must not re-read a descriptor that could have changed since we checked it); the
    parent is an explicit backing node, never qemu's reading of parentFileNameHint."""
    backing = _vmdk_spec(image.parent, secrets) if image.parent is not None else None
    if image.embedded:
        return qemu.local_spec(image.path, "vmdk", backing=backing)
    copy = secrets.write("descriptor.vmdk", vmdk.sanitized_descriptor(image))
    return qemu.local_spec(copy, "vmdk", label=image.path, backing=backing)


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
