"""The single audited place where argv becomes a POSIX shell command line.

SSH's exec channel takes one string that the remote login shell parses; every
element is quoted with :func:`shlex.quote`, which yields a single-quoted word that
no shell metacharacter (``;``, ``$()``, backticks, quotes, newlines) can escape.
"""

from __future__ import annotations

import shlex
from typing import Sequence


def join_argv(argv: Sequence[str]) -> str:
    if not argv:
        raise ValueError("empty command")
    for a in argv:
        if not isinstance(a, str):
            raise TypeError(f"argv elements must be str, got {type(a).__name__}")
        if "\x00" in a:
            raise ValueError("NUL byte in command argument")
    return " ".join(shlex.quote(a) for a in argv)
