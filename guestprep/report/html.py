"""One self-contained HTML file (no external assets): fleet summary, per-guest table, findings."""

from __future__ import annotations

from typing import Any

import jinja2

from guestprep.models import Status

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("guestprep.report", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
)

_ORDER = {"fail": 0, "error": 1, "unreachable": 1, "waived": 2, "skipped": 3, "pass": 4}
_SEV = {"blocker": 0, "warning": 1, "info": 2}


def render(doc: dict[str, Any]) -> str:
    guests = []
    for g in doc["guests"]:
        findings = sorted(g["findings"], key=lambda f: (_ORDER.get(f["status"], 5), _SEV.get(f["severity"], 3), f["check_id"]))
        guests.append({**g, "findings": findings,
                       "open": [f for f in findings if Status(f["status"]).is_open]})
    return _env.get_template("report.html.j2").render(doc=doc, guests=guests)
