"""The cutover report, from the journal only: per VM its node, phase, both sides' state, downtime,
every step attempt with timings and errors, and the verification evidence; per node the VMs it
took, their outcome, its conversions and their downtimes. JSON (``guestprep.cutover-report/1``),
JUnit (a testsuite per VM, named for its node, a testcase per step attempt) and one
self-contained HTML page, written atomically into the wave's state directory.

Additive to earlier documents of the same schema: ``node``, ``started``, ``ended``, ``seconds``,
``timings`` and ``conversion_s`` per VM, ``nodes`` and ``summary`` at the top.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import statistics
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


def _timings(steps: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per step, every attempt counted (a retried step took all its attempts)."""
    out: dict[str, float] = {}
    for s in steps:
        if s["seconds"] is not None:
            out[s["step"]] = round(out.get(s["step"], 0.0) + s["seconds"], 3)
    return out


def _conversion_seconds(steps: list[dict[str, Any]]) -> float | None:
    """guestprep-host's own runs on the node, as the convert step recorded them per disk."""
    runs = [d.get("seconds") for s in steps if s["step"] == "convert" and s["status"] == "done"
            for d in (s["outputs"] or {}).get("disks") or [] if isinstance(d, dict)]
    runs = [r for r in runs if isinstance(r, (int, float))]
    return round(sum(runs), 3) if runs else None


def _vm(plan: Any, journal: Journal) -> dict[str, Any]:
    rec = journal.vm(plan.name) or {"phase": "pending", "source": {}, "target": {}, "downtime_s": None, "error": None}
    steps = [{"step": a["step"], "attempt": a["attempt"], "status": a["status"], "started": a["started_at"],
              "ended": a["ended_at"], "seconds": _seconds(a["started_at"], a["ended_at"]), "error": a["error"],
              "outputs": a["outputs"]} for a in journal.attempts(plan.name)]
    verify = next((s["outputs"] for s in reversed(steps) if s["step"] == "verify" and s["status"] == "done"), None)
    started = steps[0]["started"] if steps else None
    ended = max((s["ended"] for s in steps if s["ended"]), default=None)
    return {"vm": plan.name, "moref": plan.moref, "node": plan.node, "target": {"node": plan.node, "vmid": plan.vmid},
            "phase": rec["phase"], "error": rec["error"], "downtime_s": rec["downtime_s"],
            "source_state": rec["source"], "target_state": rec["target"], "verification": verify,
            "started": started, "ended": ended, "seconds": _seconds(started, ended), "timings": _timings(steps),
            "conversion_s": _conversion_seconds(steps), "steps": steps}


