"""CSV report: one row per finding, for spreadsheets and ticket imports."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

COLUMNS = ["guest", "address", "os", "readiness", "check_id", "severity", "status", "resource", "title",
           "message", "remediation", "fixed_by", "evidence"]


def _cell(value: str) -> str:
    # Spreadsheet formula injection: a cell from guest data must never start with = + - @.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def render(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(COLUMNS)
    for g in doc["guests"]:
        for f in g["findings"]:
            row = [g["guest"], g["address"], g["os"], g["readiness"], f["check_id"], f["severity"], f["status"],
                   f["resource"], f["title"], f["message"], f["remediation"], f["fixed_by"] or "",
                   json.dumps(f["evidence"], sort_keys=True)]
            w.writerow([_cell(str(c)) for c in row])
    return buf.getvalue()
