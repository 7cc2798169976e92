"""JUnit XML: a testsuite per guest, a testcase per check result, so CI dashboards show readiness."""

from __future__ import annotations

import json
import re
from typing import Any
from xml.etree import ElementTree as ET

from guestprep.models import Severity, Status

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


def render(doc: dict[str, Any]) -> str:
    doc = _clean(doc)
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
            status, notice = Status(f["status"]), Severity(f["severity"]).is_notice
            if status is Status.FAIL and not notice:
                counts["failures"] += 1
                ET.SubElement(case, "failure", message=f["message"], type=f["severity"]).text = text
            elif status.is_open and status is not Status.FAIL:  # error, unreachable: not judged
                counts["errors"] += 1
                ET.SubElement(case, "error", message=f["message"], type=status.value).text = text
            elif status in (Status.SKIPPED, Status.WAIVED):
                counts["skipped"] += 1
                msg = f["message"] if status is Status.SKIPPED else f"waived: {(f.get('waiver') or {}).get('reason', '')}"
                ET.SubElement(case, "skipped", message=msg)
            elif status is Status.FAIL:  # a notice (info) is not a failure
                ET.SubElement(case, "system-out").text = text
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        suites.set(k, str(v))
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
