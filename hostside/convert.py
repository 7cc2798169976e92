"""Run one conversion: preflight target, create it, qemu-img convert, verify, manifest.

The target is written under a temporary name and renamed to its final name only
after verification; the manifest (written last, atomically) is the record that
the conversion finished. Failure, Ctrl-C, SIGTERM or SIGHUP (an SSH drop) removes
the target this run created; SIGKILL leaves at most a `.partial` /
`guestprep-partial-` volume, never a final-named one, and qemu-img dies with us
(PR_SET_PDEATHSIG). The source is only ever opened read-only by qemu.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import platform
import re
import select
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Callable

from guestprep.errors import ConfigError
from guestprep.handoff import write_exclusive
from hostside import qemu
from hostside.errors import (GuestprepError, InputError, Interrupted, TargetRefused,
                             ToolFailed, VerificationFailed)
from hostside.image import Source
from hostside.storage import Target, rename_noreplace

MANIFEST_SCHEMA = "guestprep.host-manifest/2"  # /2 added audit and handoff
_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")

ProgressFn = Callable[[float], None]


@dataclass
class ConvertOptions:
    compress: bool = False
    verify: bool = True
    manifest: str | None = None      # default: beside the target (files) / cwd (devices)
    coroutines: int = 8
    stall_timeout: float = 600.0     # no progress for this long: kill qemu-img, clean up


def manifest_path(target: Target, explicit: str | None) -> str:
    if explicit:
        return os.path.abspath(explicit)
    if target.is_block:
        name = target.label.replace("/", "_")
        return os.path.abspath(f"{name}.guestprep-manifest.json")
    return target.path + ".guestprep-manifest.json"


def convert_argv(source: Source, target: Target, opts: ConvertOptions) -> list[str]:
    """The qemu-img convert arguments (after `qemu-img`)."""
    dest = qemu.local_spec(target.write_path, target.fmt)
    # Block devices: O_DIRECT (cache=none) keeps the host page cache out of a
    # one-pass copy. Files: writeback, which flushes at the end; qemu-img's
    # convert default (unsafe) never flushes at all.
    cache = "none" if _really_block(target.write_path) else "writeback"
    # Sources are json: definitions (explicit, "backing": null); the target we just
    # created ourselves, so key=value --target-image-opts is enough there.
    args = ["convert", "-p", "--target-image-opts", "-n", "-t", cache, "-S", "4k",
        "-m", str(_coroutines(source, opts))]
    if target.fresh_zero:
        args.append("--target-is-zero")   # skip writing zeros the target already reads
    if opts.compress:
        args.append("-c")
    elif target.fmt == "raw":
        args.append("-W")   # raw has no metadata to keep in order; -W breaks -c
    # several segments (split flat extents) are concatenated by qemu-img in order
    return args + [seg.spec.image_arg() for seg in source.segments] + [dest.image_opts()]


def _coroutines(source: Source, opts: ConvertOptions) -> int:
    # qemu 7.2's curl driver can lose a completion when several requests are in
    # flight and then waits forever (seen ~1 run in 10 here); one coroutine
    # avoided it in 40 of 40 runs, and the driver still reads ahead on its own.
    if any(seg.spec.is_remote for seg in source.segments):
        return 1
    return opts.coroutines


def _really_block(path: str) -> bool:
    import stat
    try:
        return stat.S_ISBLK(os.stat(path).st_mode)
    except OSError:
        return False


class _Terminate(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminate()


# SIGHUP is what an SSH drop delivers: treated like SIGTERM (stop, clean up, exit 130).
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@dataclass
class Prepared:
    """A conversion whose checks passed and which has created nothing yet."""

    source: Source
    target: Target
    opts: ConvertOptions
    measured: dict
    manifest_path: str
    timings: dict


def prepare(source: Source, target: Target, opts: ConvertOptions) -> Prepared:
    """Every check that can fail before anything is created: size, space, target, manifest."""
    if opts.compress and target.fmt != "qcow2":
        raise InputError("--compress only applies to qcow2 targets", "--compress")
    t0 = time.monotonic()
    # qcow2 measure = allocated data (+metadata): what any sparse target really uses.
    measured = _measure(source)
    required = int(measured["required"])
    target.preflight(source.virtual_size, required)
    mpath = manifest_path(target, opts.manifest)
    check_manifest_path(mpath)
    return Prepared(source, target, opts, measured, mpath,
                    {"preflight_s": round(time.monotonic() - t0, 3)})


def check_manifest_path(mpath: str) -> None:
    """Every output path is checked before the conversion, not after it."""
    if os.path.lexists(mpath):
        raise TargetRefused("manifest already exists; refusing to overwrite it", mpath)
    if os.path.lexists(mpath + ".partial"):
        raise TargetRefused("a partial manifest from an interrupted run is in the way: "
                            f"remove it and rerun, e.g. rm -- '{mpath}.partial'",
                            mpath + ".partial")
    parent = os.path.dirname(mpath) or "."
    if not os.path.isdir(parent):
        raise TargetRefused("the manifest's directory does not exist", parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TargetRefused("the manifest's directory is not writable", parent)


def execute(prep: Prepared, progress: ProgressFn | None = None,
            extra: dict | None = None) -> dict:
    """Create the target, convert, verify, write the manifest (`extra` adds sections)."""
    source, target, opts, timings = prep.source, prep.target, prep.opts, dict(prep.timings)
    mpath = prep.manifest_path
    old_handlers = {sig: signal.signal(sig, _on_sigterm) for sig in _STOP_SIGNALS}
    state = {"writing": False}
    try:
        t1 = time.monotonic()
        target.create(source.virtual_size)
        timings["create_s"] = round(time.monotonic() - t1, 3)
        args = convert_argv(source, target, opts)
        t2 = time.monotonic()
        state["writing"] = True
        _run_with_progress(args, source, progress, opts.stall_timeout)
        timings["convert_s"] = round(time.monotonic() - t2, 3)
        verification = {"performed": False}
        if opts.verify:
            t3 = time.monotonic()
            verification = verify(source, target)
            timings["verify_s"] = round(time.monotonic() - t3, 3)
        t4 = time.monotonic()
        digest = target_digest(target.write_path)
        timings["digest_s"] = round(time.monotonic() - t4, 3)
        # Only a verified target gets its final name; the manifest follows it.
        target.commit()
        manifest = _manifest(source, target, args, prep.measured, timings, verification)
        manifest["target"]["digest"] = digest
        manifest.update(extra or {})
        _write_manifest(mpath, manifest)
        manifest["manifest_path"] = mpath
        return manifest
    except (KeyboardInterrupt, _Terminate):
        _cleanup(target)
        raise Interrupted("conversion interrupted; " + _cleanup_note(target, state["writing"]),
                          target.label) from None
    except GuestprepError as exc:
        _cleanup(target)
        exc.message += "; " + _cleanup_note(target, state["writing"])
        raise
    except BaseException:
        _cleanup(target)
        raise
    finally:
        for sig, handler in old_handlers.items():
            signal.signal(sig, handler)


def _measure(source: Source) -> dict:
    if source.data_estimate is not None:
        # data + qcow2 L2/refcount metadata for the whole virtual size + headroom
        meta = source.virtual_size // 8192 + 2 * 1024 * 1024
        return {"required": source.data_estimate + meta, "method": "vmdk grain tables"}
    total = {"required": 0, "fully-allocated": 0, "method": "qemu-img measure"}
    for seg in source.segments:
        m = qemu.measure(seg.spec, "qcow2")
        for k in ("required", "fully-allocated"):
            total[k] += int(m.get(k, 0))
    return total


def _cleanup(target: Target) -> None:
    try:
        target.remove()
    except Exception:  # the original error matters more; the note says what is left
        pass


def _cleanup_note(target: Target, writing: bool) -> str:
    if target.kind == "raw" and target.is_block:
        return (f"the device {target.path} may hold a partial copy" if writing
                else "the device was not written")
    if target.created:
        name = target.path if target.committed else target.write_path
        return f"could not remove the partial target {name}: remove it by hand"
    return "no target left behind"


def _run_with_progress(args: list[str], source: Source, progress: ProgressFn | None,
                       stall_timeout: float) -> None:
    # stderr goes to a file: a pipe we do not drain while reading progress from
    # stdout would block qemu-img once it fills (e.g. curl retry messages).
    what = source.spec.label
    errfile = tempfile.TemporaryFile()
    with qemu.secret_objects(seg.spec for seg in source.segments) as (objects, fds):
        proc = subprocess.Popen(qemu.with_objects(args, objects), stdout=subprocess.PIPE,
                                stderr=errfile, stdin=subprocess.DEVNULL, pass_fds=fds,
                                preexec_fn=qemu.die_with_parent)
    last = -1.0
    last_change = time.monotonic()
    buf = b""
    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], min(5.0, stall_timeout))
            if not ready:
                if time.monotonic() - last_change > stall_timeout:
                    raise ToolFailed(f"qemu-img made no progress for {stall_timeout:.0f}s "
                                     f"(stalled at {max(last, 0):.2f}%); stopped it", what)
                continue
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            buf += chunk
            parts = re.split(rb"[\r\n]", buf)
            buf = parts.pop()
            for part in parts:
                m = _PROGRESS_RE.search(part)
                if m:
                    pct = float(m.group(1))
                    if pct != last:
                        last = pct
                        last_change = time.monotonic()
                        if progress is not None:
                            progress(pct)
        rc = proc.wait()
        errfile.seek(0)
        stderr = errfile.read().decode("utf-8", errors="replace")
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    finally:
        errfile.close()
    if rc != 0 and qemu.curl_driver_missing(stderr):
        raise qemu.ToolMissing(qemu.CURL_PACKAGE_HINT, what)
    if rc != 0:
        lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
        msg = (lines[-1] if lines else f"exit code {rc}").removeprefix("qemu-img: ")
        raise ToolFailed(f"qemu-img convert failed: {msg}", what)


def verify(source: Source, target: Target) -> dict:
    """qemu-img compare (content, allocation-aware) and qemu-img check for qcow2."""
    dest = qemu.local_spec(target.write_path, target.fmt)
    result: dict = {"performed": True}
    if target.fmt == "qcow2":
        proc = qemu.run(["check", "--output=json", dest.image_arg()],
                        what=target.path, ok_codes=(0, 1, 2, 3), timeout=None)
        try:
            check = json.loads(proc.stdout) if proc.stdout.strip() else {}
        except json.JSONDecodeError:
            check = {}
        result["check"] = {"rc": proc.returncode,
                           "corruptions": check.get("corruptions", 0),
                           "leaks": check.get("leaks", 0)}
        if proc.returncode != 0 or check.get("corruptions"):
            result["ok"] = False
            raise VerificationFailed(f"qemu-img check reports a damaged qcow2 "
                                     f"(rc {proc.returncode})", target.path)
    single = len(source.segments) == 1
    for seg in source.segments:
        # Each segment against the same window of the target; a single segment
        # against the whole target (compare then also checks the target's tail).
        other = dest if single else qemu.window_spec(dest, seg.offset, seg.size)
        proc = qemu.run(["compare", seg.spec.image_arg(), other.image_arg()],
                        what=target.path, specs=[seg.spec], ok_codes=(0, 1), timeout=None)
        result["compare"] = {"rc": proc.returncode, "segments": len(source.segments),
                             "message": proc.stdout.strip()[-200:]}
        if proc.returncode == 1:
            where = "" if single else f" (segment at byte {seg.offset})"
            raise VerificationFailed(f"target differs from source{where}: "
                                     f"{proc.stdout.strip()}", target.path)
    result["ok"] = True
    return result


def _allocation(target: Target) -> int | None:
    try:
        return os.stat(target.path).st_blocks * 512 if not target.is_block else None
    except OSError:
        return None


def _qemu_version() -> str:
    proc = subprocess.run([qemu.tool("qemu-img"), "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.stdout else ""


def _manifest(source: Source, target: Target, args: list[str], measured: dict,
              timings: dict, verification: dict) -> dict:
    return {
        "schema": MANIFEST_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": platform.node(),
        "tool": _qemu_version(),
        "source": source.to_dict(),
        "target": dict(target.to_dict(), allocated_bytes=_allocation(target)),
        "measure": measured,
        # The argv is secret-free: a cookie is only referenced by its object id and
        # read by qemu from a pipe (--object secret,file=/dev/fd/N, added at run time).
        "command": ["qemu-img"] + args,
        "timings": timings,
        "verification": verification,
    }


def _write_manifest(path: str, data: dict) -> None:
    """Complete or absent, never replacing another one (``write_exclusive``)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"  # serialised first: no half file
    try:
        write_exclusive(path, text, mode=0o640)
    except ConfigError as exc:
        raise TargetRefused(f"cannot write the manifest: {exc.message}", path) from None
    except OSError as exc:
        raise TargetRefused(f"cannot write the manifest: {exc.strerror}", path) from None


