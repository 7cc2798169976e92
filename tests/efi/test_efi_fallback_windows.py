"""windows.efi_fallback plans (Windows Server 2019/2022 ESP layouts) and the Windows EFI parser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from guestprep.errors import CollectorError, OperationError
from guestprep.facts.efi import parse_bcdedit_firmware, parse_windows_efi, windows_efi
from guestprep.facts.windows import parse
from guestprep.operations.windows.efi_fallback import WindowsEfiFallback

import build_fixtures as BF

pytestmark = pytest.mark.unit
OP = WindowsEfiFallback()
CHECKS = Path(__file__).resolve().parents[1] / "checks"


def facts_of(case: str):
    doc = json.loads((CHECKS / "WIN-EFI-FALLBACK" / f"{case}.json").read_text(encoding="utf-8"))
    return parse(doc["facts"], where=case)


def test_deleted_fallback_plans_a_verified_copy_of_bootmgfw():
    plan = OP.plan(facts_of("ws2019-fallback-deleted"), "w", {"run_id": "r1"})
    kinds = [c.kind for c in plan.changes]
    assert kinds == ["file_write", "script"]
    params = plan.changes[1].detail["params"]
    assert plan.changes[1].target == "install-efi-fallback.ps1"
    assert params == {"source_sha256": BF.h("bootmgfw-17763"),
                      "operation": "windows.efi_fallback", "run": "r1"}


def test_stale_fallback_is_replaced_and_the_old_hash_is_shown():
    plan = OP.plan(facts_of("ws2022-stale-after-servicing"), "w", {})
    assert plan.changes[0].kind == "file_replace"
    assert BF.h("bootmgfw-20348.1") in plan.changes[0].diff and BF.h("bootmgfw-20348.2340") in plan.changes[0].diff


def test_converged_guest_plans_nothing_and_missing_section_is_refused():
    assert OP.plan(facts_of("ws2019-setup-fallback-passes"), "w", {}).empty
    with pytest.raises(OperationError, match="no 'efi' section"):
        OP.plan(facts_of("ws2022-no-efi-section-errors"), "w", {})


def test_bcdedit_firmware_is_parsed_whatever_the_locale_of_the_titles():
    text = BF.BCDEDIT.replace("Firmware Boot Manager", "ファームウェア ブート マネージャー")
    entries, order = parse_bcdedit_firmware(text.replace("\n", "\r\n"))
    assert order[0] == "{bootmgr}" and len(order) == 2
    bootmgr = next(e for e in entries if e.id == "{bootmgr}")
    assert bootmgr.path == "\\EFI\\Microsoft\\Boot\\bootmgfw.efi" and bootmgr.label == "Windows Boot Manager"


@pytest.mark.parametrize("raw,needle", [
    ([], "expected an object"),
    ({"firmware": "uefi", "secure_boot": "yes"}, "secure_boot"),
    ({"firmware": "coreboot"}, "firmware"),
    ({"firmware": "uefi", "secure_boot": True, "files": [{"size": 1}]}, "files[0] has no path"),
    ({"firmware": "uefi", "secure_boot": True, "files": [{"path": "\\EFI\\x.efi", "sha256": "zz"}]}, "not a sha256"),
])
def test_garbage_efi_member_is_refused_naming_the_field(raw, needle):
    with pytest.raises(CollectorError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_windows_efi(raw)


def test_windows_efi_reads_the_raw_member_once():
    f = facts_of("ws2019-setup-fallback-passes")
    assert windows_efi(f) is windows_efi(f)
    assert windows_efi(f).fallback is not None
