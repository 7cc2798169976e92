"""Running qemu-img: argv lists only, images always opened through --image-opts.

Every image is passed as explicit block options (driver=..., file.filename=...)
rather than a bare file name: qemu treats a bare name starting with "json:" or
"https:" as a protocol, so a crafted file name could redirect the read.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Iterable, Iterator

from hostside.errors import InputError, ToolFailed, ToolMissing


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(f"{name} is not installed or not on PATH (Debian/Proxmox package: "
                          f"{PACKAGE_OF.get(name, name)})", name)
    return path


PACKAGE_OF = {"qemu-img": "qemu-utils", "zfs": "zfsutils-linux", "zpool": "zfsutils-linux",
              "lvcreate": "lvm2", "lvs": "lvm2", "lvremove": "lvm2"}


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
        return ",".join(f"{k}={escape_opt(str(v))}" for k, v in self.opts.items())



def local_spec(path: str, fmt: str, label: str | None = None) -> ImageSpec:
    proto = "host_device" if _is_block(path) else "file"
    return ImageSpec({"driver": fmt, "file.driver": proto, "file.filename": path},
                     label or path)


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
                                  timeout=timeout, stdin=subprocess.DEVNULL, pass_fds=fds)
        except subprocess.TimeoutExpired:
            raise ToolFailed(f"qemu-img {args[0]} timed out after {timeout}s", what) from None
    if proc.returncode not in ok_codes:
        raise error(f"qemu-img {args[0]} failed: {_short_error(proc.stderr)}", what)
    return proc


def info(spec: ImageSpec, *, backing_chain: bool = False) -> dict:
    args = ["info", "--output=json"]
    if backing_chain:
        args.append("--backing-chain")
    proc = run(args + ["--image-opts", spec.image_opts()], what=spec.label, error=InputError,
               specs=[spec])
    try:
        return json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise ToolFailed("qemu-img info printed something that is not JSON", spec.label) from None


def measure(spec: ImageSpec, out_fmt: str) -> dict:
    args = ["measure", "--output=json", "-O", out_fmt]
    proc = run(args + ["--image-opts", spec.image_opts()], what=spec.label, error=InputError,
               specs=[spec])
    return json.loads(proc.stdout)


class Reader:
    """Reads byte ranges of any image qemu can open (qemu-img dd into a private file)."""

    def __init__(self, spec: ImageSpec, virtual_size: int):
        self.spec = spec
        self.size = virtual_size
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
        args = ["dd", "--image-opts", "bs=512", f"skip={first}", f"count={last}", "-O", "raw",
                "if=" + self.spec.image_opts(), "of=" + out]
        run(args, what=self.spec.label, error=InputError, specs=[self.spec])
        with open(out, "rb") as f:
            data = f.read()
        os.unlink(out)
        data = data[offset - first * 512: offset - first * 512 + length]
        self._cache[key] = data
        return data

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> "Reader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
