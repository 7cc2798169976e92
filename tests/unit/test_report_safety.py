"""Report files and terminal rendering with hostile values (issue 13, items 9, 10, 12)."""

from __future__ import annotations

import csv
import io
import json
from xml.etree import ElementTree as ET

import pytest
from rich.console import Console

from guestprep import report, secrets
from guestprep.console import make_console, safe
from guestprep.preflight import FleetReport
from guestprep.models import Finding, GuestReport, Readiness, Severity, Status

pytestmark = pytest.mark.unit


def doc_with(message: str, *, guest: str = "web01", resource: str = "r", evidence=None) -> dict:
    f = Finding(guest=guest, check_id="LNX-X", severity=Severity.BLOCKER, status=Status.FAIL, title="t",
                message=message, resource=resource, evidence=evidence or {"v": message}, remediation="fix")
    g = GuestReport(guest=guest, address="10.0.0.1", os="linux", transport="ssh", readiness=Readiness.BLOCKED,
                    findings=[f])
    return FleetReport(guests=[g], started="s", finished="f", complete=True, phase="pre").to_dict()


# --------------------------------------------------------------------------- item 12: JUnit


def test_junit_stays_xml_with_nul_esc_and_surrogates(tmp_path):
    hostile = "a\x00b\x1b[31mc\x07d\x0be\ud800f\ufffe"
    doc = doc_with(hostile, guest="g\x1bx", resource="\x00")
    report.write_reports(doc, ["junit"], tmp_path)
    root = ET.parse(tmp_path / "junit.xml").getroot()  # raised "not well-formed" before
    failure = root.find("testsuite/testcase/failure")
    assert failure.get("message") == "a\\x00b\\x1b[31mc\\x07d\\x0be\\ud800f\\ufffe"
    assert root.find("testsuite").get("name") == "g\\x1bx"


# --------------------------------------------------------------------------- item 12: CSV (OWASP CSV injection)


@pytest.mark.parametrize("value", ["=1+1", " =1+1", "\t=1+1", "\n=1+1", "  +SUM(A1)", "-2+3", "@cmd", "\r=1",
                                   "\uff1d1+1"])
def test_csv_cells_never_start_a_formula(value, tmp_path):
    report.write_reports(doc_with(value), ["csv"], tmp_path)
    rows = list(csv.DictReader((tmp_path / "findings.csv").open(newline="")))
    assert rows[0]["message"] == "'" + value


def test_csv_separator_inside_a_value_cannot_start_a_cell(tmp_path):
    # "x;=1+1": in a ';'-separator locale an unquoted cell splits and "=1+1" starts a cell
    report.write_reports(doc_with("x;=1+1"), ["csv"], tmp_path)
    text = (tmp_path / "findings.csv").read_text()
    assert '"x;=1+1"' in text
    for line in text.splitlines():
        assert all(c.startswith('"') for c in line.split(",") if c), line  # every cell quoted
    assert list(csv.DictReader(io.StringIO(text)))[0]["message"] == "x;=1+1"


def test_csv_keeps_harmless_values():
    from guestprep.report import csv as csv_report

    assert csv_report._cell("web01") == "web01" and csv_report._cell("a-b=c") == "a-b=c"


# --------------------------------------------------------------------------- item 10: redaction


def test_every_report_format_is_redacted(tmp_path):
    secrets.register("S3cr3t-unit-pw")
    doc = doc_with("guest said S3cr3t-unit-pw", evidence={"S3cr3t-unit-pw": ["x S3cr3t-unit-pw"]})
    written = report.write_reports(doc, list(report.FORMATS), tmp_path)
    assert len(written) == 4
    for p in written:
        text = p.read_text()
        assert "S3cr3t-unit-pw" not in text and secrets.REDACTED in text, p.name


def test_the_dead_log_filter_is_gone():
    assert not hasattr(secrets, "RedactingFilter")  # nothing logs through logging; one redaction pass


# --------------------------------------------------------------------------- item 9: terminal


def render_summary(doc) -> str:
    from guestprep.commands import preflight as cli

    buf = io.StringIO()
    old = cli.console
    cli.console = Console(file=buf, width=200, highlight=False)
    try:
        cli.print_summary(doc)
    finally:
        cli.console = old
    return buf.getvalue()


def test_vm_name_with_brackets_keeps_them_in_the_summary():
    out = render_summary(doc_with("/boot/[/]initrd [link=http://e/]x[/link] \x1b]8;;http://e\x1b\\", guest="web01 [old]"))
    assert "web01 [old]" in out
    assert "/boot/[/]initrd [link=http://e/]x[/link]" in out
    assert "\x1b" not in out and "\\x1b]8;;http://e" in out


def test_safe_makes_controls_visible_and_escapes_markup():
    assert safe("a[b]c") == "a\\[b]c"
    assert safe("x\x1b[2Jy\x9b1m\u202ez") == "x\\x1b[2Jy\\x9b1m\\u202ez"  # "[2J" is no tag: rich needs no escape
    assert safe("l1\nl2") == "l1\\x0al2" and safe("l1\nl2", multiline=True) == "l1\nl2"


def test_prepare_block_shows_guest_values_literally():
    from types import SimpleNamespace as NS

    from guestprep.operations.render import prepare_block

    plan = NS(empty=False, reason="fix [bold]x[/] \x1b[31m", changes=[
        NS(kind="write", target="/etc/[/]f", diff="-a\x1b]8;;http://e\x1b\\\n+b\n")], warnings=["w[/]"])
    op = NS(operation="linux.x", error=None, plan=plan, verified=None, applied=None, problems=[])
    r = NS(guest="web01 [old]", os="linux", run_id="r1", error="e[/]", ops=[op], changes=1, interrupted=False)
    buf = io.StringIO()
    Console(file=buf, width=200).print(prepare_block(r, False))
    out = buf.getvalue()
    for literal in ("web01 [old]", "fix [bold]x[/] \\x1b[31m", "/etc/[/]f", "w[/]", "e[/]", "\\x1b]8;;http://e"):
        assert literal in out
    assert "\x1b" not in out


def test_piped_console_has_no_width_limit():
    c = make_console()
    c.file = io.StringIO()
    c.print("word " * 100)
    assert c.file.getvalue().count("\n") == 1
