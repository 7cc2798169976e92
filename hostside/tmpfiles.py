"""Temporary files and PATH lookup without `tempfile` and `shutil`.

Those two modules (with random, bz2, lzma, fnmatch and locale behind them) were ~10 M of the
instructions every `guestprep-host convert` spent before qemu started (~2.5 ms here,
benchmarks/fixed_cost.py --instructions); a conversion needs only the three things below.
"""

from __future__ import annotations

import os

_TMPDIR_VARS = ("TMPDIR", "TEMP", "TMP")     # tempfile.gettempdir()'s order, then its defaults


def _temp_dirs() -> list[str]:
    dirs = [os.environ[v] for v in _TMPDIR_VARS if os.environ.get(v)]
    return dirs + ["/tmp", "/var/tmp", "/usr/tmp"]


def anonymous_file():
    """An unnamed read/write file (like tempfile.TemporaryFile): O_TMPFILE in the first temporary
    directory that supports it; `tempfile` only where none does (an old kernel, some filesystems)."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        for d in _temp_dirs():
            try:
                fd = os.open(d, flag | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError:
                continue
            return os.fdopen(fd, "w+b")
    import tempfile
    return tempfile.TemporaryFile()


def exclusive_file(directory: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new file with a random name in ``directory``, created with O_EXCL (mode 0600), opened for
    writing: (fd, path), as tempfile.mkstemp returns them. OSError as mkstemp raises it."""
    for _ in range(100):
        path = os.path.join(directory, f"{prefix}{os.urandom(6).hex()}{suffix}")
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600), path
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {directory} after 100 tries")


def which(name: str) -> str | None:
    """The executable ``name`` on PATH, as shutil.which finds it (a name with a slash is checked as given)."""
    def runnable(p: str) -> bool:
        return os.access(p, os.X_OK) and not os.path.isdir(p)

    if os.sep in name:
        return name if runnable(name) else None
    for d in (os.environ.get("PATH") or os.defpath).split(os.pathsep):
        p = os.path.join(d or os.curdir, name)
        if runnable(p):
            return p
    return None
