"""Planned Linux changes as data, and the executor that applies them step by step.

Plans are built from these constructors so ``prepare`` prints exactly what ``--apply``
will do; :func:`execute` turns each change into one guest-side step (steps.py).
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
import time
from pathlib import Path
from typing import Any

from guestprep.errors import OperationError
from guestprep.models import Change, Plan
from guestprep.operations.base import Applied
from guestprep.operations.linux.steps import run_step


def sha256_text(text: str | None) -> str:
    return "absent" if text is None else hashlib.sha256(text.encode()).hexdigest()


def unified(path: str, old: str | None, new: str | None) -> str:
    a = (old or "").splitlines(keepends=True)
    b = (new or "").splitlines(keepends=True)
    return "".join(difflib.unified_diff(a, b, fromfile=f"a{path}" if old is not None else "/dev/null",
                                        tofile=f"b{path}" if new is not None else "/dev/null"))


def write_file(path: str, new: str, old: str | None, mode: str = "0644") -> Change:
    return Change("write_file", path, {"content": new, "mode": mode, "base_sha256": sha256_text(old)},
                  unified(path, old, new))


def delete_file(path: str, old: str | None) -> Change:
    return Change("delete_file", path, {"base_sha256": sha256_text(old)}, unified(path, old, None))


def run(argv: list[str], backups: list[str] = ()) -> Change:
    return Change("run", " ".join(argv), {"argv": list(argv), "backups": list(backups)})


def rebuild_initramfs(generator: str, kver: str, image: str, modules: list[str]) -> Change:
    return Change("rebuild_initramfs", image, {"generator": generator, "kver": kver, "modules": sorted(modules)})


def packages(manager: str, names: list[str], files: list[str] = ()) -> Change:
    what = ", ".join(Path(f).name for f in files) if files else " ".join(names)
    return Change("packages", what, {"manager": manager, "names": list(names), "files": list(files)})


def service(unit: str, action: str) -> Change:
    return Change("service", unit, {"action": action})


def execute(conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
    """Apply ``plan`` change by change; stop at the first failure (the guest keeps its backups)."""
    applied = Applied(plan.operation, plan.guest, ok=True)
    opts = {**options, "guest": plan.guest}
    for ch in plan.changes:
        t0 = time.monotonic()
        try:
            out = _one(conn, plan.operation, ch, opts)
        except OperationError as exc:
            applied.ok = False
            applied.message = str(exc)
            applied.steps.append({"kind": ch.kind, "target": ch.target, "ok": False, "error": exc.message})
            raise OperationError(f"{exc.message} (changes applied before it are journaled; "
                                 f"`guestprep rollback {plan.guest}` restores them)", where=exc.where) from None
        applied.steps.append({"kind": ch.kind, "target": ch.target, "ok": True, "output": out,
                              "seconds": round(time.monotonic() - t0, 2)})
    applied.message = f"{len(plan.changes)} change(s) applied"
    return applied


def _one(conn: Any, op: str, ch: Change, opts: dict[str, Any]) -> str:
    d = ch.detail
    if ch.kind == "write_file":
        res = run_step(conn, "write_file", [ch.target, d.get("mode", "0644"), d.get("base_sha256", "any")], opts,
                       op=op, stdin=d["content"].encode())
    elif ch.kind == "delete_file":
        res = run_step(conn, "delete_file", [ch.target], opts, op=op)
    elif ch.kind == "run":
        res = run_step(conn, "run_command", [*d.get("backups", []), "--", *d["argv"]], opts, op=op)
    elif ch.kind == "rebuild_initramfs":
        res = run_step(conn, "rebuild_initramfs", [d["generator"], d["kver"], ch.target, ",".join(d["modules"])],
                       opts, op=op, timeout=opts.get("rebuild_timeout", 1800.0))
    elif ch.kind == "packages":
        items = list(d["names"])
        if d.get("files"):
            items = _upload(conn, d["files"], opts)
        res = run_step(conn, "install_packages", [d["manager"], " ".join(d["names"]), *items], opts, op=op,
                       timeout=opts.get("package_timeout", 1800.0))
    elif ch.kind == "service":
        res = run_step(conn, "service", [d["action"], ch.target], opts, op=op)
    else:
        raise OperationError(f"unknown change kind {ch.kind!r}", where=op)
    return res.text().strip()


def _upload(conn: Any, files: list[str], opts: dict[str, Any]) -> list[str]:
    """Copy admin-provided package files to a private directory on the guest."""
    remote_dir = f"/tmp/guestprep-packages-{opts.get('run_id', 'adhoc')}"
    res = conn.run(["mkdir", "-p", "-m", "700", remote_dir], timeout=60)
    if res.rc != 0:
        raise OperationError(f"cannot create {remote_dir}: {res.err_text().strip()}", where=f"guest {opts.get('guest')}")
    remote = []
    for f in files:
        dest = posixpath.join(remote_dir, Path(f).name)
        conn.put(f, dest, mode=0o644)
        remote.append(dest)
    return remote
