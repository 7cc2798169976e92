"""Run one conversion: preflight target, create it, qemu-img convert, verify, manifest.

The target is written under a temporary name and renamed to its final name only
after verification; the manifest (written last, atomically) is the record that
the conversion finished. Failure, Ctrl-C, SIGTERM or SIGHUP (an SSH drop) removes
the target this run created; SIGKILL leaves at most a `.partial` /
`guestprep-partial-` volume, never a final-named one, and qemu-img dies with us
(PR_SET_PDEATHSIG). The source is only ever opened read-only by qemu.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import time
from hostside.record import dataclass, field

from hostside import claim, qemu, tmpfiles
from hostside.errors import (GuestprepError, InputError, Interrupted, TargetRefused,
                             ToolFailed)
from hostside.image import Source
from hostside.phases import Clock
from hostside.storage import Target

TYPE_CHECKING = False
if TYPE_CHECKING:      # typing is not imported at run time (start-up cost of every command)
    from typing import Callable

    from hostside import verify as verify_mod


def __getattr__(name: str):
    """convert.target_digest / DIGEST_ALGORITHM (finalize imports them from here) without
    importing hashlib and the verification for a --no-verify run (PEP 562)."""
    if name in ("target_digest", "DIGEST_ALGORITHM", "KNOWN_DIGESTS"):
        from hostside import verify
        return getattr(verify, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

MANIFEST_SCHEMA = "guestprep.host-manifest/2"  # /2 added audit and handoff
_PROGRESS_RE = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
# Manifests of targets that are not files (zvol, LV, device) go here unless --manifest
# or --manifest-dir says otherwise: a state directory of the node, not the working one.
MANIFEST_DIR_ENV = "GUESTPREP_HOST_MANIFEST_DIR"
DEFAULT_MANIFEST_DIR = "/var/lib/guestprep/manifests"
# A raw view is summarised in the manifest's command beyond this many source arguments.
MAX_LISTED_SOURCES = 16

ProgressFn = "Callable[[float], None]"


@dataclass
class ConvertOptions:
    compress: bool = False
    verify: bool = True
    manifest: str | None = None      # default: beside the target (files) / manifest_dir
    manifest_dir: str | None = None  # for zvol/LV/device targets (default: env, then /var/lib)
    coroutines: int = 8
    stall_timeout: float = 600.0     # no progress for this long: kill qemu-img, clean up
    discard_stale_partial: bool = False   # a killed run's partial, proved by its claim: remove it


def manifest_dir(explicit: str | None) -> tuple[str, bool]:
    """(directory for non-file targets' manifests, whether it was configured)."""
    if explicit:
        return os.path.abspath(explicit), True
    env = os.environ.get(MANIFEST_DIR_ENV)
    if env:
        return os.path.abspath(env), True
    return DEFAULT_MANIFEST_DIR, False


def manifest_path(target: Target, explicit: str | None, directory: str | None = None) -> str:
    if explicit:
        return os.path.abspath(explicit)
    if target.is_block:
        name = target.label.strip("/").replace("/", "_")
        return os.path.join(manifest_dir(directory)[0], f"{name}.guestprep-manifest.json")
    return target.path + ".guestprep-manifest.json"


def convert_argv(source: Source, target: Target, opts: ConvertOptions) -> list[str]:
    """The qemu-img convert arguments (after `qemu-img`)."""
    dest = qemu.local_spec(target.write_path, target.fmt)
    cache = target_cache(target)
    sources = [seg.spec.image_arg() for seg in source.segments]
    common = ["convert", "-p", "-t", cache, "-S", "4k", "-m", str(_coroutines(source, opts))]
    if getattr(target, "formatted_by_convert", False):
        # a qcow2 file we claimed (O_EXCL, empty): qemu-img formats it itself. Its name is
        # absolute, so qemu reads no protocol prefix in it (block.c path_has_protocol stops
        # at the first "/") and it cannot be "json:...".
        size = getattr(target, "cluster_size", None)
        return (common + ["-O", "qcow2"] + (["-o", f"cluster_size={size}"] if size else [])
                + (["-c"] if opts.compress else []) + sources + [target.write_path])
    # Sources are json: definitions (explicit, "backing": null); the target we just
    # created ourselves, so key=value --target-image-opts is enough there.
    args = common[:2] + ["--target-image-opts", "-n"] + common[2:]
    if target.fresh_zero:
        args.append("--target-is-zero")   # skip writing zeros the target already reads
    if opts.compress:
        args.append("-c")
    elif target.fmt == "raw":
        args.append("-W")   # raw has no metadata to keep in order; -W breaks -c
    # several segments (split flat extents) are concatenated by qemu-img in order
    return args + sources + [dest.image_opts()]


def target_cache(target: Target) -> str:
    """qemu's cache mode for the target.

    Block devices: `none` (O_DIRECT) keeps the host page cache out of a one-pass copy.
    Files: `unsafe`, and `flush_target` fsyncs the file once after qemu-img exited,
    before anything reads or renames it. `writeback` would flush at the end too, but
    also whenever qemu's qcow2 driver allocates an L2 table (block/qcow2-cluster.c
    l2_allocate flushes the refcount and L2 caches: three fdatasyncs per table, one
    table per 512 MiB of the virtual disk that holds data): 386 fdatasyncs for 1 GiB
    scattered over 64 GiB, 26 over 4 GiB, the cost that grew with the virtual size.
    A crash before our fsync leaves only the `.partial` name, never a final one.
    """
    return "none" if _really_block(target.write_path) else "unsafe"


def flush_target(target: Target) -> None:
    """Make what qemu-img wrote durable: one fsync of the file (see `target_cache`)."""
    if target_cache(target) != "unsafe":
        return           # O_DIRECT writes, and qemu-img flushes a `none` target itself
    try:
        fd = os.open(target.write_path, os.O_RDONLY)
    except OSError as exc:
        raise ToolFailed(f"cannot open the target to flush it: {exc.strerror}",
                         target.write_path) from None
    try:
        os.fsync(fd)
    except OSError as exc:
        raise ToolFailed(f"flushing the target failed: {exc.strerror}",
                         target.write_path) from None
    finally:
        os.close(fd)


class Flusher:
    """flush_target in a thread, so that the verification reads (from the page cache) the
    bytes the fsync is writing while it writes them; `wait()` returns when the target is
    durable and raises the flush's error. Nothing is renamed or recorded before it."""

    def __init__(self, target: Target):
        import threading
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(target,), daemon=True)
        self.thread.start()

    def _run(self, target: Target) -> None:
        try:
            flush_target(target)
        except BaseException as exc:   # handed to wait(), in the main thread
            self.error = exc

    def wait(self) -> None:
        self.thread.join()
        if self.error is not None:
            raise self.error


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
Terminated = _Terminate   # what the handlers below raise (the CLI catches it too)


