"""Journal reading and the rollback order (pure parts); the engine's exit codes."""

from __future__ import annotations

import pytest

from guestprep.errors import OperationError
from guestprep.models import Plan
from guestprep.operations import engine
from guestprep.operations.linux.journal import pending, undo_lines

pytestmark = pytest.mark.unit

ENTRIES = [
    {"run": "r1", "action": "backup", "path": "/etc/fstab", "backup": "/var/lib/guestprep/backup/r1/etc/fstab", "existed": True},
    {"run": "r1", "action": "write", "path": "/etc/fstab"},
    {"run": "r1", "action": "backup", "path": "/etc/x.link", "existed": False},
    {"run": "r1", "action": "service", "unit": "qga.service", "did": "enable", "before": "disabled"},
    {"run": "r1", "action": "service", "unit": "static.service", "did": "enable", "before": "static"},
    {"run": "r1", "action": "package", "manager": "apt-get", "installed": "qemu-guest-agent"},
    {"run": "r2", "action": "backup", "path": "/etc/fstab", "backup": "/var/lib/guestprep/backup/r2/etc/fstab", "existed": True},
]


def test_undo_is_newest_first_so_a_path_ends_at_its_oldest_backup():
    lines = undo_lines(ENTRIES)
    assert lines[0] == ("restore", "/etc/fstab", "/var/lib/guestprep/backup/r2/etc/fstab")
    assert lines[-1] == ("restore", "/etc/fstab", "/var/lib/guestprep/backup/r1/etc/fstab")
    assert ("remove", "/etc/x.link") in lines
    assert ("disable", "qga.service") in lines
    assert ("disable", "static.service") not in lines  # it was static before: leave it
    assert ("purge", "apt-get", "qemu-guest-agent") in lines


def test_pending_starts_after_the_last_successful_rollback():
    entries = ENTRIES + [{"action": "rollback", "failed": False},
                         {"run": "r3", "action": "backup", "path": "/etc/crypttab", "existed": False}]
    assert pending(entries) == entries[-1:]
    failed = ENTRIES + [{"action": "rollback", "failed": True}]
    assert pending(failed) == failed


def test_tab_in_a_journal_field_is_refused():
    with pytest.raises(OperationError, match="refusing to roll back"):
        undo_lines([{"action": "backup", "path": "/etc/a\tb", "existed": False}])


def test_exit_codes():
    ok = engine.GuestResult("a", "linux", ops=[engine.OpResult("x", "t", plan=Plan("x", "a"), verified=True)])
    bad_verify = engine.GuestResult("b", "linux", ops=[engine.OpResult("x", "t", plan=Plan("x", "b"), verified=False)])
    unreachable = engine.GuestResult("c", "linux", error="refused", error_code=3)
    assert engine.exit_code([ok]) == 0
    assert engine.exit_code([ok, bad_verify]) == 1
    assert engine.exit_code([ok, bad_verify, unreachable]) == 3
