"""JUnit XML: a testsuite per guest, a testcase per check result, so CI dashboards show readiness."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any
from xml.etree import ElementTree as ET

from guestprep.models import Severity
from guestprep.report.enrich import waiver_of

# Characters XML 1.0 forbids (C0 controls but tab/LF/CR, lone surrogates, U+FFFE/U+FFFF): ElementTree
# writes them as they are and the file stops being XML. They are shown as escapes instead.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _x(value: Any) -> str:
    return _NOT_XML.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}",
                        str(value))


def _clean(node: Any) -> Any:
    """Every string of the document made XML-safe, once, before any element is built."""
    if isinstance(node, str):
        return _x(node)
    if isinstance(node, dict):
        return {_clean(k): _clean(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return node


def _notice(severity: str) -> bool:
    try:
        return Severity(severity).is_notice
    except ValueError:
        return False


def _suite_timestamp(started: Any) -> str:
    """JUnit's timestamp is ISO 8601 without a zone (the XSD's xs:dateTime); started is UTC."""
    text = str(started or "")
    return text[:19] if len(text) >= 19 and text[10:11] == "T" else text


def _wall(started: Any, finished: Any, fallback: float) -> float:
    """The run's wall time (guests run in parallel: their times add up to more)."""
    try:
        return max(0.0, (dt.datetime.fromisoformat(str(finished)) - dt.datetime.fromisoformat(str(started))).total_seconds())
    except ValueError:
        return fallback


def render(doc: dict[str, Any]) -> str:
    doc = _clean(doc)
    suites = ET.Element("testsuites", name="guestprep preflight")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    total_time = 0.0
    for g in doc["guests"]:
        duration = float(g.get("duration_s") or 0)
        total_time += duration
        suite = ET.SubElement(suites, "testsuite", name=g["guest"], hostname=g["address"],
                              timestamp=_suite_timestamp(doc.get("started")), time=f"{duration:.3f}")
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        props = ET.SubElement(suite, "properties")
        for k in ("os", "transport", "readiness"):
            ET.SubElement(props, "property", name=k, value=str(g[k]))
        ET.SubElement(props, "property", name="groups", value=" ".join(g.get("groups", [])))
        ET.SubElement(props, "property", name="run_id", value=str(doc.get("run_id", "")))
        ET.SubElement(props, "property", name="tool_version", value=str((doc.get("tool") or {}).get("version", "")))
        for f in g["findings"]:
            name = f["check_id"] + (f" [{f['resource']}]" if f["resource"] else "")
            # per-check times are not measured: the guest's time is on its testsuite
            case = ET.SubElement(suite, "testcase", classname=f"{g['guest']}.{f['check_id']}", name=name, time="0")
            cprops = ET.SubElement(case, "properties")
            ET.SubElement(cprops, "property", name="id", value=str(f.get("id", "")))
            waiver, state = waiver_of(f)
            if waiver:
                for k in ("by", "reason", "expires"):
                    ET.SubElement(cprops, "property", name=f"waiver_{k}", value=str(waiver.get(k, "")))
                ET.SubElement(cprops, "property", name="waiver_state", value=state)
            counts["tests"] += 1
            text = f"{f['message']}\nseverity: {f['severity']}\nremediation: {f['remediation']}\n" \
                   f"evidence: {json.dumps(f['evidence'], sort_keys=True)}"
            status, notice = str(f["status"]), _notice(f["severity"])
            if status == "fail" and not notice:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=f["message"], type=f["severity"]).text = text
            elif status == "fail":  # a notice (info) is not a failure
                ET.SubElement(case, "system-out").text = text
            elif status in ("skipped", "waived"):
                counts["skipped"] += 1
                msg = f["message"] if status == "skipped" else f"waived: {(f.get('waiver') or {}).get('reason', '')}"
                ET.SubElement(case, "skipped", message=msg)
            elif status != "pass":  # error, unreachable, and any status this version does not know: not judged
                counts["errors"] += 1
                ET.SubElement(case, "error", message=f["message"], type=status).text = text
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        suites.set(k, str(v))
    suites.set("time", f"{_wall(doc.get('started'), doc.get('finished'), total_time):.3f}")
    suites.set("timestamp", _suite_timestamp(doc.get("started")))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
