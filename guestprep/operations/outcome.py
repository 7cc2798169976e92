"""Per-guest status of a prepare/rollback fleet run, its JSON document and exit code."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestprep.errors import EXIT_UNREACHABLE, ConfigError
from guestprep.operations.engine import GuestResult, exit_code as prepare_exit_code

EXIT_INTERRUPTED = 130


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


# --------------------------------------------------------------------------- prepare


def cannot_tell(error: str | None) -> bool:
    return bool(error) and "cannot tell: " in error


def prepare_status(r: GuestResult, applied: bool) -> str:
    if r.error and r.error_code == EXIT_UNREACHABLE:
        return "unreachable"
    if r.error:
        return "error"
    if r.interrupted:
        return "interrupted"
    if any(o.error for o in r.ops):
        # an operation whose facts cannot decide what to do ("cannot tell: no installed kernel found") is
        # unknown, as preflight's check is: neither a failure nor "nothing to do"
        return "unknown" if all(cannot_tell(o.error) for o in r.ops if o.error) else "failed"
    if any(o.verified is False for o in r.ops):
        return "not_verified"
    if applied:
        return "applied" if any(o.applied is not None for o in r.ops) else "unchanged"
    return "planned" if r.changes else "unchanged"


def failure_of(r: GuestResult) -> str | None:
    """One line saying why a guest is not fine, for the table and the JSON."""
    if r.error:
        return r.error
    for o in r.ops:
        if o.error:
            return f"{o.operation}: {o.error}"
    for o in r.ops:
        if o.verified is False:
            return f"{o.operation} not verified: {'; '.join(o.problems)}"
    if r.interrupted:
        return "interrupted: operations after the one in progress were not applied"
    return None


def prepare_entry(r: GuestResult, applied: bool) -> dict[str, Any]:
    d = r.to_dict()
    d.update(status=prepare_status(r, applied),
             planned=[o.operation for o in r.ops if o.plan and not o.plan.empty],
             applied=[o.operation for o in r.ops if o.applied is not None],
             verified=[o.operation for o in r.ops if o.verified is True],
             failed=[o.operation for o in r.ops if (o.error and not cannot_tell(o.error)) or o.verified is False],
             undecided=[o.operation for o in r.ops if cannot_tell(o.error)],
             failure=failure_of(r))
    return d


def not_run_entry(name: str, os_name: str) -> dict[str, Any]:
    return {"guest": name, "os": os_name, "status": "not_run", "run_id": "", "error": None, "changes": 0,
            "seconds": 0.0, "interrupted": True, "ops": [], "planned": [], "applied": [], "verified": [],
            "failed": [], "undecided": [], "failure": "not started: interrupted (Ctrl-C)"}


def prepare_exit(results: list[GuestResult], interrupted: bool) -> int:
    if interrupted:
        return EXIT_INTERRUPTED
    code = prepare_exit_code(results)
    undecided = [r for r in results if prepare_status(r, False) == "unknown"]
    if code == 1 and undecided and not any(r.failed for r in results if r not in undecided):
        return EXIT_UNREACHABLE  # "cannot tell" is not a failure and not a success: 3, as preflight says it
    return code


# --------------------------------------------------------------------------- rollback


@dataclass
class RollbackResult:
    guest: str
    os: str
    restored: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    error_code: int = 0
    seconds: float = 0.0

    @property
    def failed(self) -> bool:   # what engine.exit_code reads
        return bool(self.error)

    @property
    def status(self) -> str:
        if self.error:
            return "unreachable" if self.error_code == EXIT_UNREACHABLE else "failed"
        # Windows reports what it does not reverse (driver installs) on every run: that alone is nothing done
        return "rolled_back" if any(not d.get("skipped") for d in self.restored) else "nothing"

    def to_dict(self) -> dict[str, Any]:
        return {"guest": self.guest, "os": self.os, "status": self.status, "restored": self.restored,
                "error": self.error, "seconds": round(self.seconds, 2)}


def rollback_exit(results: list[RollbackResult], interrupted: bool) -> int:
    # the same rule as prepare: unreachable (3) before failed (1)
    return EXIT_INTERRUPTED if interrupted else prepare_exit_code(results)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- the document


def fleet_doc(schema: str, entries: list[dict[str, Any]], *, started: str, parallel: int, complete: bool,
              not_run: list[str], **extra: Any) -> dict[str, Any]:
    summary: dict[str, int] = {}
    for e in entries:
        summary[e["status"]] = summary.get(e["status"], 0) + 1
    summary["total"] = len(entries)
    return {"schema": schema, **extra, "parallel": parallel, "started": started, "finished": now(),
            "complete": complete, "not_run": not_run, "summary": summary, "guests": entries}


def check_out_path(path: Path, where: str = "--json-out") -> None:
    """Refuse a bad output path before any guest is touched."""
    if path.is_dir():
        raise ConfigError("is a directory, expected a file path", where=f"{where} {path}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise ConfigError(f"directory {parent} does not exist", where=f"{where} {path}")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"directory {parent} is not writable", where=f"{where} {path}")


def write_json(path: Path, doc: dict[str, Any]) -> None:
    """Temp file beside the target, then rename: readers see the old file or the whole new one.

    ``doc`` is already redacted by its one caller (guestprep.commands.fleet_output.emit)."""
    text = json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(dir=path.parent if str(path.parent) else ".", prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
