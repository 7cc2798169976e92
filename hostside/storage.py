"""Conversion targets: qcow2/raw files, existing block devices, ZFS zvols, LVM-thin volumes.

Each target checks its storage rules before anything is created (exists? enough
space? qcow2 on ZFS?), creates itself exclusively, and can remove what it
created when the conversion fails or is interrupted. ZFS and LVM are driven
through their CLIs (argv lists), found on PATH.

A new target is written under a temporary name (`<file>.partial`, zvol/LV
`guestprep-partial-<name>`) and renamed to its final name only after the
conversion was verified (`commit`): whatever kills the run (SIGKILL, power
loss), nothing under the final name is ever half-written. The temporary name
does not start with `vm-`, so Proxmox never lists it as a disk of a VM.
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import subprocess
import time
from hostside.record import dataclass, field

from hostside import filesystems
from hostside.errors import InputError, TargetRefused, ToolFailed
from hostside.qemu import tool

# Device nodes for zvols/LVs live under /dev; tests point this at a scratch dir
# (the recording zfs/lvcreate stand-ins create plain files there).
DEV_ROOT_ENV = "GUESTPREP_HOST_DEV_ROOT"
DEVICE_WAIT_S = 30.0

_DATASET_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*(/[A-Za-z0-9_.:-]+)+$")
_LVM_NAME_RE = re.compile(r"^[A-Za-z0-9+_.][A-Za-z0-9+_.-]*$")
_SIZE_RE = re.compile(r"^(\d+)([kKmM]?)$")
PARTIAL_SUFFIX = ".partial"
PARTIAL_PREFIX = "guestprep-partial-"


def dev_root() -> str:
    return os.environ.get(DEV_ROOT_ENV, "/dev")


def _run(argv: list[str], what: str, *, check: bool = True) -> subprocess.CompletedProcess:
    from hostside.qemu import die_with_parent
    proc = subprocess.run([tool(argv[0])] + argv[1:], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=300, preexec_fn=die_with_parent)
    if check and proc.returncode != 0:
        err = (proc.stderr.strip().splitlines() or ["no error output"])[-1]
        raise ToolFailed(f"{argv[0]} {argv[1]} failed: {err}", what)
    return proc


def mount_fstype(path: str) -> tuple[str, str]:
    """(fstype, mountpoint) of the filesystem holding `path`, from /proc/self/mountinfo."""
    real = os.path.realpath(path)
    best = ("unknown", "/")
    best_len = -1
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                fields = left.split()
                if len(fields) < 5 or not right:
                    continue
                mnt = fields[4].replace("\\040", " ").replace("\\011", "\t")
                fstype = right.split()[0]
                if (real == mnt or real.startswith(mnt.rstrip("/") + "/")) and \
                        len(mnt) > best_len:
                    best, best_len = (fstype, mnt), len(mnt)
    except OSError:
        pass
    return best


def in_device_directory(path: str) -> bool:
    """`path` names a device node: it lies under /dev on /dev's own filesystem (devtmpfs,
    or tmpfs in a container). /dev/shm and other filesystems mounted below /dev hold
    ordinary files and are not device paths."""
    path = os.path.abspath(path)
    if not path.startswith("/dev/"):
        return False
    return mount_fstype(os.path.dirname(path))[1] == mount_fstype("/dev")[1]


# Filesystems whose files live in the node's memory (page cache + swap, nothing on disk).
MEMORY_FILESYSTEMS = ("tmpfs", "ramfs")


def memory_available(meminfo: str = "/proc/meminfo") -> int | None:
    """Bytes a memory-backed file can still take: MemAvailable + SwapFree (tmpfs pages
    can be swapped out; proc(5)). None when unknown."""
    fields = {}
    try:
        with open(meminfo, encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    fields[key] = int(parts[0]) * 1024   # proc(5): values in kB
    except OSError:
        return None
    if "MemAvailable" not in fields:
        return None
    return fields["MemAvailable"] + fields.get("SwapFree", 0)


def parse_size(text: str, what: str) -> int:
    m = _SIZE_RE.match(text.strip())
    if not m:
        raise InputError(f"size {text!r} is not a number with an optional k/M suffix", what)
    return int(m.group(1)) * {"": 1, "k": 1024, "m": 1 << 20}[m.group(2).lower()]


# --------------------------------------------------------------------------- ZFS padding


@dataclass
class PoolLayout:
    ashift: int
    raidz_parity: int = 0      # 0: mirror/stripe
    raidz_width: int = 0       # disks in the widest raidz vdev


def raidz_overhead(volblocksize: int, layout: PoolLayout) -> float:
    """Extra space a zvol block costs over the vdev's nominal parity ratio.

    RAIDZ allocates parity per block and pads each allocation to a multiple of
    (parity + 1) sectors, so small volblocksizes on wide RAIDZ vdevs use far
    more space than the data/parity ratio suggests.
    """
    sector = 1 << layout.ashift
    data = math.ceil(volblocksize / sector)
    if layout.raidz_parity == 0 or layout.raidz_width <= layout.raidz_parity:
        return data * sector / volblocksize - 1.0
    p, n = layout.raidz_parity, layout.raidz_width
    parity = p * math.ceil(data / (n - p))
    total = data + parity
    total = math.ceil(total / (p + 1)) * (p + 1)
    nominal = volblocksize * n / (n - p)
    return total * sector / nominal - 1.0


def parse_zpool_status(text: str) -> tuple[int, int]:
    """(parity, width) of the widest raidz vdev in `zpool status -P` output."""
    best = (0, 0)
    lines = text.splitlines()
    in_config = False
    group_indent = None
    group: list[int] = []  # [parity, width]
    groups: list[list[int]] = []
    for line in lines:
        if line.strip().startswith("config:"):
            in_config = True
            continue
        if line.strip().startswith("errors:"):
            break
        if not in_config or not line.strip() or line.strip().startswith("NAME"):
            continue
        indent = len(line) - len(line.lstrip())
        name = line.split()[0]
        if name in ("logs", "cache", "spares", "special", "dedup"):
            group_indent = None
            in_config = False  # only data vdevs matter for zvol padding
            continue
        m = re.match(r"^raidz(\d)?-\d+$", name)
        if m:
            group = [int(m.group(1) or 1), 0]
            groups.append(group)
            group_indent = indent
        elif group_indent is not None and indent > group_indent:
            group[1] += 1
        else:
            group_indent = None
    for g in groups:
        if g[1] > best[1]:
            best = (g[0], g[1])
    return best


# --------------------------------------------------------------------------- targets


@dataclass
class Target:
    kind: str                  # qcow2 | raw | zvol | lvmthin
    path: str                  # the final name (what the manifest and Proxmox see)
    fmt: str                   # qcow2 | raw
    label: str                 # what the operator named
    is_block: bool = False
    fresh_zero: bool = False   # created by us and reads as zeros: --target-is-zero
    created: bool = False
    size: int = 0
    warnings: list[str] = field(default_factory=list)
    details: dict = field(default_factory=dict)
    write_path: str = ""       # what qemu writes: the temporary name until commit()
    committed: bool = False    # renamed to the final name
    discarding_partial: bool = False   # a stale partial will be removed first (hostside/claim.py)

    def __post_init__(self) -> None:
        self.write_path = self.write_path or self.path

    def preflight(self, virtual_size: int, required: int) -> None:
        raise NotImplementedError

    def commit(self) -> None:
        """Give the verified target its final name (never replacing anything)."""
        self.committed = True

    def create(self, virtual_size: int) -> None:
        raise NotImplementedError

    def remove(self) -> None:
        raise NotImplementedError

    def partial_name(self) -> str | None:
        """The temporary name a killed run leaves (None: the target has no such name)."""
        return None

    def partial_exists(self) -> bool:
        return False

    def discard_partial(self) -> None:
        """Remove what a killed run of this conversion left under the temporary name."""

    def reclaimable(self) -> int:
        """Bytes that removing the stale partial gives back to the free space the check reads
        (only when it will be removed first): a retry that fits once it is gone is not refused."""
        return 0

    def _free_after_discard(self, free: int) -> int:
        gain = self.reclaimable() if self.discarding_partial else 0
        if gain:
            self.details["reclaimable_bytes"] = gain
        return free + gain

    def to_dict(self) -> dict:
        return {"kind": self.kind, "path": self.path, "format": self.fmt, "name": self.label,
                "size": self.size, "block_device": self.is_block, "details": self.details,
                "warnings": self.warnings}


class FileTarget(Target):
    def __init__(self, kind: str, path: str, *, allow_qcow2_on_zfs: bool = False,
                 cluster_size: str | None = None):
        super().__init__(kind, os.path.abspath(path), "qcow2" if kind == "qcow2" else "raw",
                         path)
        self.write_path = self.path + PARTIAL_SUFFIX
        self.allow_qcow2_on_zfs = allow_qcow2_on_zfs
        self.cluster_size = cluster_size
        self.formatted_by_convert = False     # set by create() for qcow2

    def preflight(self, virtual_size: int, required: int) -> None:
        if os.path.lexists(self.path):
            raise TargetRefused("target already exists; refusing to overwrite it", self.path)
        if os.path.lexists(self.write_path) and not self.discarding_partial:
            raise TargetRefused("a partial target from an interrupted run is in the way (it "
                                "was never verified): remove it and rerun, e.g. "
                                f"rm -- '{self.write_path}'", self.write_path)
        parent = os.path.dirname(self.path)
        if not os.path.isdir(parent):
            raise TargetRefused("target directory does not exist", parent)
        if not os.access(parent, os.W_OK):
            raise TargetRefused("target directory is not writable", parent)
        fstype, mnt = mount_fstype(parent)
        self.details["filesystem"] = fstype
        if fstype == "zfs" and self.fmt == "qcow2":
            msg = (f"{parent} is on ZFS ({mnt}): qcow2 on ZFS stacks two copy-on-write layers "
                   "(the seed's 'never qcow2 on ZFS'); convert --to zvol instead")
            if not self.allow_qcow2_on_zfs:
                raise TargetRefused(msg + ", or pass --allow-qcow2-on-zfs", self.path)
            self.warnings.append(msg + " (overridden by --allow-qcow2-on-zfs)")
        if fstype in MEMORY_FILESYSTEMS:
            self._memory_backed(parent, fstype, mnt, required)
        if fstype != "ramfs":   # ramfs has no size limit: statvfs reports 0 free
            st = os.statvfs(parent)
            free = st.f_bavail * st.f_frsize
            self.details["free_bytes"] = free
            free = self._free_after_discard(free)
            if free < required:
                raise TargetRefused(f"needs {required} bytes but {parent} has {free} free",
                                    parent)

    def _memory_backed(self, parent: str, fstype: str, mnt: str, required: int) -> None:
        """tmpfs/ramfs: the copy works, but it lives in RAM. Refuse what memory cannot hold
        (a tmpfs may be mounted larger than RAM + swap; writing past that brings the OOM
        killer to the node's VMs); warn otherwise, in the plan and the manifest."""
        avail = memory_available()
        self.details["memory_available_bytes"] = avail
        what = f"{parent} is on {fstype} ({mnt}), which keeps files in the node's memory"
        if avail is not None and required > avail:
            raise TargetRefused(f"{what}: the converted disk needs {required} bytes but only "
                                f"{avail} bytes of memory (MemAvailable + SwapFree) are free; "
                                "convert into directory storage on disk, or --to zvol/lvmthin",
                                self.path)
        self.warnings.append(
            f"{what}: the converted disk uses RAM the VMs on this node need and is lost at "
            "the next reboot, and no Proxmox storage keeps VM disks there; move it to "
            "directory storage on disk (or convert --to zvol/lvmthin) before using it")

    def create(self, virtual_size: int) -> None:
        # O_EXCL claims the name atomically; from here on the file is ours to remove.
        try:
            fd = os.open(self.write_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:  # appeared since preflight: still not ours to touch
            raise TargetRefused("target already exists; refusing to overwrite it",
                                self.write_path) from None
        except OSError as exc:
            raise TargetRefused(f"cannot create the target: {exc.strerror}",
                                self.write_path) from None
        self.created = True
        try:
            if self.fmt == "raw":
                os.ftruncate(fd, virtual_size)
        finally:
            os.close(fd)
        # A qcow2 is formatted by the `qemu-img convert -O qcow2` that fills it (one
        # process less than `qemu-img create` first): it opens our claimed name without
        # O_EXCL and keeps its mode; a new qcow2 reads as zeros (qcow2_has_zero_init), so
        # it skips zeros as --target-is-zero would. See hostside.convert.convert_argv.
        self.formatted_by_convert = self.fmt == "qcow2"
        self.size = virtual_size
        self.fresh_zero = True

    def commit(self) -> None:
        rename_noreplace(self.write_path, self.path)
        self.committed = True

    def partial_name(self) -> str | None:
        return self.write_path

    def partial_exists(self) -> bool:
        return os.path.lexists(self.write_path)

    def discard_partial(self) -> None:
        try:
            os.unlink(self.write_path)
        except FileNotFoundError:
            pass

    def reclaimable(self) -> int:
        try:
            st = os.lstat(self.write_path)
        except OSError:
            return 0
        # its allocated blocks (a sparse raw frees what was written, not its size); a file with
        # another hard link keeps its blocks when this name goes
        return st.st_blocks * 512 if stat.S_ISREG(st.st_mode) and st.st_nlink == 1 else 0

    def remove(self) -> None:
        if self.created:
            try:
                os.unlink(self.path if self.committed else self.write_path)
            except FileNotFoundError:
                pass
            self.created = False


def rename_noreplace(src: str, dst: str) -> None:
    """Rename that never replaces `dst`: link + unlink (atomic no-clobber), or on a
    filesystem without hard links (some CIFS mounts) a checked rename."""
    try:
        os.link(src, dst)
    except FileExistsError:
        raise TargetRefused("a file of this name appeared during the conversion; the "
                            f"verified copy stays at {src}", dst) from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
                             errno.ENOSYS, errno.EACCES):
            raise TargetRefused(f"cannot rename the verified target: {exc.strerror}",
                                dst) from None
        if os.path.lexists(dst):
            raise TargetRefused("a file of this name appeared during the conversion; the "
                                f"verified copy stays at {src}", dst) from None
        os.rename(src, dst)
        return
    os.unlink(src)


def _device_size(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class BlockDeviceTarget(Target):
    """An existing block device (e.g. a LUN or loop device): never created, never removed."""

    def __init__(self, path: str, *, overwrite_device: bool = False):
        super().__init__("raw", os.path.abspath(path), "raw", path, is_block=True)
        self.overwrite_device = overwrite_device

    def preflight(self, virtual_size: int, required: int) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise TargetRefused("block device does not exist", self.path) from None
        if not stat.S_ISBLK(st.st_mode):
            raise TargetRefused("not a block device", self.path)
        size = _device_size(self.path)
        self.size = size
        if size < virtual_size:
            raise TargetRefused(f"device holds {size} bytes, the image needs {virtual_size}",
                                self.path)
        try:  # O_EXCL on a block device fails with EBUSY when mounted or held
            fd = os.open(self.path, os.O_RDONLY | os.O_EXCL)
        except OSError as exc:
            raise TargetRefused(f"device is in use ({exc.strerror})", self.path) from None
        try:
            head = os.pread(fd, filesystems.PROBE_BYTES, 0)
        finally:
            os.close(fd)
        found = filesystems.detect(head) or ("partition table" if head[510:512] == b"\x55\xaa"
                                             else None)
        if found and not self.overwrite_device:
            raise TargetRefused(f"device already holds data ({found}); refusing to overwrite "
                                "it without --overwrite-device", self.path)
        if found:
            self.warnings.append(f"overwrote a device that held {found} (--overwrite-device)")

    def create(self, virtual_size: int) -> None:
        self.fresh_zero = False  # old contents: qemu must write the zeros too

    def remove(self) -> None:
        pass  # not ours to remove; the caller reports the device as partially written


def _wait_for(path: str, what: str) -> None:
    deadline = time.monotonic() + DEVICE_WAIT_S
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise ToolFailed(f"device node {path} did not appear within {DEVICE_WAIT_S:.0f}s",
                             what)
        time.sleep(0.1)


class ZvolTarget(Target):
    def __init__(self, dataset: str, *, volblocksize: str = "16k"):
        if not _DATASET_RE.match(dataset) or ".." in dataset or "@" in dataset:
            raise InputError("zvol name must look like pool/path/vm-100-disk-0", dataset)
        super().__init__("zvol", os.path.join(dev_root(), "zvol", dataset), "raw", dataset,
                         is_block=True)
        self.dataset = dataset
        parent, name = dataset.rsplit("/", 1)
        self.tmp_dataset = f"{parent}/{PARTIAL_PREFIX}{name}"
        self.write_path = os.path.join(dev_root(), "zvol", self.tmp_dataset)
        self.volblocksize = parse_size(volblocksize, "--volblocksize")
        if self.volblocksize < 512 or self.volblocksize & (self.volblocksize - 1) or \
                self.volblocksize > (1 << 20):
            raise InputError(f"volblocksize {volblocksize} is not a power of two in 512..1M",
                             "--volblocksize")

    def preflight(self, virtual_size: int, required: int) -> None:
        if _run(["zfs", "list", "-H", "-o", "name", self.dataset], self.dataset,
                check=False).returncode == 0:
            raise TargetRefused("zvol already exists; refusing to overwrite it", self.dataset)
        if not self.discarding_partial and self.partial_exists():
            raise TargetRefused("a partial zvol from an interrupted run is in the way (never "
                                "verified): destroy it and rerun, e.g. "
                                f"zfs destroy {self.tmp_dataset}", self.tmp_dataset)
        parent = self.dataset.rsplit("/", 1)[0]
        out = _run(["zfs", "get", "-H", "-p", "-o", "value", "available", parent], parent)
        try:
            free = int(out.stdout.split()[0])
        except (IndexError, ValueError):
            raise ToolFailed(f"unexpected `zfs get available` output {out.stdout[:60]!r}",
                             parent) from None
        self.details["free_bytes"] = free
        free = self._free_after_discard(free)
        if free < required:
            raise TargetRefused(f"needs {required} bytes but {parent} has {free} available",
                                parent)
        pool = self.dataset.split("/", 1)[0]
        layout = self._layout(pool)
        overhead = raidz_overhead(self.volblocksize, layout)
        self.details.update({"volblocksize": self.volblocksize, "ashift": layout.ashift,
                             "raidz_parity": layout.raidz_parity,
                             "raidz_width": layout.raidz_width,
                             "padding_overhead": round(overhead, 4)})
        if overhead > 0.05:
            vdev = (f"raidz{layout.raidz_parity} of {layout.raidz_width} disks"
                    if layout.raidz_parity else "this pool")
            self.warnings.append(
                f"volblocksize {self.volblocksize // 1024}k on {vdev} with ashift "
                f"{layout.ashift}: about {overhead:.0%} more space than the data needs "
                "(RAIDZ parity+padding); a larger --volblocksize or a mirror avoids it")

    def _layout(self, pool: str) -> PoolLayout:
        out = _run(["zpool", "get", "-H", "-p", "-o", "value", "ashift", pool], pool)
        try:
            ashift = int(out.stdout.split()[0])
        except (IndexError, ValueError):
            raise ToolFailed(f"unexpected `zpool get ashift` output {out.stdout[:60]!r}",
                             pool) from None
        status = _run(["zpool", "status", "-P", pool], pool)
        parity, width = parse_zpool_status(status.stdout)
        return PoolLayout(ashift or 12, parity, width)

    def create(self, virtual_size: int) -> None:
        size = -(-virtual_size // self.volblocksize) * self.volblocksize
        _run(["zfs", "create", "-s", "-V", str(size), "-o",
              f"volblocksize={self.volblocksize}", self.tmp_dataset], self.dataset)
        self.created = True
        self.size = size
        _wait_for(self.write_path, self.dataset)
        self.fresh_zero = True  # a new sparse zvol reads as zeros

    def commit(self) -> None:
        # `zfs rename` refuses an existing target name: it never replaces a dataset.
        _run(["zfs", "rename", self.tmp_dataset, self.dataset], self.dataset)
        self.committed = True

    def remove(self) -> None:
        if self.created:
            _run(["zfs", "destroy", self.dataset if self.committed else self.tmp_dataset],
                 self.dataset, check=False)
            self.created = False

    def partial_name(self) -> str | None:
        return self.tmp_dataset

    def partial_exists(self) -> bool:
        return _run(["zfs", "list", "-H", "-o", "name", self.tmp_dataset], self.tmp_dataset,
                    check=False).returncode == 0

    def discard_partial(self) -> None:
        if self.partial_exists():
            _run(["zfs", "destroy", self.tmp_dataset], self.tmp_dataset)

    def reclaimable(self) -> int:
        # zfsprops(7): `used` of a volume is the space it and its descendants consume (its data,
        # or its refreservation when not sparse), all of which a destroy returns to the parent
        out = _run(["zfs", "get", "-H", "-p", "-o", "value", "used", self.tmp_dataset],
                   self.tmp_dataset, check=False)
        try:
            return int(out.stdout.split()[0]) if out.returncode == 0 else 0
        except (IndexError, ValueError):
            return 0


class LvmThinTarget(Target):
    def __init__(self, spec: str):
        parts = spec.split("/")
        if len(parts) != 3 or not all(_LVM_NAME_RE.match(p) for p in parts):
            raise InputError("LVM-thin target must be VG/THINPOOL/NAME", spec)
        self.vg, self.pool, self.name = parts
        super().__init__("lvmthin", os.path.join(dev_root(), self.vg, self.name), "raw", spec,
                         is_block=True)
        self.tmp_name = PARTIAL_PREFIX + self.name
        self.write_path = os.path.join(dev_root(), self.vg, self.tmp_name)

    def preflight(self, virtual_size: int, required: int) -> None:
        lv = f"{self.vg}/{self.name}"
        if _run(["lvs", "--noheadings", "-o", "lv_name", lv], lv, check=False).returncode == 0:
            raise TargetRefused("logical volume already exists; refusing to overwrite it", lv)
        tmp = f"{self.vg}/{self.tmp_name}"
        if not self.discarding_partial and self.partial_exists():
            raise TargetRefused("a partial volume from an interrupted run is in the way (never "
                                f"verified): remove it and rerun, e.g. lvremove {tmp}", tmp)
        pool = f"{self.vg}/{self.pool}"
        out = _run(["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
                    "-o", "lv_size,data_percent,lv_attr", pool], pool)
        try:
            size_s, pct_s, attr = [x.strip() for x in out.stdout.strip().split("|")]
            pool_size, used_pct = int(float(size_s)), float(pct_s or 0)
        except ValueError:
            raise ToolFailed(f"unexpected lvs output {out.stdout[:80]!r}", pool) from None
        if not attr.startswith("t"):
            raise TargetRefused(f"{pool} is not a thin pool (lv_attr {attr})", pool)
        free = int(pool_size * (100.0 - used_pct) / 100.0)
        self.details.update({"pool_size": pool_size, "pool_used_percent": used_pct,
                             "free_bytes": free, "zeroing": len(attr) > 7 and attr[7] == "z"})
        free = self._free_after_discard(free)
        if free < required:
            raise TargetRefused(f"needs {required} bytes but thin pool {pool} has {free} free",
                                pool)

    def create(self, virtual_size: int) -> None:
        size = -(-virtual_size // 512) * 512
        _run(["lvcreate", "-q", "-V", f"{size}b", "-T", f"{self.vg}/{self.pool}", "-n",
              self.tmp_name], self.label)
        self.created = True
        self.size = size
        _wait_for(self.write_path, self.label)
        # Unprovisioned thin blocks read as zeros; partially written new chunks only
        # do when the pool zeroes them, so without zeroing qemu must write zeros too.
        self.fresh_zero = bool(self.details.get("zeroing", False))

    def commit(self) -> None:
        # lvrename refuses an existing name: it never replaces a volume.
        _run(["lvrename", "-q", self.vg, self.tmp_name, self.name], self.label)
        self.committed = True

    def remove(self) -> None:
        if self.created:
            name = self.name if self.committed else self.tmp_name
            _run(["lvremove", "-q", "-y", f"{self.vg}/{name}"], self.label, check=False)
            self.created = False

    def partial_name(self) -> str | None:
        return f"{self.vg}/{self.tmp_name}"

    def partial_exists(self) -> bool:
        tmp = f"{self.vg}/{self.tmp_name}"
        return _run(["lvs", "--noheadings", "-o", "lv_name", tmp], tmp,
                    check=False).returncode == 0

    def discard_partial(self) -> None:
        if self.partial_exists():
            tmp = f"{self.vg}/{self.tmp_name}"
            _run(["lvremove", "-q", "-y", tmp], tmp)

    def reclaimable(self) -> int:
        # lvs(8): a thin volume's data_percent is the share of its size mapped in the pool, the
        # chunks its removal gives back (unless a thin snapshot shares them: we never make one)
        tmp = f"{self.vg}/{self.tmp_name}"
        out = _run(["lvs", "--noheadings", "--units", "b", "--nosuffix", "--separator", "|",
                    "-o", "lv_size,data_percent", tmp], tmp, check=False)
        try:
            size_s, pct_s = [x.strip() for x in out.stdout.strip().split("|")]
            return int(int(float(size_s)) * float(pct_s or 0) / 100.0) if out.returncode == 0 else 0
        except ValueError:
            return 0


def make_target(kind: str, dest: str, *, allow_qcow2_on_zfs: bool = False,
                volblocksize: str = "16k", overwrite_device: bool = False) -> Target:
    # Device paths are told apart by the filesystem, not the "/dev/" prefix: /dev/shm is
    # a tmpfs directory for files (FileTarget.preflight warns about memory-backed ones).
    if kind == "qcow2":
        if in_device_directory(dest) or (os.path.exists(dest)
                                         and stat.S_ISBLK(os.stat(dest).st_mode)):
            raise InputError("qcow2 needs a file on directory storage, not a device path "
                             "(use --to raw for a block device)", dest)
        return FileTarget("qcow2", dest, allow_qcow2_on_zfs=allow_qcow2_on_zfs)
    if kind == "raw":
        if os.path.exists(dest) and stat.S_ISBLK(os.stat(dest).st_mode):
            return BlockDeviceTarget(dest, overwrite_device=overwrite_device)
        if in_device_directory(dest):
            raise TargetRefused("no such block device", dest)
        return FileTarget("raw", dest)
    if kind == "zvol":
        return ZvolTarget(dest, volblocksize=volblocksize)
    if kind == "lvmthin":
        return LvmThinTarget(dest)
    raise InputError(f"unknown target kind {kind!r} (qcow2, raw, zvol, lvmthin)", "--to")
