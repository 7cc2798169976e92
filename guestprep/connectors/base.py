"""The one small interface every transport implements (testinfra-style backends).

Callers never build shell strings by concatenation. They pass either an argv list
(quoted by :func:`guestprep.connectors.quoting.join_argv`, the single audited place)
or a :class:`Script` whose text travels on stdin and whose parameters travel as data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from guestprep.models import CommandResult


@dataclass(frozen=True)
class Script:
    """A script executed by an interpreter on the guest.

    ``text`` is sent on the interpreter's stdin (``sh -s`` on Linux; PowerShell
    ``-EncodedCommand`` or an uploaded file on Windows). ``args`` are passed as
    positional parameters, quoted by the connector. ``stdin`` data, when a script
    needs input, is appended after the script text in a here-document-free way
    handled by each connector.
    """

    text: str
    args: Sequence[str] = field(default_factory=tuple)
    interpreter: str = "sh"  # sh | powershell
    name: str = "script"


@runtime_checkable
class Connector(Protocol):
    name: str

    def run(
        self,
        command: Sequence[str] | Script,
        *,
        stdin: bytes | None = None,
        timeout: float = 300.0,
        sudo: bool = False,
    ) -> CommandResult: ...

    def put(self, local: str, remote: str, *, mode: int = 0o600) -> None: ...

    def get(self, remote: str, local: str) -> None: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- connection failures in words


def _chain(exc: BaseException | None):
    """``exc`` and every exception behind it: causes, contexts, urllib3's ``reason``, requests' first
    argument, paramiko's per-address ``errors``; each once."""
    seen: set[int] = set()
    todo = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen or not isinstance(e, BaseException):
            continue
        seen.add(id(e))
        yield e
        todo.extend([e.__cause__, e.__context__, getattr(e, "reason", None)])
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
        errors = getattr(e, "errors", None)
        if isinstance(errors, dict):
            todo.extend(v for v in errors.values() if isinstance(v, BaseException))


def network_reason(exc: BaseException, host: str, port: int | None, timeout: float | None = None) -> str | None:
    """What a failed connection attempt means, in words ("connection refused: nothing listens on
    10.0.0.5:22"), or None when the exception is not a network-level failure we recognise.

    The caller keeps ``str(exc)`` (the full chain) as evidence; this is the sentence an operator reads."""
    import errno
    import socket
    import ssl

    where = f"{host}:{port}" if port else host
    for e in _chain(exc):
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return f"connection refused: nothing listens on {where} (or a firewall rejects it)"
        if isinstance(e, socket.gaierror):
            return f"host name {host} does not resolve ({e.strerror or e})"
        if getattr(e, "errno", None) in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return f"no route to {host} (network or host unreachable)"
        if isinstance(e, ssl.SSLCertVerificationError):
            return f"TLS verification failed: {e.verify_message or e.reason or e}"
        if isinstance(e, (socket.timeout, TimeoutError)) or type(e).__name__ in ("ConnectTimeoutError", "ConnectTimeout",
                                                                                 "ReadTimeoutError", "ReadTimeout"):
            after = f" after {timeout:g} s" if timeout else ""
            return f"timed out{after}: {where} did not answer"
        if isinstance(e, (ConnectionResetError, BrokenPipeError)):
            return f"{where} closed the connection (reset by the server or a firewall)"
    return None
