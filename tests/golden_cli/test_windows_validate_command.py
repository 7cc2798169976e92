"""`guestprep windows validate` passes its options to the validation kit unchanged."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from guestprep.commands import app
from tests.golden_cli.golden_support import guestprep

pytestmark = pytest.mark.unit


def test_options_reach_the_kit(monkeypatch, tmp_path):
    from guestprep.operations.windows import validation

    seen = []
    monkeypatch.setattr(validation, "run", lambda argv: seen.append(argv) or 0)
    res = CliRunner().invoke(app, ["windows", "validate", "win01", "-i", "fleet.yaml", "--evidence", "ev",
                                   "--ca-bundle", "ca.pem", "--skip-rollback"])
    assert res.exit_code == 0, res.output
    assert seen == [["win01", "--inventory", "fleet.yaml", "--evidence", "ev", "--timeout", "900",
                     "--ca-bundle", "ca.pem", "--skip-rollback"]]


def test_the_kit_s_exit_code_is_the_command_s(tmp_path):
    (tmp_path / "ev").mkdir()
    res = guestprep("windows", "validate", "win01", "-i", "fleet.yaml", "--evidence", "ev", "--insecure",
                    cwd=tmp_path)
    assert res.returncode == 2 and "already exists" in res.stderr, res.stderr
