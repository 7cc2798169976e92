"""The cutover journal: one SQLite file per wave (standard library), the record `resume` trusts.

WAL mode, ``synchronous=FULL``: every step boundary is one committed transaction, so after a
``kill -9`` or a power loss the journal holds every boundary that was reached and nothing
half-written. One row per step *attempt* (inputs, outputs, timestamps, error), one row per
VM with its phase and the last known state of both sides. The plan hash ties the journal to
the wave file it ran: a wave edited after its run started is refused.

A lock file (``fcntl.flock``, released by the kernel when the process dies) keeps a second
controller off the same wave.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

from guestprep.errors import ConfigError, GuestprepError

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    vm TEXT NOT NULL, step TEXT NOT NULL, attempt INTEGER NOT NULL,
    status TEXT NOT NULL,              -- running | done | failed | interrupted
    started_at TEXT NOT NULL, ended_at TEXT,
    inputs TEXT NOT NULL DEFAULT '{}', outputs TEXT NOT NULL DEFAULT '{}', error TEXT);
CREATE INDEX IF NOT EXISTS attempts_vm ON attempts (vm, step);
CREATE TABLE IF NOT EXISTS vms (
    vm TEXT PRIMARY KEY,
    phase TEXT NOT NULL,               -- pending | running | done | failed | rolling_back | rolled_back | held
    source TEXT NOT NULL DEFAULT '{}', target TEXT NOT NULL DEFAULT '{}',
    downtime_s REAL, error TEXT, updated_at TEXT NOT NULL);
"""

FINAL_PHASES = ("done", "rolled_back", "held", "failed")


class LockedError(GuestprepError):
    """Another controller runs this wave."""

    exit_code = 2


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


class WaveLock:
    """An exclusive, non-blocking flock on ``<state>/lock``; the file names the holder's pid."""

    def __init__(self, path: Path):
        self.path = path
        self.fd: int | None = None

    def acquire(self) -> "WaveLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockedError(f"another controller (pid {holder}) is running this wave; wait for it or stop it",
                              where=str(self.path)) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


class Journal:
    """Thread-safe: one connection, one lock, one transaction per boundary."""

    def __init__(self, path: Path):
        self.path = path
        self._lock = threading.Lock()
        self.db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a committed boundary survives power loss
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _tx(self, sql: str, args: tuple = ()) -> sqlite3.Cursor:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                cur = self.db.execute(sql, args)
                self.db.execute("COMMIT")
                return cur
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def _q(self, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
        with self._lock:
            cur = self.db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, row)) for row in cur.fetchall()]

    # ------------------------------------------------------------------ meta
    def get_meta(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        self._tx("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                 (key, value))

    def bind_plan(self, plan_hash: str, wave_path: str, *, resume: bool) -> None:
        """A new run records the plan hash; a resume must find the same one."""
        known = self.get_meta("plan_hash")
        if known is None:
            if resume:
                raise ConfigError("nothing to resume: this wave was never run (use `cutover run`)", where=wave_path)
            self.set_meta("plan_hash", plan_hash)
            self.set_meta("wave", wave_path)
            self.set_meta("created", now())
        elif known != plan_hash:
            raise ConfigError(f"the wave file changed since its run started (plan hash {known[:12]} in the journal, "
                              f"{plan_hash[:12]} now); restore it, or plan a new wave", where=wave_path)
        elif not resume:
            raise ConfigError("this wave has already been run: use `cutover resume` (or `cutover status`)",
                              where=wave_path)

    # ------------------------------------------------------------------ attempts
    def start_attempt(self, vm: str, step: str, inputs: dict[str, Any]) -> int:
        n = self._q("SELECT COUNT(*) AS n FROM attempts WHERE vm=? AND step=?", (vm, step))[0]["n"]
        cur = self._tx("INSERT INTO attempts(vm, step, attempt, status, started_at, inputs) VALUES(?,?,?,?,?,?)",
                       (vm, step, n + 1, "running", now(), json.dumps(inputs, sort_keys=True, default=str)))
        return int(cur.lastrowid)

    def finish_attempt(self, attempt_id: int, outputs: dict[str, Any]) -> None:
        self._tx("UPDATE attempts SET status='done', ended_at=?, outputs=? WHERE id=?",
                 (now(), json.dumps(outputs, sort_keys=True, default=str), attempt_id))

    def fail_attempt(self, attempt_id: int, error: str, outputs: dict[str, Any] | None = None) -> None:
        self._tx("UPDATE attempts SET status='failed', ended_at=?, error=?, outputs=? WHERE id=?",
                 (now(), error, json.dumps(outputs or {}, sort_keys=True, default=str), attempt_id))

    def interrupt_stale(self) -> int:
        """Attempts left 'running' by a controller that died: recorded as interrupted (resume redoes
        the step, which checks its post-condition first)."""
        cur = self._tx("UPDATE attempts SET status='interrupted', ended_at=?, error=? WHERE status='running'",
                       (now(), "the controller stopped during this attempt"))
        return cur.rowcount

    def done_outputs(self, vm: str, step: str) -> dict[str, Any] | None:
        """The outputs of the step's completed attempt (None: not done yet)."""
        rows = self._q("SELECT outputs FROM attempts WHERE vm=? AND step=? AND status='done' ORDER BY id DESC LIMIT 1",
                       (vm, step))
        return json.loads(rows[0]["outputs"]) if rows else None

    def attempts(self, vm: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM attempts" + (" WHERE vm=?" if vm else "") + " ORDER BY id"
        rows = self._q(sql, (vm,) if vm else ())
        for r in rows:
            r["inputs"], r["outputs"] = json.loads(r["inputs"]), json.loads(r["outputs"])
        return rows

    # ------------------------------------------------------------------ per VM
    def set_vm(self, vm: str, phase: str, *, source: dict | None = None, target: dict | None = None,
               downtime_s: float | None = None, error: str | None | object = ...) -> None:
        """Fields not given keep their value (``error=None`` clears the error)."""
        cur = self.vm(vm)
        if error is ...:
            error = (cur or {}).get("error")
        src = source if source is not None else (cur or {}).get("source", {})
        tgt = target if target is not None else (cur or {}).get("target", {})
        down = downtime_s if downtime_s is not None else (cur or {}).get("downtime_s")
        self._tx("INSERT INTO vms(vm, phase, source, target, downtime_s, error, updated_at) VALUES(?,?,?,?,?,?,?) "
                 "ON CONFLICT(vm) DO UPDATE SET phase=excluded.phase, source=excluded.source, target=excluded.target, "
                 "downtime_s=excluded.downtime_s, error=excluded.error, updated_at=excluded.updated_at",
                 (vm, phase, json.dumps(src, sort_keys=True), json.dumps(tgt, sort_keys=True), down, error, now()))

    def vm(self, vm: str) -> dict[str, Any] | None:
        rows = self._q("SELECT * FROM vms WHERE vm=?", (vm,))
        if not rows:
            return None
        r = rows[0]
        r["source"], r["target"] = json.loads(r["source"]), json.loads(r["target"])
        return r

    def vms(self) -> list[dict[str, Any]]:
        return [self.vm(r["vm"]) for r in self._q("SELECT vm FROM vms ORDER BY vm")]  # type: ignore[misc]
