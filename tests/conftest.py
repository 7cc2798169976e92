"""Suite-wide fixtures: the repository layout and a real sshd on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
sys.path.insert(0, str(REPO))  # tests.support is importable from every test directory

from tests.support.sshd import SSHServer, start_sshd  # noqa: E402


def pytest_collection_modifyitems(config, items) -> None:
    """Parallel runs (scripts/run-tests.sh: pytest-xdist --dist loadscope, a module per worker at a
    time): on the workers the QEMU lab modules (minutes each, one TCG core per guest) come first,
    so with --no-loadscope-reorder they are handed out first, start at once, and the rest runs beside them."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: item.get_closest_marker("lab") is None)  # stable: order kept otherwise


# Skipped is not passed: a test that needs a real part installs it or fails. The skips that are
# allowed (not a missing part, but a case that does not apply here) are listed with why; any
# other skip fails the run, and every skip is printed at the end.
ALLOWED_SKIPS: dict[str, str] = {
    # "tests/path.py::test_name": "why this skip is not a missing part",
}
_skips: list[tuple[str, str]] = []


def pytest_runtest_logreport(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skips.append((report.nodeid, reason))
    elif report.failed:
        _early_report(report)


# The first few failures are printed as they happen, not only in the summary at the end: a run that
# is cut short, or read from the head of its output (a CI excerpt), still shows why it failed.
EARLY_FAILURES = 3
EARLY_LINES = 25
_early: list[str] = []
_config = None


def pytest_configure(config) -> None:
    global _config
    _config = config


# The labs' guest images, copies and conversions peak at ~16 GiB under the temporary directory: with
# less free, they fail one by one with ENOSPC (hundreds of errors); say it once, before anything starts.
MIN_FREE_GIB = 12


def pytest_sessionstart(session) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    tmp = tempfile.gettempdir()
    free = shutil.disk_usage(tmp).free / 2**30
    if free < MIN_FREE_GIB:
        pytest.exit(f"only {free:.1f} GiB free in {tmp}: the suite's guest images need ~{MIN_FREE_GIB} GiB "
                    "(free some space: old /tmp/pytest-of-*/pytest-* runs, /var/tmp/guestprep-cache)", returncode=1)


def pytest_report_header(config) -> list[str]:
    """What the labs depend on, at the head of the output (where a CI excerpt shows it)."""
    cache = Path(os.environ.get("GUESTPREP_LAB_CACHE", "/var/tmp/guestprep-cache"))
    entries = sorted(p.name for p in cache.iterdir() if not p.name.endswith((".lock", ".last-used"))) \
        if cache.is_dir() else []
    free = shutil.disk_usage(REPO).free / 2**30
    tmp = tempfile.gettempdir()   # what pytest_sessionstart checks, and where the runs write
    tmp_free = shutil.disk_usage(tmp).free / 2**30
    return [f"guestprep: shared/ {'found' if SHARED.is_dir() else 'MISSING'} at {SHARED}; "
            f"free disk {free:.1f} GiB (checkout), {tmp_free:.1f} GiB ({tmp}); uid {os.getuid()}; "
            f"load {os.getloadavg()[0]:.2f}",
            f"guestprep: lab cache {cache}: " + (", ".join(entries) if entries else "empty (images are built: minutes)")]


def _early_report(report) -> None:
    terminal = _config.pluginmanager.get_plugin("terminalreporter") if _config else None
    if os.environ.get("PYTEST_XDIST_WORKER") or terminal is None or len(_early) >= EARLY_FAILURES:
        return
    _early.append(report.nodeid)
    lines = str(report.longrepr).splitlines()
    terminal.write_line("")
    terminal.write_line(f"---- early report {len(_early)}/{EARLY_FAILURES}: {report.nodeid} ({report.when}) "
                         "failed; its last lines (the whole report is in the summary) ----")
    for line in lines[-EARLY_LINES:]:
        terminal.write_line("    " + line[:300])


def _allowed(nodeid: str) -> bool:
    return any(nodeid == k or nodeid.startswith(k + "[") for k in ALLOWED_SKIPS)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or not _skips:
        return
    terminalreporter.section("skips (skipped is not passed)")
    for nodeid, reason in sorted(_skips):
        verdict = "allowed: " + ALLOWED_SKIPS[nodeid.split("[")[0]] if _allowed(nodeid) else "NOT ALLOWED"
        terminalreporter.write_line(f"{nodeid}: {reason} [{verdict}]")


def pytest_sessionfinish(session, exitstatus) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or os.environ.get("GUESTPREP_ALLOW_SKIPS"):
        return
    if any(not _allowed(nodeid) for nodeid, _ in _skips) and session.exitstatus == 0:
        session.exitstatus = 1


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.fail(f"shared/ not found beside the checkout at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def sshd(tmp_path_factory) -> SSHServer:
    """A real OpenSSH server for the whole session (generated host and user keys)."""
    if not shutil.which("sshd") and not Path("/usr/sbin/sshd").exists():
        pytest.fail("sshd missing: install openssh-server (make test does this as root)")
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


@pytest.fixture
def ssh_inventory(sshd, tmp_path):
    """Write a fleet inventory of N guests that are all the test sshd; returns (path, guests)."""

    def make(n: int = 1, **extra) -> Path:
        lines = ["guests:"]
        for i in range(n):
            lines += [f"  - name: guest{i:03d}", f"    address: {sshd.host}", f"    port: {sshd.port}",
                      "    user: root", f"    key_file: {sshd.user_key}", "    agent: false"]
            for k, v in extra.items():
                lines.append(f"    {k}: {v}")
        path = tmp_path / "fleet.yaml"
        path.write_text("\n".join(lines) + "\n")
        return path

    return make
