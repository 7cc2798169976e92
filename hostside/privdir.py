"""A private 0700 scratch directory for one run, made on first use.

Same interface as remote.SecretDir (`write`, `close`, `path`) without importing the
HTTPS machinery (http.client, ssl) that a local conversion never needs: start-up time
is part of every conversion.
"""

from __future__ import annotations

import os

# shutil and tempfile are imported when a run needs the directory (a raw, qcow2 or
# monolithicSparse source never does).


class PrivateDir:
    def __init__(self) -> None:
        self._path: str | None = None

    @property
    def path(self) -> str:
        if self._path is None:
            import tempfile
            self._path = tempfile.mkdtemp(prefix="guestprep-secret-")   # mkdtemp is 0700
        return self._path

    def write(self, name: str, value: str) -> str:
        """A new 0600 file ending in ``name``; unique, so several disks can share the dir."""
        import tempfile
        fd, path = tempfile.mkstemp(dir=self.path, suffix=f"-{name}")
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return path

    def close(self) -> None:
        if self._path is not None:
            import shutil
            shutil.rmtree(self._path, ignore_errors=True)
