"""One self-contained HTML file (no external assets, no request leaves it): a fleet dashboard
(readiness by count and share, the checks that block most guests, by OS and by group), a
per-check fleet view, the guest table people filter and sort, each guest's findings (passes
collapsed) and a sign-off block. Readable with JavaScript off: the script only adds filters and
sorting. A Content-Security-Policy allows only the one inline script (by its SHA-256) and inline
styles, so a value from a guest can never load or run anything even if escaping failed."""

from __future__ import annotations

import base64
import hashlib
import re
from collections import Counter, defaultdict
from typing import Any

import jinja2
from markupsafe import Markup

from guestprep.report.enrich import status_open, waiver_of

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("guestprep.report", "templates"),
    autoescape=jinja2.select_autoescape(default=True, default_for_string=True),
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)

# Known values get their colour; any other value (a status or verdict a later version adds) is
# shown by its name in a neutral style.
READINESS = {"ready": ("ready", 0), "warnings": ("ready with warnings", 1), "blocked": ("blocked", 3),
             "unknown": ("unknown", 2)}
STATUSES = ("fail", "error", "unreachable", "waived", "skipped", "pass", "unknown")
_ORDER = {"fail": 0, "error": 1, "unreachable": 1, "waived": 3, "skipped": 4, "pass": 5}  # others: 2
_SEV = {"blocker": 0, "warning": 1, "info": 2}
NO_GROUP = "(no group)"


def css_string(value: Any) -> Markup:
    """A CSS string literal (for @page margin boxes): every non-alphanumeric character escaped."""
    return Markup('"' + re.sub(r"[^A-Za-z0-9 ._:+-]", lambda m: f"\\{ord(m.group()):x} ", str(value)) + '"')


def readiness_class(value: str) -> str:
    return f"r-{value}" if value in READINESS else "r-other"


def readiness_label(value: str) -> str:
    return READINESS.get(value, (value, 0))[0]


def status_class(value: str) -> str:
    return f"st-{value}" if value in STATUSES else "st-other"


_env.filters.update(css_string=css_string, rclass=readiness_class, rlabel=readiness_label, sclass=status_class)


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else 0.0


def _counts_notice(f: dict[str, Any]) -> bool:
    return f.get("severity") == "info"


def view(doc: dict[str, Any]) -> dict[str, Any]:
    """Everything the template shows, computed once (the template only lays it out)."""
    guests = []
    by_check: dict[str, dict[str, Any]] = {}
    for i, g in enumerate(doc["guests"], start=1):
        findings = sorted(g["findings"], key=lambda f: (_ORDER.get(f["status"], 2), _SEV.get(f["severity"], 3),
                                                       f["check_id"], f.get("resource", "")))
        rows = []
        for f in findings:
            waiver, state = waiver_of(f)
            rows.append({**f, "open": status_open(f["status"]), "waiver_info": waiver, "waiver_state": state})
        open_ = [f for f in rows if f["open"]]
        # shown in the guest's table: everything but passes and skips (open, waived, undecided such as
        # "unknown"/"not_checked", and any status this version does not know)
        attention = [f for f in rows if f["status"] not in ("pass", "skipped") or f["waiver_state"]]
        rest = [f for f in rows if f not in attention]
        counting = [f for f in open_ if not _counts_notice(f)]
        guests.append({
            **g, "idx": i, "rows": rows, "attention": attention, "rest": rest,
            "blockers": sum(1 for f in counting if f["severity"] == "blocker"),
            "warnings": sum(1 for f in counting if f["severity"] == "warning"),
            "open_checks": sorted({f["check_id"] for f in open_}),
            "system": (g.get("facts_summary") or {}).get("distro") or (g.get("facts_summary") or {}).get("os_name") or "",
            "groups": list(g.get("groups") or []),
        })
        for f in rows:
            c = by_check.setdefault(f["check_id"], {"id": f["check_id"], "title": f.get("title", ""),
                                                    "severity": f["severity"], "guests": defaultdict(list),
                                                    "statuses": Counter()})
            c["statuses"][f["status"]] += 1
            if f["status"] != "pass":
                c["guests"][g["guest"]].append({**f, "idx": i})

    total = len(guests)
    names = {g["guest"] for g in guests}
    not_checked = [n for n in doc.get("not_run", []) if n not in names]
    readiness = Counter(g["readiness"] for g in guests)
    order = sorted(readiness, key=lambda r: (r not in READINESS, ["ready", "warnings", "blocked", "unknown"].index(r)
                                             if r in READINESS else 0, r))
    fleet_total = total + len(not_checked)
    segments, x = [], 0.0
    for r in order:
        share = 100.0 * readiness[r] / fleet_total if fleet_total else 0
        segments.append({"value": r, "label": readiness_label(r), "count": readiness[r], "pct": _pct(readiness[r], fleet_total),
                         "x": round(x, 3), "w": round(share, 3)})
        x += share
    if not_checked:
        share = 100.0 * len(not_checked) / fleet_total
        segments.append({"value": "not-checked", "label": "not checked", "count": len(not_checked),
                         "pct": _pct(len(not_checked), fleet_total), "x": round(x, 3), "w": round(share, 3)})

    blocking: dict[str, set[str]] = defaultdict(set)
    for g in guests:
        for f in g["rows"]:
            if f["open"] and f["severity"] == "blocker":
                blocking[f["check_id"]].add(g["guest"])
    top_blocking = [{"id": cid, "title": by_check[cid]["title"], "guests": len(gs), "pct": _pct(len(gs), total)}
                    for cid, gs in sorted(blocking.items(), key=lambda kv: (-len(kv[1]), kv[0]))][:10]

    def breakdown(key) -> list[dict[str, Any]]:
        table: dict[str, Counter] = defaultdict(Counter)
        for g in guests:
            for k in key(g):
                table[k][g["readiness"]] += 1
        return [{"name": k, "total": sum(c.values()), "counts": c} for k, c in sorted(table.items())]

    checks = sorted((c for c in by_check.values() if c["guests"]),
                    key=lambda c: (-len(blocking.get(c["id"], ())), _SEV.get(c["severity"], 3), c["id"]))
    all_groups = sorted({grp for g in guests for grp in g["groups"]})
    return {
        "doc": doc, "guests": guests, "total": total, "segments": segments, "not_checked": not_checked,
        "readiness_values": order, "top_blocking": top_blocking,
        "by_os": breakdown(lambda g: [g["os"]]),
        "by_group": breakdown(lambda g: g["groups"] or [NO_GROUP]) if all_groups else [],
        "checks": checks, "oses": sorted({g["os"] for g in guests}), "groups": all_groups,
        "check_ids": sorted({cid for g in guests for cid in g["open_checks"]}),
        "inputs": doc.get("inputs") or {},
    }


def _script() -> str:
    return _env.loader.get_source(_env, "report.js")[0]  # plain text: no template syntax inside


def render(doc: dict[str, Any]) -> str:
    script = _script()
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    return _env.get_template("report.html.j2").render(script=Markup(script), script_hash=digest, **view(doc))
