"""CSV report: one row per finding, for spreadsheets and ticket imports."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from guestprep.report.enrich import waiver_of

COLUMNS = ["guest", "address", "os", "readiness", "check_id", "severity", "status", "resource", "title",
           "message", "remediation", "fixed_by", "evidence",
           # added in guestprep.report/1 (additive: appended, earlier columns keep their place)
           "id", "groups", "waived_by", "waiver_reason", "waiver_expires", "waiver_state",
           "run_id", "timestamp", "tool_version"]


# Formula triggers (OWASP "CSV Injection", https://owasp.org/www-community/attacks/CSV_Injection):
# = + - @ tab CR; spreadsheets skip leading blanks before them, and some accept the full-width forms.
_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "\uff1d", "\uff0b", "\uff0d", "\uff20")


def _cell(value: str) -> str:
    """Spreadsheet formula injection: a cell from guest data never starts a formula.

    OWASP: prefix a single quote when the cell, after any leading whitespace, starts with a
    trigger; and quote every cell (QUOTE_ALL in render) so a separator inside a value (``x;=1+1``
    in a locale whose separator is ``;``) cannot start a new cell that begins with a trigger."""
    return "'" + value if value.lstrip(" \n\x0b\x0c\xa0").startswith(_TRIGGERS) else value


def render(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n", quoting=csv.QUOTE_ALL)
    w.writerow(COLUMNS)
    run = [doc.get("run_id", ""), doc.get("finished") or doc.get("started", ""), (doc.get("tool") or {}).get("version", "")]
    for g in doc["guests"]:
        for f in g["findings"]:
            waiver, state = waiver_of(f)
            waiver = waiver or {}
            row = [g["guest"], g["address"], g["os"], g["readiness"], f["check_id"], f["severity"], f["status"],
                   f["resource"], f["title"], f["message"], f["remediation"], f["fixed_by"] or "",
                   json.dumps(f["evidence"], sort_keys=True),
                   f.get("id", ""), " ".join(g.get("groups", [])), waiver.get("by", ""), waiver.get("reason", ""),
                   waiver.get("expires", ""), state, *run]
            w.writerow([_cell(str(c)) for c in row])
    return buf.getvalue()
