"""Credential resolution and redaction.

Inventories hold only *references* to secrets (environment variable names, key file
paths). Values are read here, at connection time, registered for redaction, and
never placed in argv, logs, reports or exceptions.
"""

from __future__ import annotations

import logging
import os
import threading

from guestprep.errors import ConfigError

_known: set[str] = set()
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
    if secret and len(secret) >= 3:
        with _lock:
            _known.add(secret)


def redact(text: str) -> str:
    if not text:
        return text
    with _lock:
        secrets = sorted(_known, key=len, reverse=True)
    for s in secrets:
        text = text.replace(s, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Installed on guestprep's log handlers: secrets never reach a log line."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = redact(str(record.getMessage()))
        record.args = ()
        return True
