"""Claim files: which run created a partial target, so that a later run may remove it.

A conversion writes its target under a temporary name (`*.partial`, `guestprep-partial-*`) and
removes it when it fails or is stopped. SIGKILL (the OOM killer, a node that crashed) gives it no
chance: the partial stays, and the next run refuses it, rightly, since nothing says whose it is.

`<manifest>.claim` says whose: written (O_EXCL) just before the target is created, removed when the
run ends either way. It names the partial target and the process that created it (pid, its start
time in clock ticks since boot, the boot id: a pid reused after a reboot or by another program
does not pass for the owner). A run with the same manifest path, hence the same conversion, may
then remove the partial when the owner is gone (`convert --discard-stale-partial`, or
`guestprep-host reclaim --manifest M` for a cleanup that converts nothing).
"""

from __future__ import annotations

import json
import os
import time

from hostside.errors import TargetRefused

SCHEMA = "guestprep.host-claim/1"
SUFFIX = ".claim"
MAX_BYTES = 64 * 1024


def path_for(manifest: str) -> str:
    return manifest + SUFFIX


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat (proc(5)); the command name before it may hold spaces. None when
    the process is gone or has exited: a zombie (state Z, X) killed with its parent waits for
    whoever reaps orphans on the node, and must not pass for a running owner."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2:].split()
        return None if fields[0] in (b"Z", b"X") else int(fields[19])
    except (OSError, ValueError, IndexError):
        return None


def owner_alive(doc: dict) -> bool:
    pid, start = doc.get("pid"), doc.get("start_ticks")
    if not isinstance(pid, int) or pid <= 0 or doc.get("boot_id") != _boot_id():
        return False
    return start is not None and _start_ticks(pid) == start


def read(manifest: str) -> dict | None:
    """The claim beside ``manifest``, None when there is none; refused when unreadable."""
    path = path_for(manifest)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TargetRefused(f"cannot read the claim file ({exc.strerror})", path) from None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(MAX_BYTES + 1)
    if not raw.strip():
        # killed while writing it (the claim is written before the target is created: that
        # run created nothing), or emptied by a crash: a partial then stays unclaimed
        return {"schema": SCHEMA, "partial": "", "empty": True}
    try:
        doc = json.loads(raw) if len(raw) <= MAX_BYTES else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA or \
            not isinstance(doc.get("partial"), str):
        raise TargetRefused("not a claim file this version wrote: remove it, and the partial "
                            "target it may stand for, by hand", path)
    return doc


def write(manifest: str, kind: str, partial: str, label: str) -> str:
    path = path_for(manifest)
    doc = {"schema": SCHEMA, "partial": partial, "kind": kind, "target": label,
           "pid": os.getpid(), "start_ticks": _start_ticks(os.getpid()), "boot_id": _boot_id(),
           "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
    except FileExistsError:
        raise TargetRefused("a claim from another run of this conversion is in the way",
                            path) from None
    except OSError as exc:
        raise TargetRefused(f"cannot write the claim file ({exc.strerror})", path) from None
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        # not fsynced: a process killed keeps what it wrote; after a crash a claim lost or
        # empty only means a rerun refuses the partial as unclaimed, as without claims
        f.write(json.dumps(doc, sort_keys=True) + "\n")
    return path


def release(manifest: str) -> None:
    try:
        os.unlink(path_for(manifest))
    except FileNotFoundError:
        pass


def discard(manifest: str, target, doc: dict) -> dict:
    """Remove ``target``'s partial (``doc``'s owner is gone), then the claim; what was done."""
    found = target.partial_exists()
    if found:
        target.discard_partial()
    release(manifest)
    return {"partial": doc["partial"], "removed": found, "left_by": describe(doc)}


def describe(doc: dict) -> str:
    return f"pid {doc.get('pid')}, started {doc.get('created_at', '?')}"