@contextlib.contextmanager
def stop_signals():
    """SIGTERM/SIGHUP raise `Terminated` in the main thread while inside."""
    old = {sig: signal.signal(sig, _on_sigterm) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


@dataclass
class Prepared:
    """A conversion whose checks passed and which has created nothing yet."""

    source: Source
    target: Target
    opts: ConvertOptions
    measured: dict
    manifest_path: str
    timings: dict
    clock: Clock = field(default_factory=Clock)
    stale: dict | None = None   # the claim of a killed run whose partial execute() removes first


def prepare(source: Source, target: Target, opts: ConvertOptions,
            clock: Clock | None = None) -> Prepared:
    """Every check that can fail before anything is created: size, space, target, manifest."""
    clock = clock or Clock()
    with clock.phase("space_check"):
        if opts.compress and target.fmt != "qcow2":
            raise InputError("--compress only applies to qcow2 targets", "--compress")
        # qcow2 measure = allocated data (+metadata): what any sparse target really uses.
        measured = _measure(source)
        required = int(measured["required"])
        mpath = manifest_path(target, opts.manifest, opts.manifest_dir)
        stale = judge_claim(target, mpath, opts.discard_stale_partial)
        target.preflight(source.virtual_size, required)
        if target.is_block and not opts.manifest:
            _ensure_default_dir(os.path.dirname(mpath), opts.manifest_dir)
        check_manifest_path(mpath)
    return Prepared(source, target, opts, measured, mpath, clock.timings, clock, stale)


def judge_claim(target: Target, mpath: str, discard: bool) -> dict | None:
    """The claim beside the manifest (hostside/claim.py), before anything is checked or created:
    a live owner refuses; a killed owner's partial is removed by execute() when ``discard`` says
    so (returned), and named otherwise. Nothing is removed here: a dry run prepares too."""
    if target.partial_name() is None:
        return None
    doc = claim.read(mpath)
    if doc is None:
        return None
    where = claim.path_for(mpath)
    if doc.get("empty"):
        return doc                       # its run created nothing: execute() drops the file
    if claim.owner_alive(doc):
        raise TargetRefused(f"another conversion into {target.label} is running "
                            f"({claim.describe(doc)})", where)
    if doc["partial"] != target.partial_name():
        raise TargetRefused(f"a killed conversion under this manifest path wrote "
                            f"{doc['partial']}, not this target's {target.partial_name()}: "
                            "remove that and this claim by hand", where)
    if not target.partial_exists():
        return doc
    if not discard:
        raise TargetRefused(f"a partial target from an interrupted run of this conversion "
                            f"({claim.describe(doc)}, no longer running) is in the way: it was "
                            "never verified; rerun with --discard-stale-partial to remove it first",
                            target.partial_name())
    target.discarding_partial = True
    return doc


def _discard_stale(prep: Prepared) -> dict | None:
    doc, target = prep.stale, prep.target
    if doc is None:
        return None
    if doc.get("empty"):
        claim.release(prep.manifest_path)
        return None
    return claim.discard(prep.manifest_path, target, doc)


def _ensure_default_dir(directory: str, explicit: str | None) -> None:
    """The built-in manifest directory is made on first use (a node's state directory,
    like a package's /var/lib); a configured one must exist."""
    if manifest_dir(explicit)[1] or os.path.isdir(directory):
        return
    try:
        os.makedirs(directory, 0o750, exist_ok=True)
    except OSError as exc:
        raise TargetRefused(f"cannot create the manifest directory ({exc.strerror}); "
                            f"pass --manifest-dir or set {MANIFEST_DIR_ENV}", directory) from None


def check_manifest_path(mpath: str) -> None:
    """Every output path is checked before the conversion, not after it. A temporary
    manifest left by a killed run has a unique name and never blocks a retry."""
    if os.path.lexists(mpath):
        raise TargetRefused("manifest already exists; refusing to overwrite it", mpath)
    parent = os.path.dirname(mpath) or "."
    if not os.path.isdir(parent):
        raise TargetRefused("the manifest's directory does not exist", parent)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TargetRefused("the manifest's directory is not writable", parent)


def execute(prep: Prepared, progress: ProgressFn | None = None,
            extra: dict | None = None) -> dict:
    """Create the target, convert, verify, write the manifest (`extra` adds sections)."""
    source, target, opts, clock = prep.source, prep.target, prep.opts, prep.clock
    if opts.verify:
        from hostside import verify as verify_mod
    if progress is not None and clock.reporter is None:
        clock.reporter = progress
    mpath = prep.manifest_path
    state = {"writing": False}
    flusher: Flusher | None = None
    version: subprocess.Popen | None = None
    source_map: verify_mod.SourceMap | None = None
    claimed = False
    try:
        with stop_signals():
            with clock.phase("convert"):
                discarded = _discard_stale(prep)
                if target.partial_name() is not None:
                    claim.write(mpath, target.kind, target.partial_name(), target.label)
                    claimed = True
                target.create(source.virtual_size)
                args = convert_argv(source, target, opts)
                side: dict = {}

                def alongside() -> None:
                    # qemu-img's version for the manifest, and qemu's own map of the source
                    # for the verification, are asked for while the copy runs (after it
                    # started: the copy is the first child).
                    side["version"] = _start_version()
                    if opts.verify and not source.view_segments and verify_mod.can_map(source):
                        side["map"] = verify_mod.SourceMap(source.spec)

                state["writing"] = True
                try:
                    _run_with_progress(args, source, progress, opts.stall_timeout, alongside)
                finally:
                    version, source_map = side.get("version"), side.get("map")
                flusher = Flusher(target)
                if not opts.verify:
                    flusher.wait()
            verification: dict = {"performed": False}
            digest = None
            if opts.verify:
                with clock.phase("verify"):
                    # compared and hashed while the fsync writes the same bytes out
                    verification, digest = verify_mod.verify(source, target, source_map,
                                                             flushed=flusher.wait)
                    source_map = None
                    flusher.wait()
            with clock.phase("manifest"):
                # Only a verified target gets its final name; the manifest follows it.
                target.commit()
                manifest = _manifest(source, target, args, prep.measured, clock.timings,
                                     verification, _finish_version(version))
                version = None
                manifest["target"]["digest"] = digest
                if digest is None:
                    manifest["target"]["digest_note"] = ("not computed: --no-verify (finalize "
                                                         "attaches only verified volumes)")
                if discarded:
                    manifest["discarded_partial"] = discarded
                manifest.update(extra or {})
                _write_manifest(mpath, manifest)
                if claimed:
                    claim.release(mpath)
            manifest["timings"] = dict(clock.timings)
            manifest["manifest_path"] = mpath
            return manifest
    except (KeyboardInterrupt, _Terminate):
        _join(flusher)
        _cleanup(target, mpath if claimed else None)
        raise Interrupted("conversion interrupted; " + _cleanup_note(target, state["writing"]),
                          target.label) from None
    except GuestprepError as exc:
        _join(flusher)
        _cleanup(target, mpath if claimed else None)
        exc.message += "; " + _cleanup_note(target, state["writing"])
        raise
    except BaseException:
        _join(flusher)
        _cleanup(target, mpath if claimed else None)
        raise
    finally:
        if source_map is not None:
            source_map.close()
        if version is not None:
            version.kill()
            version.wait()


def _join(flusher: Flusher | None) -> None:
    """Before the target is removed: its fsync ends (an error matters less than the one
    being handled)."""
    if flusher is not None:
        flusher.thread.join()


def _start_version() -> subprocess.Popen:
    return subprocess.Popen([qemu.tool("qemu-img"), "--version"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True,
                            preexec_fn=qemu.die_with_parent)


def _finish_version(proc: subprocess.Popen | None) -> str:
    if proc is None:
        return ""
    out, _ = proc.communicate()
    return out.splitlines()[0] if out else ""


def _measure(source: Source) -> dict:
    if source.data_estimate is not None:
        # data + qcow2 L2/refcount metadata for the whole virtual size + headroom
        meta = source.virtual_size // 8192 + 2 * 1024 * 1024
        return {"required": source.data_estimate + meta, "method": source.estimate_method}
    total = {"required": 0, "fully-allocated": 0, "method": "qemu-img measure"}
    for seg in source.segments:
        m = qemu.measure(seg.spec, "qcow2")
        for k in ("required", "fully-allocated"):
            total[k] += int(m.get(k, 0))
    return total


def _cleanup(target: Target, claimed: str | None = None) -> None:
    """Remove the partial target; then its claim, unless the partial is still there."""
    try:
        target.remove()
    except Exception:  # the original error matters more; the note says what is left
        pass
    if claimed is not None and not target.created:
        try:
            claim.release(claimed)
        except OSError:
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
                       stall_timeout: float, started: Callable[[], None] | None = None) -> None:
    # stderr goes to a file: a pipe we do not drain while reading progress from
    # stdout would block qemu-img once it fills (e.g. curl retry messages).
    what = source.spec.label
    errfile = tmpfiles.anonymous_file()
    with qemu.secret_objects(seg.spec for seg in source.segments) as (objects, fds):
        proc = subprocess.Popen(qemu.with_objects(args, objects), stdout=subprocess.PIPE,
                                stderr=errfile, stdin=subprocess.DEVNULL, pass_fds=fds,
                                preexec_fn=qemu.die_with_parent)
    last = -1.0
    last_change = time.monotonic()
    buf = b""
    try:
        if started is not None:
            started()
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
    """Verify `target.write_path` against the source (see hostside.verify); the result."""
    from hostside import verify as verify_mod
    return verify_mod.verify(source, target)[0]


def _allocation(target: Target) -> int | None:
    try:
        return os.stat(target.path).st_blocks * 512 if not target.is_block else None
    except OSError:
        return None


def _manifest(source: Source, target: Target, args: list[str], measured: dict,
              timings: dict, verification: dict, tool: str) -> dict:
    return {
        "schema": MANIFEST_SCHEMA,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "host": os.uname().nodename,   # what platform.node() returns on POSIX
        "tool": tool,
        "source": source.to_dict(),
        "target": dict(target.to_dict(), allocated_bytes=_allocation(target)),
        "measure": measured,
        # The argv is secret-free: a cookie is only referenced by its object id and
        # read by qemu from a pipe (--object secret,file=/dev/fd/N, added at run time).
        "command": ["qemu-img"] + _listed(source, args),
        "source_view": _view_summary(source),
        "timings": dict(timings),
        "verification": verification,
    }


def _listed(source: Source, args: list[str]) -> list[str]:
    """The argv, with a raw view's many source arguments summarised (see source_view)."""
    n = len(source.segments)
    if not source.view_segments or n <= MAX_LISTED_SOURCES:
        return list(args)
    first = len(args) - 1 - n
    return args[:first] + [f"<{n} raw-view sources of {source.spec.label}: see source_view>",
                           args[-1]]


def _view_summary(source: Source) -> dict | None:
    if not source.view_segments:
        return None
    try:   # CPython's own SHA-256 (the same digest): hashlib would load OpenSSL for a few hundred
        from _sha256 import sha256   # bytes, ~10 M instructions of a --no-verify run (fixed_cost.py)
    except ImportError:   # another interpreter, or 3.12+ (_sha2)
        from hashlib import sha256
    joined = "\n".join(seg.spec.image_arg() for seg in source.segments)
    data = [[seg.offset, seg.size] for seg in source.segments
            if seg.spec.opts.get("driver") == "raw"]
    return {"how": "raw windows over the allocated grains (our grain tables) and null-co "
                   "zero runs, concatenated by qemu-img in order",
            "sources": len(source.segments), "data_runs": len(data),
            "data_bytes": sum(n for _, n in data),
            "sources_sha256": sha256(joined.encode()).hexdigest()}


def _write_manifest(path: str, data: dict) -> None:
    """Complete or absent, never replacing another one: written under a unique temporary
    name in the same directory, fsynced, then hard-linked to its name (fails if taken)."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"  # serialised first: no half file
    directory, base = os.path.split(path)
    try:
        fd, tmp = tmpfiles.exclusive_file(directory or ".", f".{base}.", ".partial")
    except OSError as exc:
        raise TargetRefused(f"cannot write the manifest: {exc.strerror}", path) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            os.fchmod(f.fileno(), 0o640)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise TargetRefused("manifest already exists; refusing to overwrite it",
                                path) from None
        except OSError:
            if os.path.lexists(path):      # no hard links here (some CIFS): checked rename
                raise TargetRefused("manifest already exists; refusing to overwrite it",
                                    path) from None
            os.rename(tmp, path)
    except OSError as exc:
        raise TargetRefused(f"cannot write the manifest: {exc.strerror}", path) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    with contextlib.suppress(OSError):
        dfd = os.open(directory or ".", os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
