"""The cutover report, from the journal only: per VM its phase, both sides' state, downtime,
every step attempt with timings and errors, and the verification evidence. JSON
(``guestprep.cutover-report/1``), JUnit (a testsuite per VM, a testcase per step) and one
self-contained HTML page, written atomically into the wave's state directory."""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import tempfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from guestprep.secrets import redact_doc

from guestprep.cutover.journal import Journal
from guestprep.cutover.wave import Wave

REPORT_SCHEMA = "guestprep.cutover-report/1"


def _seconds(a: str | None, b: str | None) -> float | None:
    if not a or not b:
        return None
    return round((dt.datetime.fromisoformat(b) - dt.datetime.fromisoformat(a)).total_seconds(), 3)


def document(wave: Wave, journal: Journal) -> dict[str, Any]:
    vms = []
    for plan in wave.vms:
        rec = journal.vm(plan.name) or {"phase": "pending", "source": {}, "target": {}, "downtime_s": None,
                                        "error": None}
        steps = [{"step": a["step"], "attempt": a["attempt"], "status": a["status"], "started": a["started_at"],
                  "ended": a["ended_at"], "seconds": _seconds(a["started_at"], a["ended_at"]), "error": a["error"],
                  "outputs": a["outputs"]} for a in journal.attempts(plan.name)]
        verify = next((s["outputs"] for s in reversed(steps) if s["step"] == "verify" and s["status"] == "done"), None)
        vms.append({"vm": plan.name, "moref": plan.moref, "target": {"node": plan.node, "vmid": plan.vmid},
                    "phase": rec["phase"], "error": rec["error"], "downtime_s": rec["downtime_s"],
                    "source_state": rec["source"], "target_state": rec["target"], "verification": verify,
                    "steps": steps})
    return redact_doc({"schema": REPORT_SCHEMA, "wave": str(wave.path), "plan_hash": wave.plan_hash,
                       "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "vms": vms})


def junit(doc: dict[str, Any]) -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>"]
    for vm in doc["vms"]:
        failed = [s for s in vm["steps"] if s["status"] == "failed"]
        out.append(f"  <testsuite name={quoteattr('cutover ' + vm['vm'])} tests=\"{len(vm['steps'])}\" "
                   f"failures=\"{len(failed)}\">")
        for s in vm["steps"]:
            out.append(f"    <testcase classname={quoteattr(vm['vm'])} name={quoteattr(s['step'] + ' #' + str(s['attempt']))} "
                       f"time=\"{s['seconds'] or 0}\">")
            if s["status"] == "failed":
                out.append(f"      <failure message={quoteattr(str(s['error'])[:500])}>{escape(str(s['error']))}</failure>")
            out.append("    </testcase>")
        out.append(f"    <system-out>{escape('phase ' + vm['phase'] + '; source ' + json.dumps(vm['source_state']) + '; target ' + json.dumps(vm['target_state']))}</system-out>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def page(doc: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for vm in doc["vms"]:
        steps = "".join(f"<li>{e(s['step'])} #{s['attempt']}: {e(s['status'])}"
                        f"{' (' + str(s['seconds']) + ' s)' if s['seconds'] is not None else ''}"
                        f"{' — ' + e(str(s['error'])) if s['error'] else ''}</li>" for s in vm["steps"])
        rows.append(f"<tr><td>{e(vm['vm'])}</td><td>{e(vm['phase'])}</td><td>{e(str(vm['downtime_s']))}</td>"
                    f"<td>{e(json.dumps(vm['source_state']))}</td><td>{e(json.dumps(vm['target_state']))}</td>"
                    f"<td>{e(vm['error'] or '')}</td><td><ul>{steps}</ul></td></tr>")
    return ("<!doctype html><meta charset=utf-8><title>guestprep cutover</title>"
            "<style>body{font-family:sans-serif}td{vertical-align:top;border-top:1px solid #ccc;padding:4px}</style>"
            f"<h1>Cutover {e(doc['wave'])}</h1><p>plan {e(doc['plan_hash'][:16])}, {e(doc['generated'])}</p>"
            "<table><tr><th>VM</th><th>phase</th><th>downtime s</th><th>source</th><th>target</th><th>error</th>"
            f"<th>steps</th></tr>{''.join(rows)}</table>\n")


def _atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write(wave: Wave, journal: Journal) -> list[str]:
    doc = document(wave, journal)
    files = [(wave.state_dir / "report.json", json.dumps(doc, indent=2, sort_keys=True) + "\n"),
             (wave.state_dir / "junit.xml", junit(doc)), (wave.state_dir / "report.html", page(doc))]
    for path, text in files:
        _atomic(path, text)
    return [str(p) for p, _ in files]
