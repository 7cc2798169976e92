"""Credential resolution and redaction.

Inventories hold only *references* to secrets (environment variable names, key file
paths). Values are read here, at connection time, registered for redaction, and
never placed in argv, logs, reports or exceptions.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from guestprep.errors import ConfigError

_known: set[str] = set()
# Secrets shorter than this are masked only where they stand alone as a token: masking
# every "ab" inside every word would make reports unreadable, and leaving them out
# entirely printed a 2-character password verbatim (review item).
_SHORT = 3
_short: set[str] = set()
_lock = threading.Lock()
REDACTED = "********"


def from_env(var: str | None, what: str, where: str) -> str | None:
    """Value of env var ``var`` (None when no var is configured)."""
    if not var:
        return None
    value = os.environ.get(var)
    if value is None:
        raise ConfigError(f"environment variable {var} ({what}) is not set", where=where)
    register(value)
    return value


def register(secret: str) -> None:
    if not secret:
        return
    with _lock:
        (_known if len(secret) >= _SHORT else _short).add(secret)


def _token(secret: str) -> re.Pattern[str]:
    # Whole token: not preceded or followed by a letter, digit, '_' or '-'.
    return re.compile(r"(?<![\w-])" + re.escape(secret) + r"(?![\w-])")


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
        short = sorted(_short, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, REDACTED)
    for s in short:
        text = _token(s).sub(REDACTED, text)
    return text


def redact_doc(value: Any) -> Any:
    """A copy of a JSON-like document with every known secret masked in every string, keys included.

    The one redaction pass for documents: report files (report.write_reports), the preflight summary,
    ``facts`` and prepare/rollback JSON. Terminal text goes through guestprep.console.safe, which
    calls :func:`redact` too. (guestprep logs nothing through ``logging``; there is no log filter.)"""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_doc(k): redact_doc(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_doc(v) for v in value]
    return value