DIGEST_ALGORITHM = "sha256-data-runs/1"
_DIGEST_CHUNK = 4 << 20


def target_digest(path: str) -> dict:
    """sha256 over the target as stored, for finalize to recognise the volume.

    Files: every data run (SEEK_DATA/SEEK_HOLE) as b"<offset>+<length>\\n" followed by
    its bytes; holes are skipped, so a sparse 1 TiB disk costs its data, not its
    size. Block devices (zvol, LV): one run 0+size, every byte. Recompute it with
    this function; any write to the volume changes it.
    """
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        runs: list[tuple[int, int]] = []
        if stat_is_regular(fd):
            pos = 0
            while pos < size:
                try:
                    start = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError as exc:
                    if exc.errno == errno.ENXIO:   # only a hole is left
                        break
                    raise
                end = os.lseek(fd, start, os.SEEK_HOLE)
                runs.append((start, end - start))
                pos = end
        else:
            runs.append((0, size))
        for start, length in runs:
            h.update(f"{start}+{length}\n".encode())
            done = 0
            while done < length:
                chunk = os.pread(fd, min(_DIGEST_CHUNK, length - done), start + done)
                if not chunk:
                    break
                h.update(chunk)
                done += len(chunk)
    finally:
        os.close(fd)
    return {"algorithm": DIGEST_ALGORITHM, "sha256": h.hexdigest(), "size": size}


def stat_is_regular(fd: int) -> bool:
    import stat
    return stat.S_ISREG(os.fstat(fd).st_mode)
