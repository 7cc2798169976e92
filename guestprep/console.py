"""Terminal output: the one place consoles are made and outside values are made safe for rich.

Two rules for everything guestprep prints:

* Piped output (a file, a pipe, CI logs) is never wrapped: rich would otherwise assume 80
  columns (or $COLUMNS) and break messages mid-phrase ("does \\nnot exist") and squeeze
  tables. On a terminal, rich keeps the terminal's width.
* Every value that came from outside (a guest, an inventory, vCenter, a file) goes through
  :func:`safe` before rich sees it: known secrets are masked, rich markup is escaped
  (``/boot/[/]initrd`` crashed rich, ``[link=...]`` made hyperlinks, ``web01 [old]`` lost
  ``[old]``) and control characters are shown as ``\\x1b``-style escapes, so no escape or
  OSC-8 sequence from a guest reaches the operator's terminal.
"""

from __future__ import annotations

import re
from typing import Any

from rich.console import Console, ConsoleDimensions
from rich.markup import escape

from guestprep.secrets import redact

# Wide enough that no message or table row is ever wrapped when nobody reads it on a screen.
PIPED_WIDTH = 1_000_000
RULE_WIDTH = 100  # per-guest header rules are capped: a rule as wide as PIPED_WIDTH is noise

# C0 and C1 controls, DEL, Unicode line/paragraph separators and the bidi overrides/isolates
# (which reorder what the operator reads, "Trojan Source"); \n and \t are decided per call.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")
_CONTROL_AND_NEWLINES = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


def _show(m: re.Match) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def visible(value: Any, *, multiline: bool = False) -> str:
    """``value`` as text with control characters shown as escapes (no markup escaping).

    For renderables that do not parse markup (Syntax, Text). ``multiline`` keeps \\n and \\t."""
    text = redact(value if isinstance(value, str) else str(value))
    return (_CONTROL if multiline else _CONTROL_AND_NEWLINES).sub(_show, text)


def safe(value: Any, *, multiline: bool = False) -> str:
    """``value`` ready to embed in rich markup: secrets masked, control characters visible, markup escaped."""
    return escape(visible(value, multiline=multiline))


class _Console(Console):
    """A rich Console that does not wrap when its output is not a terminal."""

    def _on_screen(self) -> bool:
        # the real file, not is_terminal: FORCE_COLOR/TTY_COMPATIBLE (set by CI systems) make rich
        # treat a pipe as a terminal of $COLUMNS or 80 columns, which is where wrapping came from
        try:
            return bool(self.file.isatty())
        except (AttributeError, ValueError):
            return False

    @property
    def size(self) -> ConsoleDimensions:
        if not self._on_screen():
            # $COLUMNS describes a terminal; a pipe has no width, so nothing is wrapped at all
            return ConsoleDimensions(PIPED_WIDTH, self._height or 25)
        return Console.size.fget(self)  # type: ignore[attr-defined]

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


def make_console(*, stderr: bool = False) -> Console:
    """The console every command prints through (stdout, or stderr for messages)."""
    # highlight=False: rich's highlighter would colour parts of guest values (numbers, paths)
    # as if they meant something; our markup is explicit.
    return _Console(stderr=stderr, highlight=False)
