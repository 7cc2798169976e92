"""How Windows PowerShell (2.0-5.1, in a remote wsmprovhost session) fails on a script's text.

The fake guest cannot run PowerShell (none exists on this machine), so this module decides,
from the script text and the modelled guest (its ``ps_version``), where the real engine would
throw before or while our modelled commands run. Each rule cites the documented behaviour.
"""

from __future__ import annotations

from typing import Any


def script_fault(text: str, guest: Any) -> str | None:
    """The error Windows PowerShell would raise running ``text`` on ``guest``, or None."""
    return None


def bootstrap_fault(boot: str, guest: Any) -> Any:
    """The error (text, or a ScriptResult) the WinRM bootstrap meets on ``guest``, or None."""
    return None
