"""Running qemu-img: argv lists only, images always given as explicit block options.

Every source image is passed as a `json:{...}` block definition that we build
(driver, file.driver, file.filename...), never a bare file name: qemu treats a
bare name starting with "json:" or "https:" as a protocol, so a crafted file
name could redirect the read. JSON (rather than --image-opts key=value) is used
because only JSON can say `"backing": null`: qemu then opens no backing file at
all (qapi/block-core.json, BlockdevOptionsGenericCOWFormat: "null disables the
backing file entirely"). The key=value form can only say `backing=` (deprecated
in qemu 7.2, warns on every run). A chain we validated is spelled out as
explicit `backing` nodes, so qemu never follows a name from inside an image.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import re
import signal
import subprocess
from hostside.record import dataclass, field

TYPE_CHECKING = False
if TYPE_CHECKING:      # typing is not imported at run time (start-up cost)
    from typing import Iterable, Iterator

from hostside.errors import InputError, ToolFailed, ToolMissing
from hostside.tmpfiles import which


def tool(name: str) -> str:
    path = which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed or not on PATH (Debian/Proxmox package: "
                          f"{PACKAGE_OF.get(name, name)})", name)
    return path


# Debian builds qemu's curl driver as a module shipped in qemu-block-extra; Proxmox VE's
# pve-qemu-kvm has it built in. Without it qemu says "Unknown driver 'https'".
CURL_PACKAGE_HINT = ("this node's qemu-img has no https (curl) block driver: on Debian "
                     "install the package qemu-block-extra (apt-get install qemu-block-extra); "
                     "Proxmox VE nodes have it built into pve-qemu-kvm")

PACKAGE_OF = {"qemu-img": "qemu-utils", "zfs": "zfsutils-linux", "zpool": "zfsutils-linux",
              "lvcreate": "lvm2", "lvs": "lvm2", "lvremove": "lvm2", "lvrename": "lvm2"}


def escape_opt(value: str) -> str:
    """qemu option syntax: a literal comma is written twice."""
    return value.replace(",", ",,")


@dataclass
class ImageSpec:
    """How qemu opens one image. Holds no secret values, only secret object ids."""

    opts: dict[str, str]
    label: str                       # for messages and manifests (secret-free)
    # secret object id -> value; handed to qemu through a pipe, never a file or argv
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    is_remote: bool = False

    @property
    def format(self) -> str:
        return self.opts["driver"]

    def image_opts(self) -> str:
        """key=value form (targets only: --target-image-opts cannot take json:)."""
        return ",".join(f"{k}={escape_opt(str(v))}" for k, v in self.opts.items())

    def tree(self) -> dict:
        """The options as nested block nodes; every copy-on-write node without an
        explicit backing gets `"backing": null` (qemu opens no backing file)."""
        root: dict = {}
        for key, value in self.opts.items():
            node = root
            parts = key.split(".")
            for part in parts[:-1]:
                node = node.setdefault(part, {})
            node[parts[-1]] = str(value)
        _no_implicit_backing(root)
        return root

    def without_backing(self) -> "ImageSpec":
        """This image alone (qemu-img info opens with BDRV_O_NO_BACKING and then refuses
        explicit backing options)."""
        opts = {k: v for k, v in self.opts.items() if not re.match(r"^(file\.)*backing\.", k)}
        return ImageSpec(opts, self.label, dict(self.secrets), self.is_remote)

    def image_arg(self) -> str:
        """The image as a `json:` definition (what every qemu-img call gets)."""
        return "json:" + json.dumps(self.tree(), sort_keys=True, separators=(",", ":"))


# Formats whose images can name a backing file inside them (qemu's GenericCOWFormat).
COW_DRIVERS = ("qcow2", "qed", "vmdk", "qcow")


def _no_implicit_backing(node: dict) -> None:
    for value in node.values():
        if isinstance(value, dict):
            _no_implicit_backing(value)
    if node.get("driver") in COW_DRIVERS and "backing" not in node:
        node["backing"] = None



def local_spec(path: str, fmt: str, label: str | None = None,
               backing: ImageSpec | None = None) -> ImageSpec:
    """`backing`: the validated image below this one (a chain); None: no backing at all."""
    proto = "host_device" if _is_block(path) else "file"
    opts = {"driver": fmt, "file.driver": proto, "file.filename": path}
    secrets: dict[str, str] = {}
    if backing is not None:
        opts.update({f"backing.{k}": v for k, v in backing.opts.items()})
        secrets.update(backing.secrets)
    return ImageSpec(opts, label or path, secrets)


def window_spec(inner: ImageSpec, offset: int, size: int, label: str | None = None
                ) -> ImageSpec:
    """A byte window [offset, offset+size) of another image, as a raw image."""
    opts = {"driver": "raw", "offset": str(offset), "size": str(size)}
    opts.update({f"file.{k}": v for k, v in inner.opts.items()})
    return ImageSpec(opts, label or inner.label, dict(inner.secrets), inner.is_remote)


def _is_block(path: str) -> bool:
    import stat
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


def _short_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.strip().splitlines() if ln.strip()]
    msg = lines[-1] if lines else "no error output"
    return msg.removeprefix("qemu-img: ")


def curl_driver_missing(stderr: str) -> bool:
    return "Unknown driver 'https'" in stderr or "Unknown protocol 'https'" in stderr


def https_driver_missing() -> bool:
    """True when this qemu-img cannot open https:// at all (no curl block driver).

    `qemu-img --help` lists https even when Debian's module is not installed, so ask
    qemu to open a URL on a closed local port: with the driver it fails to connect,
    without it it says "Unknown driver 'https'".
    """
    spec = ImageSpec({"driver": "raw", "file.driver": "https",
                      "file.url": "https://127.0.0.1:1/probe", "file.timeout": "5"}, "probe")
    proc = subprocess.run([tool("qemu-img"), "info", spec.image_arg()], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=60)
    return curl_driver_missing(proc.stderr)


PR_SET_PDEATHSIG = 1
_libc = None


def die_with_parent() -> None:
    """preexec_fn: the kernel sends SIGKILL to this child when its parent dies.

    Without it a `kill -9` of guestprep-host leaves qemu-img running as an orphan
    that finishes writing a target nobody verifies or cleans up.
    """
    global _libc
    parent = os.getppid()
    try:
        if _libc is None:
            _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the process-group cleanup still applies
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


@contextlib.contextmanager
def secret_objects(specs: Iterable[ImageSpec]) -> Iterator[tuple[list[str], tuple[int, ...]]]:
    """`--object secret,...` args reading each secret from an inherited pipe.

    The value sits in a pipe buffer only (secrets are small): not in argv (which
    every user sees in /proc/*/cmdline), not in a file a crash could leave behind.
    """
    args: list[str] = []
    fds: list[int] = []
    seen: set[str] = set()
    try:
        for spec in specs:
            for sid, value in spec.secrets.items():
                if sid in seen:
                    continue
                seen.add(sid)
                r, w = os.pipe()
                fds.append(r)
                try:
                    os.write(w, value.encode("utf-8"))
                finally:
                    os.close(w)
                args += ["--object", f"secret,id={sid},file=/dev/fd/{r}"]
        yield args, tuple(fds)
    finally:
        for fd in fds:
            os.close(fd)


def with_objects(args: list[str], objects: list[str]) -> list[str]:
    """Insert --object args right after the qemu-img subcommand."""
    return [tool("qemu-img"), args[0]] + objects + args[1:]


def run(args: list[str], *, what: str, timeout: float | None = 600, error=ToolFailed,
        specs: Iterable[ImageSpec] = (), ok_codes: tuple[int, ...] = (0,)
        ) -> subprocess.CompletedProcess:
    with secret_objects(specs) as (objects, fds):
        try:
            proc = subprocess.run(with_objects(args, objects), capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL, pass_fds=fds,
                                  preexec_fn=die_with_parent)
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"qemu-img {args[0]} timed out after {timeout}s", what) from None
    if proc.returncode not in ok_codes and curl_driver_missing(proc.stderr):
        raise ToolMissing(CURL_PACKAGE_HINT, what)
    if proc.returncode not in ok_codes:
        raise error(f"qemu-img {args[0]} failed: {_short_error(proc.stderr)}", what)
    return proc


def info(spec: ImageSpec) -> dict:
    """`qemu-img info` of this image alone (never its backing chain)."""
    spec = spec.without_backing()
    args = ["info", "--output=json"]
    proc = run(args + [spec.image_arg()], what=spec.label, error=InputError, specs=[spec])
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ToolFailed("qemu-img info printed something that is not JSON", spec.label) from None


def measure(spec: ImageSpec, out_fmt: str) -> dict:
    args = ["measure", "--output=json", "-O", out_fmt]
    proc = run(args + [spec.image_arg()], what=spec.label, error=InputError, specs=[spec])
    return json.loads(proc.stdout)


class Reader:
    """Reads byte ranges of any image qemu can open (qemu-img dd into a private file)."""

    def __init__(self, spec: ImageSpec, virtual_size: int):
        self.spec = spec
        self.size = virtual_size
        import tempfile   # not on a conversion's path (hostside/tmpfiles.py)

        self._dir = tempfile.mkdtemp(prefix="guestprep-read-")
        self._cache: dict[tuple[int, int], bytes] = {}

    def read(self, offset: int, length: int) -> bytes:
        """Bytes at [offset, offset+length), short at the end of the image."""
        if offset < 0 or length <= 0 or offset >= self.size:
            return b""
        length = min(length, self.size - offset)
        key = (offset, length)
        if key in self._cache:
            return self._cache[key]
        # dd works in whole blocks: read the covering 512-byte sectors.
        first, last = offset // 512, -(-(offset + length) // 512)
        out = os.path.join(self._dir, "chunk")
        # qemu-img dd counts `count` from the start of the image, not from `skip`.
        args = ["dd", "bs=512", f"skip={first}", f"count={last}", "-O", "raw",
                "if=" + self.spec.image_arg(), "of=" + out]
        run(args, what=self.spec.label, error=InputError, specs=[self.spec])
        with open(out, "rb") as f:
            data = f.read()
        os.unlink(out)
        data = data[offset - first * 512: offset - first * 512 + length]
        self._cache[key] = data
        return data

    def close(self) -> None:
        import shutil

        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
