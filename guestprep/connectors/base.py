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
