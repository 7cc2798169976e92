"""Privilege escalation without putting the password in argv.

``sudo -k -n true`` tells whether the user has NOPASSWD rights (``-k`` ignores a
cached timestamp, so success means no password is ever needed). Otherwise the
command runs as ``sudo -k -S -p '' ...``: ``-k`` forces sudo to read the password,
so the first stdin line is always consumed by sudo and never reaches the command.
"""

from __future__ import annotations

from typing import Sequence

PROBE = ["sudo", "-k", "-n", "true"]


def wrap(argv: Sequence[str], nopasswd: bool) -> list[str]:
    if nopasswd:
        return ["sudo", "-n", "--", *argv]
    return ["sudo", "-k", "-S", "-p", "", "--", *argv]


def stdin_with_password(password: str | None, stdin: bytes | None, nopasswd: bool) -> bytes | None:
    if nopasswd:
        return stdin
    if password is None:
        return None
    return password.encode() + b"\n" + (stdin or b"")
