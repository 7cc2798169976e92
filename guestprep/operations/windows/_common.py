"""Shared by the Windows operations: settings, plan building, the generic apply."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import PurePosixPath
from typing import Any

from guestprep.connectors import windows_common as wc
from guestprep.errors import ConfigError
from guestprep.models import Change, Plan
from guestprep.operations.base import Applied, GuestOperation

MEDIA_DIR = "C:\\ProgramData\\guestprep\\media"
SERVICES = "HKLM:\\SYSTEM\\CurrentControlSet\\Services\\"
SHA256_RE = re.compile(r"^[0-9A-Fa-f]{64}$")
# media names/paths end up quoted in msiexec arguments on the guest: keep them plain
SAFE_NAME_RE = re.compile(r"^[A-Za-z0-9._+-]+$")
UNSAFE_PATH_CHARS = set('"\'`$%;&|<>\r\n\t')


def setting(facts: Any, options: dict[str, Any], key: str, default: Any = None) -> Any:
    """An operation setting: the run's options first, then the guest's inventory vars."""
    if options.get(key) is not None:
        return options[key]
    return (getattr(facts, "settings", None) or {}).get("guestprep_" + key, default)


def script_change(name: str, params: dict[str, Any], summary: str) -> Change:
    """The change that apply() executes: a guest script with its parameters as data."""
    return Change(kind="script", target=name, detail={"params": params}, diff=summary)


def registry_change(path: str, name: str, before: Any, after: Any) -> Change:
    return Change(kind="registry_set", target=f"{path}\\{name}", detail={"before": before, "after": after},
                  diff=f"- {name} = {before if before is not None else '(absent)'}\n+ {name} = {after}\n")


def apply_plan(conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
    """Execute the plan's upload and script changes in order; the other changes describe
    what those scripts do (each script journals on the guest before it changes anything)."""
    timeout = float(options.get("timeout") or 300.0)
    res = Applied(plan.operation, plan.guest, ok=True)
    where = f"guest {plan.guest}"
    for c in plan.changes:
        if c.kind == "upload":
            conn.put(c.detail["local"], c.target)
            res.steps.append({"upload": c.target, "sha256": c.detail.get("sha256")})
        elif c.kind == "script":
            out = wc.call_script(conn, c.target, c.detail["params"], timeout=timeout, where=where)
            res.steps.append({"script": c.target, "result": out})
    res.message = f"{len(res.steps)} step(s) done"
    return res


def local_media(path: str, sha256: str, where: str) -> tuple[str, str]:
    """Check admin media on the controller; returns (absolute path, remote path on the guest)."""
    if not os.path.isfile(path):
        raise ConfigError(f"virtio-win media {path} does not exist", where=where)
    if not SAFE_NAME_RE.match(os.path.basename(path)):
        raise ConfigError(f"virtio-win media file name {os.path.basename(path)!r} has characters other than "
                          "letters, digits, '.', '_', '+', '-'", where=where)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest().lower() != sha256.lower():
        raise ConfigError(f"SHA-256 of {path} is {digest.hexdigest()}, expected {sha256}", where=where)
    return os.path.abspath(path), MEDIA_DIR + "\\" + PurePosixPath(path).name


def check_remote_path(path: str, where: str) -> str:
    bad = sorted(UNSAFE_PATH_CHARS & set(path))
    if bad:
        raise ConfigError(f"virtio-win media path {path!r} contains {''.join(bad)!r}", where=where)
    return path


def check_sha(value: Any, where: str) -> str:
    if not value or not SHA256_RE.match(str(value)):
        raise ConfigError("virtio_win_sha256 must be the 64-hex-digit SHA-256 of the media", where=where)
    return str(value).lower()


class WindowsOperation(GuestOperation):
    os = "windows"

    def new_plan(self, facts: Any, guest: str, verify: str) -> tuple[Plan, bool]:
        """An empty plan, and whether this guest can be planned for at all: an unsupported
        Windows (too old, PowerShell 2.0) gets the collector's reason and no change."""
        plan = Plan(self.id, guest, verify=verify)
        if not facts.supported:
            plan.reason = f"guest not supported: {facts.unsupported_reason}"
        return plan, bool(facts.supported)

    def execute(self, conn: Any, plan: Plan, options: dict[str, Any]) -> Applied:
        return apply_plan(conn, plan, options)