def _spread(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def per_node(vms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """What each Proxmox node took: its VMs, their phases, its conversions and the VMs' downtimes."""
    out = []
    for node in sorted({v["node"] for v in vms}):
        mine = [v for v in vms if v["node"] == node]
        phases: dict[str, int] = {}
        for v in mine:
            phases[v["phase"]] = phases.get(v["phase"], 0) + 1
        starts = [v["started"] for v in mine if v["started"]]
        ends = [v["ended"] for v in mine if v["ended"]]
        conv = [v["conversion_s"] for v in mine if v["conversion_s"] is not None]
        out.append({"node": node, "vms": [v["vm"] for v in mine], "phases": phases,
                    "disks_converted": sum(len((s["outputs"] or {}).get("disks") or []) for v in mine
                                           for s in v["steps"] if s["step"] == "convert" and s["status"] == "done"),
                    "conversion_s": round(sum(conv), 3) if conv else None,
                    "downtime_s": _spread([v["downtime_s"] for v in mine if v["downtime_s"] is not None]),
                    "started": min(starts) if starts else None, "ended": max(ends) if ends else None})
    return out


def document(wave: Wave, journal: Journal) -> dict[str, Any]:
    vms = [_vm(plan, journal) for plan in wave.vms]
    summary: dict[str, int] = {}
    for v in vms:
        summary[v["phase"]] = summary.get(v["phase"], 0) + 1
    return redact_doc({"schema": REPORT_SCHEMA, "wave": str(wave.path), "plan_hash": wave.plan_hash,
                       "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                       "summary": summary, "nodes": per_node(vms), "vms": vms})


def _evidence_words(vm: dict[str, Any]) -> str:
    v = vm.get("verification")
    if not v:
        return "not verified"
    words = [f"agent first answered {v.get('agent_first_answer_at')}",
             f"addresses {', '.join(v.get('addresses') or []) or 'none'} (expected {', '.join(v.get('expected_addresses') or []) or 'none'})",
             f"MACs {', '.join(v.get('macs') or []) or 'none'}"]
    con = v.get("console")
    if isinstance(con, dict):
        words.append(f"console {con.get('verdict')}" + (f": {con.get('line')!r}" if con.get("line") else ""))
    return "; ".join(words)


def junit(doc: dict[str, Any]) -> str:
    out = ['<?xml version="1.0" encoding="UTF-8"?>', "<testsuites>"]
    for vm in doc["vms"]:
        failed = [s for s in vm["steps"] if s["status"] == "failed"]
        out.append(f"  <testsuite name={quoteattr('cutover ' + vm['vm'])} hostname={quoteattr(vm['node'])} "
                   f"tests=\"{len(vm['steps'])}\" failures=\"{len(failed)}\" time=\"{vm['seconds'] or 0}\""
                   + (f" timestamp={quoteattr(vm['started'])}" if vm["started"] else "") + ">")
        out.append("    <properties>")
        for key, value in (("node", vm["node"]), ("vmid", vm["target"]["vmid"]), ("phase", vm["phase"]),
                           ("downtime_s", vm["downtime_s"]), ("conversion_s", vm["conversion_s"])):
            out.append(f"      <property name={quoteattr(key)} value={quoteattr(str(value))}/>")
        out.append("    </properties>")
        for s in vm["steps"]:
            out.append(f"    <testcase classname={quoteattr(vm['vm'])} name={quoteattr(s['step'] + ' #' + str(s['attempt']))} "
                       f"time=\"{s['seconds'] or 0}\">")
            if s["status"] == "failed":
                out.append(f"      <failure message={quoteattr(str(s['error'])[:500])}>{escape(str(s['error']))}</failure>")
            elif s["status"] == "interrupted":   # the controller died; resume redid the step (its next attempt)
                out.append(f"      <skipped message={quoteattr(str(s['error']))}/>")
            out.append("    </testcase>")
        out.append(f"    <system-out>{escape('phase ' + vm['phase'] + '; node ' + vm['node'] + '; downtime ' + str(vm['downtime_s']) + ' s; verification: ' + _evidence_words(vm) + '; source ' + json.dumps(vm['source_state']) + '; target ' + json.dumps(vm['target_state']))}</system-out>")
        out.append("  </testsuite>")
    out.append("</testsuites>")
    return "\n".join(out) + "\n"


def _s(value: Any) -> str:
    return "" if value is None else f"{value:.1f}" if isinstance(value, float) else str(value)


def page(doc: dict[str, Any]) -> str:
    e = html.escape
    nodes = "".join(
        f"<tr><td>{e(n['node'])}</td><td>{e(', '.join(n['vms']))}</td>"
        f"<td>{e(', '.join(f'{k}: {c}' for k, c in sorted(n['phases'].items())))}</td><td>{n['disks_converted']}</td>"
        f"<td>{_s(n['conversion_s'])}</td><td>{e(json.dumps(n['downtime_s']) if n['downtime_s'] else '')}</td>"
        f"<td>{e(n['started'] or '')}</td><td>{e(n['ended'] or '')}</td></tr>" for n in doc["nodes"])
    rows = []
    for vm in doc["vms"]:
        steps = "".join(f"<tr><td>{e(s['step'])}</td><td>{s['attempt']}</td><td>{e(s['status'])}</td>"
                        f"<td>{e(s['started'] or '')}</td><td>{_s(s['seconds'])}</td><td>{e(str(s['error'] or ''))}</td></tr>"
                        for s in vm["steps"])
        rows.append(f"<tr id=\"vm-{e(vm['vm'])}\"><td>{e(vm['vm'])}</td><td>{e(vm['node'])}/{vm['target']['vmid']}</td>"
                    f"<td class=\"{e(vm['phase'])}\">{e(vm['phase'])}</td><td>{_s(vm['downtime_s'])}</td>"
                    f"<td>{_s(vm['seconds'])}</td><td>{e(_evidence_words(vm))}</td>"
                    f"<td>{e(json.dumps(vm['source_state']))}</td><td>{e(json.dumps(vm['target_state']))}</td>"
                    f"<td>{e(vm['error'] or '')}</td><td><table class=steps><tr><th>step</th><th>#</th><th>status</th>"
                    f"<th>started</th><th>s</th><th>error</th></tr>{steps}</table></td></tr>")
    summary = ", ".join(f"{e(k)}: {c}" for k, c in sorted(doc["summary"].items()))
    return ("<!doctype html><meta charset=utf-8><title>guestprep cutover</title>"
            "<style>body{font-family:sans-serif}td,th{vertical-align:top;border-top:1px solid #ccc;padding:4px;"
            "text-align:left}.done{color:#070}.failed,.rollback_failed,.hold_failed{color:#b00}"
            ".rolled_back,.held{color:#a60}table.steps td,table.steps th{font-size:90%;padding:1px 4px}</style>"
            f"<h1>Cutover {e(doc['wave'])}</h1><p>plan {e(doc['plan_hash'][:16])}, {e(doc['generated'])}; {summary}</p>"
            "<h2>Per node</h2><table><tr><th>node</th><th>VMs</th><th>phases</th><th>disks converted</th>"
            f"<th>conversion s</th><th>downtime s</th><th>first step</th><th>last step</th></tr>{nodes}</table>"
            "<h2>Per VM</h2><table><tr><th>VM</th><th>node/vmid</th><th>phase</th><th>downtime s</th><th>took s</th>"
            "<th>verification</th><th>source</th><th>target</th><th>error</th><th>steps</th></tr>"
            f"{''.join(rows)}</table>\n")


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
