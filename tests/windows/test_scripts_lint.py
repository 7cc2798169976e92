"""Every guest PowerShell script parses (tree-sitter-powershell) and follows our conventions."""

from __future__ import annotations

from pathlib import Path

import pytest

from guestprep.connectors import windows_common as wc
from tests.windows import ps_lint

pytestmark = pytest.mark.unit

SCRIPTS = sorted(wc.SCRIPTS_DIR.glob("*.ps1")) + sorted((Path(__file__).parent / "scripts").glob("*.ps1"))
STANDALONE = {"collect.ps1", "lib.ps1"}


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


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.name for p in SCRIPTS])
def test_script_has_no_windows_powershell_pitfall(path: Path):
    """Native stderr redirection under Stop, bare [Console]::OutputEncoding, exit $LASTEXITCODE;
    collect.ps1 also parses on PowerShell 2.0 up to its version check (no -shr anywhere)."""
    text = path.read_text(encoding="utf-8")
    composed = wc.windows_script(path.name) if path.parent == wc.SCRIPTS_DIR else None
    assert ps_lint.pitfall_problems(text, composed) == []
    if path.name == "collect.ps1":
        assert ps_lint.pre_version_check_problems(text) == []


def test_bootstrap_is_powershell_2_safe_until_its_version_check():
    assert ps_lint.pre_version_check_problems(wc.BOOTSTRAP) == []
    assert ps_lint.pitfall_problems(wc.BOOTSTRAP) == []


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


def test_native_stderr_redirection_under_stop_is_caught():
    bad = "$ErrorActionPreference = 'Stop'\n$null = & schtasks.exe '/Query' '/TN' $t 2>$null\n$o = icacls.exe x 2>&1\n"
    assert [p.split(":")[0] for p in ps_lint.native_stderr_problems(bad)] == ["line 2", "line 3"]
    assert ps_lint.native_stderr_problems(bad.replace("'Stop'", "'Continue'")) == []
    assert ps_lint.native_stderr_problems("$ErrorActionPreference = 'Stop'\n$x = Get-Item C:\\ 2>$null\n") == []


def test_bare_console_encoding_is_caught():
    assert ps_lint.console_encoding_problems("[Console]::OutputEncoding = $e\n")
    assert ps_lint.console_encoding_problems("try { $a = 1 } catch { [Console]::OutputEncoding = $e }\n")
    assert ps_lint.console_encoding_problems("try { [Console]::OutputEncoding = $e } catch { $null = $_ }\n") == []


def test_exit_lastexitcode_is_caught():
    assert ps_lint.exit_lastexitcode_problems("& pnputil.exe /add-driver x\nexit $LASTEXITCODE\n")
    assert ps_lint.exit_lastexitcode_problems("if ($LASTEXITCODE) { exit $LASTEXITCODE }\n")
    assert ps_lint.exit_lastexitcode_problems("exit $r.ExitCode\n") == []


@pytest.mark.parametrize("snippet", ["$p = ConvertFrom-Json -InputObject $j\n", "$h = [ordered]@{ a = 1 }\n",
                                     "$o = [pscustomobject]@{ a = 1 }\n", "$n = 8 -shr 1\n", "$n = 1 -shl 3\n",
                                     "$b = 'a' -in @('a')\n"])
def test_powershell_3_syntax_before_the_version_check_is_caught(snippet):
    check = "if ($PSVersionTable.PSVersion.Major -lt 3) { exit 0 }\n"
    assert ps_lint.pre_version_check_problems(snippet + check)
    assert ps_lint.pre_version_check_problems(check) == []
    if "-sh" in snippet or "-in" in snippet:      # parse-time: 2.0 cannot even read the script
        assert ps_lint.pre_version_check_problems(check + snippet)
    else:
        assert ps_lint.pre_version_check_problems(check + snippet) == []


def test_collect_reports_static_dns_per_adapter():
    """collect.ps1 says per adapter whether its DNS servers were set by hand (the interface's
    NameServer value); the facts carry it (before: network.py read an undocumented raw key)."""
    from guestprep.facts import windows as wf
    from tests.windows.wsman_server.guest import load_profile

    text = wc.windows_script_text("collect.ps1")
    assert "'NameServer'" in text and "static_dns = " in text
    raw = load_profile("win11-en-US")
    raw["network"]["adapters"][0]["static_dns"] = True
    assert wf.parse(raw, where="t").adapters[0].static_dns is True
    raw["network"]["adapters"][0].pop("static_dns")
    assert wf.parse(raw, where="t").adapters[0].static_dns is None
    raw["network"]["adapters"][0]["static_dns"] = "yes"
    with pytest.raises(Exception, match=r"network.adapters\[0\].static_dns"):
        wf.parse(raw, where="t")
