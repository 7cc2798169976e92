"""Run one guest-side step: a small POSIX script with its parameters as data.

Each step is ``guest_scripts/linux/ops/lib.sh`` + ``<step>.sh``, executed as
``sh -c TEXT NAME ROOT RUN OP ARGS...`` (the connector quotes argv with the one audited
helper); file contents travel on stdin. Steps ignore SIGHUP, so a dropped connection
lets the step finish and leave the guest consistent; re-running converges.
"""

from __future__ import annotations

import base64
from functools import lru_cache
from typing import Any, Sequence

from guestprep.connectors.base import Script
from guestprep.errors import OperationError
from guestprep.scripts import read_script


@lru_cache(maxsize=None)
def script_text(step: str) -> str:
    def read(name: str) -> str:
        return read_script("linux", "ops", name)

    return read("lib.sh") + "\n# ---- step: " + step + "\n" + read(f"{step}.sh")


def run_step(conn: Any, step: str, args: Sequence[str], options: dict[str, Any], *, op: str,
             stdin: bytes | None = None, timeout: float | None = None, check: bool = True):
    """Run ``step`` on the guest; a failure raises OperationError naming the step and the guest's state."""
    argv = [options.get("root", ""), options.get("run_id", "adhoc"), op, *[str(a) for a in args]]
    res = conn.run(Script(script_text(step), args=argv, name=step), stdin=stdin,
                   timeout=timeout or options.get("step_timeout", 1800.0), sudo=bool(options.get("sudo")))
    if check and res.rc != 0:
        err = res.err_text().strip().splitlines()
        msg = err[-1] if err else f"exit {res.rc}"
        if options.get("sudo") and any(l.startswith("sudo:") or "sudoers" in l for l in err):
            msg = "sudo refused: " + next(l for l in err if l.startswith("sudo:") or "sudoers" in l)
        raise OperationError(f"step {step} failed: {msg}", where=f"guest {options.get('guest', '?')}, {op}")
    return res


def read_state(conn: Any, paths: Sequence[str], options: dict[str, Any]) -> dict[str, Any]:
    """Raw files and directory writability the plans need (read-only, one round trip).

    Returns {path: text | None (absent)} and {"dir:/boot": True/False (writable)}.
    """
    res = run_step(conn, "read_state", list(paths), options, op="read_state", timeout=120)
    out: dict[str, Any] = {}
    for line in res.text().splitlines():
        rec = line.split("\t")
        if rec[0] == "file" and len(rec) == 3:
            out[rec[1]] = base64.b64decode(rec[2]).decode("utf-8", errors="replace")
        elif rec[0] == "dir" and len(rec) == 3:
            out[f"dir:{rec[1]}"] = rec[2] == "1"
        elif rec[0] == "absent" and len(rec) == 2:
            out[rec[1]] = None
    missing = [p for p in paths if p not in out and f"dir:{p}" not in out]
    if missing:
        raise OperationError(f"guest state read returned nothing for {missing[:3]}", where=f"guest {options.get('guest', '?')}")
    return out
