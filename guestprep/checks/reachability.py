"""Reachability: every fleet run reports, per guest, whether facts could be gathered."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, ok
from guestprep.checks.registry import check
from guestprep.models import Severity

_META = dict(
    severity=Severity.BLOCKER, phase="any",
    rationale="Without facts nothing can be judged; an unreachable guest or garbage collector output is "
              "reported as such, never as 'ready'.",
    remediation="Check address, port, credentials, host key (known_hosts) and that the transport is enabled; "
                "the finding's message names the exact failure.",
)


@check(id="LNX-REACHABLE", os="linux", title="Guest reachable and collector output valid", **_META)
def linux_reachable(facts) -> Iterable[Outcome]:
    yield ok("collector", "facts collected")


@check(id="WIN-REACHABLE", os="windows", title="Guest reachable and collector output valid", **_META)
def windows_reachable(facts) -> Iterable[Outcome]:
    yield ok("collector", "facts collected")
