"""What the machine outputs carry beyond findings (issue 16, "Machine outputs"): run id, the
input files with SHA-256, a stable finding id in every format, JUnit time/timestamp, CSV
timestamp/tool version/waiver columns, a schema that allows additive changes, and statuses this
version does not know rendered generically."""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
from pathlib import Path
from xml.etree import ElementTree as ET

import jsonschema
import pytest

from guestprep import report
from guestprep.models import Finding, Guest, GuestReport, Readiness, Severity, Status
from guestprep.preflight import FleetReport
from guestprep.report import enrich, waivers

pytestmark = pytest.mark.unit
SCHEMA = json.loads((Path(__file__).resolve().parents[2] / "docs" / "report-schema.json").read_text())


def fleet(tmp_path, *, status=Status.FAIL, readiness=Readiness.BLOCKED, waive=None):
    fs = [Finding(guest="web01", check_id="LNX-PART-ALIGN", severity=Severity.WARNING, status=status, title="t",
                  message="m", resource="sda1", remediation="fix"),
          Finding(guest="web01", check_id="LNX-QEMU-GA", severity=Severity.BLOCKER, status=Status.PASS, title="t",
                  message="ok", resource="")]
    if waive:
        path = tmp_path / "waivers.yaml"
        path.write_text(f"waivers:\n  - check: LNX-PART-ALIGN\n    reason: realigned later\n    by: storage team\n"
                        f"    expires: {waive}\n")
        waivers.apply(fs, waivers.load(path))
    g = GuestReport(guest="web01", address="10.0.0.1", os="linux", transport="ssh", readiness=readiness, findings=fs,
                    duration=2.5)
    return FleetReport(guests=[g], started="2026-01-31T09:00:00+00:00", finished="2026-01-31T09:00:07+00:00",
                       complete=True, phase="pre").to_dict()


def write(tmp_path, doc):
    report.write_reports(doc, list(report.FORMATS), tmp_path / "out")
    out = tmp_path / "out"
    return (json.loads((out / "report.json").read_text()), ET.parse(out / "junit.xml").getroot(),
            list(csv.DictReader((out / "findings.csv").open(newline=""))), (out / "report.html").read_text())


def test_run_id_inputs_and_groups_in_json(tmp_path):
    inv = tmp_path / "fleet.yaml"
    inv.write_text("guests: []\n")
    doc = report.annotate(fleet(tmp_path), guests=[Guest(name="web01", address="10.0.0.1", groups=("web", "pci"))],
                          inventory=inv, waivers=None)
    js, junit, rows, html = write(tmp_path, doc)
    assert js["run_id"] == doc["run_id"] and len(js["run_id"]) == len("20260131T090000-abc123")
    assert js["inputs"] == {"inventory": {"path": str(inv), "sha256": hashlib.sha256(inv.read_bytes()).hexdigest()},
                            "waivers": None}
    assert js["guests"][0]["groups"] == ["web", "pci"]
    assert rows[0]["run_id"] == js["run_id"] and rows[0]["groups"] == "web pci"
    assert {p.get("name"): p.get("value") for p in junit.iter("property")}["run_id"] == js["run_id"]
    assert js["run_id"] in html and hashlib.sha256(inv.read_bytes()).hexdigest() in html
    jsonschema.validate(js, SCHEMA)


def test_a_document_without_annotate_still_gets_a_run_id(tmp_path):
    js, *_ = write(tmp_path, fleet(tmp_path))
    assert js["run_id"] and js["inputs"] == {"inventory": None, "waivers": None}
    jsonschema.validate(js, SCHEMA)


def test_finding_id_is_stable_and_in_every_format(tmp_path):
    fid = enrich.finding_id("web01", "LNX-PART-ALIGN", "sda1")
    assert fid == hashlib.sha256("web01\x1fLNX-PART-ALIGN\x1fsda1".encode()).hexdigest()[:12]
    assert enrich.finding_id("web01", "LNX-PART-ALIGN", "sda2") != fid
    js1, junit, rows, html = write(tmp_path, fleet(tmp_path))
    js2, *_ = write(tmp_path / "again", fleet(tmp_path))
    assert js1["guests"][0]["findings"][0]["id"] == js2["guests"][0]["findings"][0]["id"] == fid
    assert rows[0]["id"] == fid
    case = junit.find("testsuite/testcase")
    assert {p.get("name"): p.get("value") for p in case.iter("property")}["id"] == fid
    assert f'id="f-{fid}"' in html


def test_junit_time_and_timestamp(tmp_path):
    _, junit, _, _ = write(tmp_path, fleet(tmp_path))
    suite = junit.find("testsuite")
    assert suite.get("timestamp") == "2026-01-31T09:00:00" and float(suite.get("time")) == 2.5
    assert float(junit.get("time")) == 7.0 and junit.get("timestamp") == "2026-01-31T09:00:00"
    assert all(c.get("time") is not None for c in junit.iter("testcase"))


def test_csv_timestamp_tool_version_and_waiver_columns(tmp_path):
    until = dt.date.today() + dt.timedelta(days=30)
    _, _, rows, html = write(tmp_path, fleet(tmp_path, waive=until.isoformat()))
    row = rows[0]
    assert row["status"] == "waived" and row["waived_by"] == "storage team" and row["waiver_reason"] == "realigned later"
    assert row["waiver_expires"] == until.isoformat() and row["waiver_state"] == "active"
    assert row["timestamp"] == "2026-01-31T09:00:07+00:00" and row["tool_version"]
    assert list(rows[0])[:13] == ["guest", "address", "os", "readiness", "check_id", "severity", "status", "resource",
                                 "title", "message", "remediation", "fixed_by", "evidence"]  # old columns keep their place
    assert "waived by storage team" in html and f"until {until.isoformat()}" in html


def test_an_expired_waiver_is_visible_as_such(tmp_path):
    past = dt.date.today() - dt.timedelta(days=1)
    js, junit, rows, html = write(tmp_path, fleet(tmp_path, waive=past.isoformat()))
    assert rows[0]["status"] == "fail" and rows[0]["waiver_state"] == "expired"
    assert rows[0]["waived_by"] == "storage team" and rows[0]["waiver_expires"] == past.isoformat()
    assert f"waiver expired {past.isoformat()}" in html
    props = {p.get("name"): p.get("value") for p in junit.find("testsuite/testcase").iter("property")}
    assert props["waiver_state"] == "expired"


def test_schema_allows_additive_changes():
    def walk(node):
        if isinstance(node, dict):
            assert node.get("additionalProperties") is not False, node
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)
    walk(SCHEMA)
    doc = fleet(Path("."))
    doc["a_later_field"] = 1
    doc["guests"][0]["findings"][0]["status"] = "some_later_status"
    jsonschema.validate(report.enrich.complete(doc), SCHEMA)


@pytest.mark.parametrize("status", ["unknown", "not_checked", "some_later_status"])
def test_statuses_this_report_does_not_know_render_generically(tmp_path, status):
    doc = fleet(tmp_path)
    doc["guests"][0]["findings"][0]["status"] = status
    doc["guests"][0]["readiness"] = "a_later_readiness" if status == "some_later_status" else "unknown"
    js, junit, rows, html = write(tmp_path, doc)
    assert rows[0]["status"] == status
    err = junit.find("testsuite/testcase/error")
    assert err is not None and err.get("type") == status  # not judged: never a silent pass
    assert f">{status}</span>" in html  # shown by its name, in the guest's table (not folded into passes)
    if status == "some_later_status":
        assert 'class="st-other"' in html and 'class="r-other"' in html
