"""Waivers: an accepted risk, with a reason, an owner and an expiry date.

waivers.yaml:
    waivers:
      - check: LNX-PART-ALIGN
        guest: "db-*"            # glob, default "*"
        resource: "sda1"         # glob, default "*"
        reason: "realigned during the cutover window"
        by: "storage team"
        expires: 2027-03-31
An expired waiver no longer applies (the finding fails again) and is listed as expired.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import yaml

from guestprep.errors import ConfigError
from guestprep.models import Finding, Status

FIELDS = {"check", "guest", "resource", "reason", "by", "expires"}


@dataclass(frozen=True)
class Waiver:
    check: str
    guest: str
    resource: str
    reason: str
    by: str
    expires: dt.date
    where: str

    def matches(self, f: Finding) -> bool:
        return (fnmatch.fnmatchcase(f.check_id, self.check) and fnmatch.fnmatchcase(f.guest, self.guest)
                and fnmatch.fnmatchcase(f.resource, self.resource))


def load(path: str | Path) -> list[Waiver]:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("waivers file not found", where=str(path)) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}", where=str(path)) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("waivers"), list):
        raise ConfigError("expected a mapping with a 'waivers' list", where=str(path))
    out = []
    for i, w in enumerate(doc["waivers"], start=1):
        where = f"{path} (waiver #{i})"
        if not isinstance(w, dict):
            raise ConfigError("each waiver must be a mapping", where=where)
        unknown = set(w) - FIELDS
        if unknown:
            raise ConfigError(f"unknown field(s) {', '.join(sorted(unknown))}", where=where)
        for req in ("check", "reason", "expires"):
            if not w.get(req):
                raise ConfigError(f"'{req}' is required (a waiver without a reason or expiry is not a waiver)", where=where)
        expires = w["expires"]
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError:
                raise ConfigError(f"expires {expires!r} is not a date (YYYY-MM-DD)", where=where) from None
        if not isinstance(expires, dt.date):
            raise ConfigError("expires must be a date (YYYY-MM-DD)", where=where)
        out.append(Waiver(str(w["check"]), str(w.get("guest", "*")), str(w.get("resource", "*")),
                          str(w["reason"]), str(w.get("by", "")), expires, where))
    return out


def apply(findings: Iterable[Finding], waivers: list[Waiver], today: dt.date | None = None) -> list[Waiver]:
    """Mark matching failing findings as waived; return the expired waivers that matched something."""
    today = today or dt.date.today()
    expired = []
    for f in findings:
        if f.status is not Status.FAIL:
            continue
        for w in waivers:
            if not w.matches(f):
                continue
            info = {"reason": w.reason, "by": w.by, "expires": w.expires.isoformat()}
            if w.expires < today:
                f.evidence = {**f.evidence, "expired_waiver": info}
                if w not in expired:
                    expired.append(w)
                continue
            f.status = Status.WAIVED
            f.waiver = info
            break
    return expired
