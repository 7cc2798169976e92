"""One decision of "is this finding open", asked by readiness, the exit code and every report."""

import pytest

from guestprep.models import Finding, Readiness, Severity, Status, is_open, readiness_of
from guestprep.report import exit_code


@pytest.mark.parametrize("status, severity, expected", [
    ("fail", "blocker", True), ("fail", "warning", True), ("fail", "info", False),
    ("error", "info", True), ("unreachable", "blocker", True),
    ("pass", "blocker", False), ("skipped", "blocker", False), ("waived", "blocker", False),
])
def test_is_open_accepts_enums_and_strings(status, severity, expected):
    assert is_open(status, severity) is expected
    assert is_open(Status(status), Severity(severity)) is expected
    f = Finding("g", "X-1", Severity(severity), Status(status), "t", "m")
    assert f.is_open is expected


def test_an_info_notice_changes_neither_readiness_nor_exit_code():
    notice = Finding("g", "X-1", Severity.INFO, Status.FAIL, "t", "m")
    assert readiness_of([notice]) is Readiness.READY
    assert exit_code([notice], "info") == 0
