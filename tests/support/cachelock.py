"""One builder at a time for a shared cache entry (parallel test workers, two checkouts).

An exclusive flock on a file beside the entry: the kernel releases it when the holder exits or
dies, so a crashed build never leaves a stale lock. Builders still write to a temporary name and
rename when done; the lock only stops two of them doing the same minutes of work at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
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
