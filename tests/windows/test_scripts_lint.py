"""Every guest PowerShell script parses (tree-sitter-powershell) and follows our conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

from guestprep.connectors import windows_common as wc
from tests.windows import ps_lint

pytestmark = pytest.mark.unit

SCRIPTS = sorted(wc.SCRIPTS_DIR.glob("*.ps1")) + sorted((Path(__file__).parent / "scripts").glob("*.ps1"))
STANDALONE = {"collect.ps1", "run-argv.ps1", "restore-network.ps1", "remove-vmware-tools.ps1", "lib.ps1"}


def test_there_are_scripts():
    assert len(SCRIPTS) >= 15


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_parses_and_lints(path: Path):
    text = path.read_text(encoding="utf-8")
    composed = None
    if path.parent == wc.SCRIPTS_DIR and path.name not in STANDALONE:
        composed = wc.windows_script(path.name)   # what the guest really receives
        assert ps_lint.parse_errors(composed) == []
    assert ps_lint.lint(text, composed) == []


def test_bootstrap_parses_and_is_strict_enough():
    assert ps_lint.parse_errors(wc.BOOTSTRAP) == []
    assert ps_lint.alias_problems(wc.BOOTSTRAP) == []


# negative controls: each rule catches what it is for

def test_syntax_error_is_caught():
    assert ps_lint.parse_errors("if ($x -eq 1 {\n  Write-Output 'x'\n")


def test_missing_strict_mode_is_caught():
    assert len(ps_lint.strict_problems("Write-Output 1\n")) == 2


def test_alias_is_caught():
    probs = ps_lint.alias_problems("gci C:\\ | % { $_.Name } | where { $_ }\n")
    assert [p.split("'")[1] for p in probs] == ["gci", "%", "where"]


def test_foreach_keyword_is_not_an_alias():
    assert ps_lint.alias_problems("foreach ($a in @(1)) { Write-Output $a }\n") == []


def test_json_contract_without_json_is_caught():
    assert ps_lint.contract_problems("# guestprep-script: x\n# guestprep-output: json\nWrite-Output 'hi'\n")
    assert ps_lint.contract_problems("Write-Output 'no marker'\n")


def test_unguarded_newer_cmdlet_is_caught():
    assert ps_lint.newer_problems("$h = Get-FileHash -Path C:\\x\n")
    assert ps_lint.newer_problems("try { $h = Get-FileHash -Path C:\\x } catch { $null = $_ }\n") == []
    assert ps_lint.newer_problems("$d = Invoke-Guarded -Section 'd' -Requires @() -Body { Get-Disk }\n") == []
    assert ps_lint.newer_problems("if (Get-Command -Name 'Get-Tpm' -ErrorAction SilentlyContinue) { Get-Tpm }\n") == []


def test_every_script_has_a_fake_guest_handler_or_is_first_boot_only():
    from tests.windows.wsman_server.guest import FakeWindowsGuest

    first_boot = {"restore-network", "remove-vmware-tools"}
    for p in wc.SCRIPTS_DIR.glob("*.ps1"):
        marker = wc.script_marker(p.read_text(encoding="utf-8"))
        if marker is None:
            assert p.name == "lib.ps1"
            continue
        assert marker in first_boot or hasattr(FakeWindowsGuest, "do_" + marker.replace("-", "_")), marker
