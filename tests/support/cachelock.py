"""One builder at a time for a shared cache entry (parallel test workers, two checkouts).

An exclusive flock on a file beside the entry: the kernel releases it when the holder exits or
dies, so a crashed build never leaves a stale lock. Builders still write to a temporary name and
rename when done; the lock only stops two of them doing the same minutes of work at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
from pathlib import Path
from typing import Callable, Iterator


@contextlib.contextmanager
def exclusive(lock_file: Path, what: str, log: Callable[[str], None] = print) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another process that is building {what} ({lock_file})")
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# Every change to an image recipe makes a new entry (``<kind>-<16 hex of the recipe>``, ~1.3 GiB
# each); the old ones would stay for ever. An entry is stamped each time a run uses it, and entries
# of the same kind with another recipe, idle that long and not being built, are removed.
STALE_AFTER = 6 * 3600   # longer than any run (a whole cold suite is < 1 h); two checkouts side by side keep theirs
_ENTRY = re.compile(r"(?P<kind>.+)-(?P<hash>[0-9a-f]{16})")


def used(entry: Path, log: Callable[[str], None] = print) -> Path:
    """Stamp ``entry`` as used now, prune its kind's stale siblings; returns ``entry``."""
    with contextlib.suppress(OSError):
        (entry / ".last-used").touch()
    m = _ENTRY.fullmatch(entry.name)
    if m:
        prune_stale(entry.parent, m["kind"], m["hash"], log)
    return entry


def prune_stale(root: Path, kind: str, keep: str, log: Callable[[str], None] = print,
                stale_after: float = STALE_AFTER) -> list[Path]:
    """Remove ``root/<kind>-<hash>`` entries (and their interrupted ``.building-<pid>`` dirs) of any
    other hash, idle for ``stale_after`` seconds, whose lock nobody holds. Returns what was removed."""
    own = re.compile(re.escape(kind) + r"-([0-9a-f]{16})(?:\.building-\d+)?")
    removed: list[Path] = []
    now = time.time()
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        m = own.fullmatch(path.name)
        if not m or m[1] == keep or not path.is_dir():
            continue
        entry = root / f"{kind}-{m[1]}"
        stamp = entry / ".last-used"
        try:
            last = max(p.stat().st_mtime for p in (stamp, path) if p.exists())
        except (OSError, ValueError):
            continue
        if now - last < stale_after:
            continue
        fd = os.open(root / f"{entry.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built right now
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
            log(f"removed the stale cache entry {path} (another recipe, idle {(now - last) / 3600:.0f} h)")
        finally:
            os.close(fd)
    return removed
