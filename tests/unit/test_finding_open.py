"""One decision of "is this finding open" (Status.is_open), asked by readiness, the exit code,
every report format and guestprep-host's audit; severity only weighs an open finding."""

import pytest

from guestprep.models import Finding, Readiness, Severity, Status, readiness_of
from guestprep.report import exit_code


@pytest.mark.parametrize("status, expected", [
    ("fail", True), ("error", True), ("unreachable", True),
    ("pass", False), ("skipped", False), ("waived", False),
])
def test_open_is_decided_by_the_status(status, expected):
    assert Status(status).is_open is expected
    for severity in Severity:
        assert Finding("g", "X-1", severity, Status(status), "t", "m").is_open is expected


def test_an_open_notice_changes_neither_readiness_nor_exit_code():
    notice = Finding("g", "X-1", Severity.INFO, Status.FAIL, "t", "m")
    assert notice.is_open and notice.severity.is_notice
    assert readiness_of([notice]) is Readiness.READY
    assert exit_code([notice], "warning") == 0
