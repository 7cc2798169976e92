"""What was run where: a structured log (JSON lines) and ``-v`` lines on stderr.

Off unless asked (``--log-file PATH``, ``-v``): then every connection and every command a
connector runs is one record: time, event, guest, transport, the script's name or the
program (never its arguments' values, never stdin), rc and duration. Every record passes
through :func:`guestprep.secrets.redact_doc` before it is written or shown.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

from guestprep.secrets import redact_doc

_lock = threading.Lock()
_file: Any = None
_verbose = 0


def configure(log_file: Path | None = None, verbose: int = 0) -> None:
    """Start logging (the CLI's root options). The file is appended to, line-buffered."""
    global _file, _verbose
    _verbose = verbose
    if log_file is not None:
        from guestprep.errors import ConfigError

        try:
            _file = open(log_file, "a", encoding="utf-8", buffering=1)
        except OSError as exc:
            raise ConfigError(f"cannot open the log file: {exc.strerror or exc}", where=f"--log-file {log_file}") \
                from None


def enabled() -> bool:
    return _file is not None or _verbose > 0


def record(event: str, **fields: Any) -> None:
    if not enabled():
        return
    doc = redact_doc({"ts": dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"), "event": event,
                      **fields})
    with _lock:
        if _file is not None:
            _file.write(json.dumps(doc, sort_keys=False, default=str) + "\n")
        if _verbose:
            from guestprep.console import visible

            parts = " ".join(f"{k}={v}" for k, v in doc.items() if k not in ("ts", "event") and v not in (None, ""))
            sys.stderr.write(visible(f"[{event}] {parts}") + "\n")
            sys.stderr.flush()


def _what(command: Any) -> str:
    """A command's name for the log: the script's name, or the program an argv runs (not its arguments)."""
    name = getattr(command, "name", None)
    if name and hasattr(command, "text"):
        return f"script:{name}"
    try:
        return str(list(command)[0])
    except (TypeError, IndexError):
        return "?"


def instrument(conn: Any, guest: Any) -> Any:
    """Log ``conn``'s run/put/get calls (in place: the connector stays what it is)."""
    if not enabled():
        return conn
    base = {"guest": guest.name, "transport": guest.transport.value, "address": guest.address}

    def wrap(method: Callable, event: str, describe: Callable[..., dict]) -> Callable:
        @functools.wraps(method)
        def logged(*args: Any, **kwargs: Any) -> Any:
            started = time.monotonic()
            try:
                result = method(*args, **kwargs)
            except BaseException as exc:
                record(event, **base, **describe(*args, **kwargs), ok=False,
                       error=f"{type(exc).__name__}: {exc}", duration_s=round(time.monotonic() - started, 3))
                raise
            extra = {"rc": result.rc} if hasattr(result, "rc") else {}
            record(event, **base, **describe(*args, **kwargs), **extra, ok=extra.get("rc", 0) == 0,
                   duration_s=round(time.monotonic() - started, 3))
            return result

        return logged

    conn.run = wrap(conn.run, "run", lambda command, **kw: {"command": _what(command), "sudo": bool(kw.get("sudo"))})
    if hasattr(conn, "put"):
        conn.put = wrap(conn.put, "put", lambda local, remote, **kw: {"remote": remote})
    if hasattr(conn, "get"):
        conn.get = wrap(conn.get, "get", lambda remote, local, **kw: {"remote": remote})
    return conn
