"""JUnit XML: a testsuite per guest, a testcase per check result, so CI dashboards show readiness."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree as ET


def render(doc: dict[str, Any]) -> str:
    suites = ET.Element("testsuites", name="guestprep preflight")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for g in doc["guests"]:
        suite = ET.SubElement(suites, "testsuite", name=g["guest"], hostname=g["address"])
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        props = ET.SubElement(suite, "properties")
        for k in ("os", "transport", "readiness"):
            ET.SubElement(props, "property", name=k, value=str(g[k]))
        for f in g["findings"]:
            name = f["check_id"] + (f" [{f['resource']}]" if f["resource"] else "")
            case = ET.SubElement(suite, "testcase", classname=f"{g['guest']}.{f['check_id']}", name=name)
            counts["tests"] += 1
            text = f"{f['message']}\nseverity: {f['severity']}\nremediation: {f['remediation']}\n" \
                   f"evidence: {json.dumps(f['evidence'], sort_keys=True)}"
            status = f["status"]
            if status == "fail" and f["severity"] != "info":
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=f["message"], type=f["severity"]).text = text
            elif status in ("error", "unreachable"):
                counts["errors"] += 1
                ET.SubElement(case, "error", message=f["message"], type=status).text = text
            elif status in ("skipped", "waived"):
                counts["skipped"] += 1
                msg = f["message"] if status == "skipped" else f"waived: {(f.get('waiver') or {}).get('reason', '')}"
                ET.SubElement(case, "skipped", message=msg)
            elif status == "fail":  # info notices are not failures
                ET.SubElement(case, "system-out").text = text
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        suites.set(k, str(v))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
