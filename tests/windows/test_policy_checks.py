"""The issue 12 "New checks" (guestprep/checks/windows/policy.py): collector support, parsing,
and 'cannot tell' (never pass) when a fact is missing. Fixtures: tests/checks/WIN-*/ (test_check_fixtures.py)."""

from __future__ import annotations

import pytest

from guestprep.checks import registry
from guestprep.connectors import windows_common as wc
from guestprep.errors import CollectorError
from guestprep.facts import windows as wf
from tests.windows.wsman_server.guest import load_profile

pytestmark = pytest.mark.unit

NEW = ("WIN-EXECUTION-POLICY-GPO", "WIN-BITLOCKER-RECOVERY-PASSWORD", "WIN-DOMAIN-CONTROLLER", "WIN-LANGUAGE-MODE",
       "WIN-32BIT")


def test_collect_ps1_reports_the_new_facts():
    text = wc.windows_script_text("collect.ps1")
    for needle in ("Get-ExecutionPolicy -Scope $scope", "'MachinePolicy', 'UserPolicy'",
                   "HKEY_USERS\\S-1-5-18\\Software\\Policies\\Microsoft\\Windows\\PowerShell", "$out['SystemUserPolicy']",
                   "$ExecutionContext.SessionState.LanguageMode", "execution_policy = $executionPolicy",
                   "language_mode = $languageMode", "product_type = [int]$os.ProductType",
                   "architecture = [string]$os.OSArchitecture", "[string]$_.KeyProtectorType"):
        assert needle in text, needle


def test_new_facts_are_parsed():
    raw = load_profile("ws2019-en-US")
    raw["execution_policy"]["MachinePolicy"] = "AllSigned"
    raw["language_mode"] = "ConstrainedLanguage"
    f = wf.parse(raw, where="t")
    assert f.execution_policy["MachinePolicy"] == "AllSigned" and f.language_mode == "ConstrainedLanguage"
    assert f.os.is_32bit is False and wf.parse(load_profile("win10x86-en-US")).os.is_32bit is True


@pytest.mark.parametrize("field,value,path", [("execution_policy", ["AllSigned"], "execution_policy"),
                                              ("execution_policy", {"MachinePolicy": [1]}, "execution_policy.MachinePolicy"),
                                              ("language_mode", {"x": 1}, "language_mode")])
def test_garbage_in_the_new_facts_names_the_field(field, value, path):
    raw = load_profile("ws2019-en-US")
    raw[field] = value
    with pytest.raises(CollectorError, match=path.replace(".", r"\.")):
        wf.parse(raw, where="t")


@pytest.mark.parametrize("check_id", NEW)
def test_an_old_collector_without_the_facts_gives_cannot_tell_never_pass(check_id):
    raw = load_profile("ws2019-en-US")
    for key in ("execution_policy", "language_mode", "bitlocker"):
        raw.pop(key, None)
    raw["os"]["product_type"] = None
    raw["os"]["architecture"] = None
    findings = registry.get(check_id).evaluate(wf.parse(raw, where="t"), guest="g")
    assert findings and {f.status.value for f in findings} == {"skipped"}
    assert all("cannot tell" in f.message for f in findings)


def test_profiles_pass_the_new_checks_unless_they_model_the_problem():
    for name in ("ws2012r2-en-US", "ws2016-de-DE", "ws2019-en-US", "ws2022-ja-JP", "ws2025-en-US", "win11-en-US"):
        facts = wf.parse(load_profile(name), where=name)
        for check_id in NEW:
            assert all(f.status.value != "fail" for f in registry.get(check_id).evaluate(facts, guest=name)), (name, check_id)


def test_docs_windows_md_covers_the_method_the_checks_and_what_is_unproven():
    """docs/windows.md (issue 12 item 7): every registered WIN-* check, the validation kit, the
    strategy rule, Invoke-Native, the relaying that is gone, and the unproven part."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "windows.md").read_text(encoding="utf-8")
    missing = [c.id for c in registry.all_checks("windows") if c.id not in doc]
    assert missing == []
    for needle in ("windows-validation.md", "WIN-VIOSCSI-BOOTSTART", "`sata-first`", "`direct`", "Invoke-Native",
                   "exit $LASTEXITCODE", "windows.qemu_ga", "qemu_ga_sha256", "## What remains unproven without real Windows",
                   "PSRP_GUARD", "registry_key_create"):
        assert needle in doc, needle
