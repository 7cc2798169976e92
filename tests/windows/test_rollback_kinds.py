"""rollback.ps1 replays every journal kind the guest scripts write (issue 12, integration item 1).

The kinds are read from the scripts' syntax trees (Add-JournalEntry -Kind '...'), rollback.ps1's
branches from its `switch ([string]$e.kind)`, the fake guest's from its do_rollback. The fake
replays an entry only when the rollback text it was sent has a branch that makes the calls
(FakeWindowsGuest.ROLLBACK_CALLS): a kind rollback.ps1 cannot replay stays on the modelled guest.
"""

from __future__ import annotations

import inspect
import json
import re

import pytest

from guestprep.connectors import windows_common as wc
from tests.windows import ps_lint
from tests.windows.wsman_server.guest import DDB, SVC, FakeWindowsGuest, GuestError, load_profile

pytestmark = pytest.mark.unit

SCRIPTS = sorted(wc.SCRIPTS_DIR.glob("*.ps1"))


def kinds_written() -> dict[str, set[str]]:
    return {p.name: ps_lint.journal_kinds_written(p.read_text(encoding="utf-8")) for p in SCRIPTS}


def model_kinds() -> set[str]:
    src = inspect.getsource(FakeWindowsGuest.do_rollback)
    out = set()
    for m in re.finditer(r'e\["kind"\]\s*(?:==|in)\s*(\([^)]*\)|"[^"]+")', src):
        out |= set(re.findall(r'"([a-z_]+)"', m.group(1)))
    return out


def test_kinds_found_by_the_syntax_tree_match_a_plain_grep():
    """Negative control for the tree walk: every `-Kind '...'` in the scripts is seen, and no
    Add-JournalEntry call passes its kind any other way (a variable would escape this test)."""
    grep = set()
    for p in SCRIPTS:
        grep |= set(re.findall(r"-Kind\s+'([a-z_]+)'", p.read_text(encoding="utf-8")))
    tree = set().union(*kinds_written().values())
    assert tree == grep
    dynamic = [(p.name, line, kind) for p in SCRIPTS for line, kind in ps_lint.journal_calls(p.read_text(encoding="utf-8"))
               if kind is None or not re.fullmatch(r"'[a-z_]+'", kind)]
    assert dynamic == []
    assert ps_lint.journal_calls("Add-JournalEntry -Operation x -Kind $k -Target t\n") == [(1, "$k")]
    assert {"registry_set", "registry_key_create", "driver_stage", "msi_install", "file_write",
            "file_replace", "task_create", "bitlocker_suspend"} <= tree


def test_every_kind_written_has_a_branch_in_rollback_ps1_and_in_the_model():
    branches = set(ps_lint.switch_branches(wc.windows_script_text("rollback.ps1")))
    modelled = model_kinds()
    missing = {f"{script}: {kind}": [where for where, have in (("rollback.ps1", branches), ("do_rollback", modelled))
                                     if kind not in have]
               for script, kinds in kinds_written().items() for kind in kinds}
    assert {k: v for k, v in missing.items() if v} == {}


def test_a_kind_missing_in_rollback_ps1_is_caught():
    """Negative control: the pre-fix rollback.ps1 had no registry_key_create/driver_stage/msi_install."""
    text = wc.windows_script_text("rollback.ps1")
    branches = ps_lint.switch_branches(text)
    start = text.index("            'registry_key_create' {")
    end = text.index("            'driver_stage' {")
    assert "registry_key_create" in branches
    assert "registry_key_create" not in ps_lint.switch_branches(text[:start] + text[end:])


# ------------------------------------------------------------------ the model replays only what the script can

def _guest(profile: str = "ws2019-en-US") -> FakeWindowsGuest:
    return FakeWindowsGuest(load_profile(profile))


def _rollback(g: FakeWindowsGuest, text: str | None = None) -> dict:
    res = g.run_script(text or wc.windows_script("rollback.ps1"), [json.dumps({})], None)
    assert res is not None
    assert res.rc == 0, wc.decode_clixml(res.stderr)
    return json.loads(res.stdout)


def _key_create(g: FakeWindowsGuest, path: str) -> None:
    g.model.reg.create(path)
    g._journal("windows.boot_critical", "registry_key_create", path, path=path)


def test_registry_key_create_is_removed():
    g = _guest()
    key = f"{SVC}\\vioscsi"
    _key_create(g, key)
    out = _rollback(g)
    assert not g.model.reg.exists(key)
    assert out["restored"][0]["removed"] is True


def test_model_does_not_replay_a_kind_the_script_lacks():
    """Before: the fake removed the key although rollback.ps1 had no branch for it."""
    g = _guest()
    key = f"{SVC}\\vioscsi"
    _key_create(g, key)
    text = wc.windows_script("rollback.ps1")
    start = text.index("            'registry_key_create' {")
    end = text.index("            'driver_stage' {")
    out = _rollback(g, text[:start] + text[end:])
    assert g.model.reg.exists(key)
    assert out["restored"][0]["skipped"] == "not reversible"


@pytest.mark.parametrize("type_,before,expect", [
    ("String", "SCSI miniport old", "SCSI miniport old"),
    ("ExpandString", "\\SystemRoot\\System32\\drivers\\vioscsi.sys", "\\SystemRoot\\System32\\drivers\\vioscsi.sys"),
    ("Binary", "1,255,0,0", [1, 255, 0, 0]),
])
def test_typed_registry_values_are_restored_with_their_type(type_, before, expect):
    """Before: `New-ItemProperty -Value ([int]$e.before) -PropertyType DWord` threw on any
    String/Binary previous value (and would have turned it into a DWORD)."""
    g = _guest()
    key = f"{DDB}\\DeviceIds\\PCI\\VEN_1AF4&DEV_1004"
    g.model.reg.create(key)
    g.model.reg.set(key, "v", "new", "String")
    g._journal("windows.boot_critical", "registry_set", f"{key}\\v", path=key, name="v", before=before,
               after="new", type=type_)
    _rollback(g)
    assert g.model.reg.get(key, "v") == expect and g.model.reg.type_of(key, "v") == type_


def test_untyped_rollback_of_a_string_value_fails_in_the_model():
    """Negative control: the pre-fix registry_set branch (no type) is a conversion error."""
    g = _guest()
    g._journal("windows.boot_critical", "registry_set", f"{SVC}\\x\\Group", path=f"{SVC}\\x", name="Group",
               before="Base", after="SCSI miniport", type="String")
    old = ("# guestprep-script: rollback\n$journal = Read-JsonFile -Path $JournalPath\n"
           "foreach ($e in @($journal.entries)) { switch ([string]$e.kind) {\n"
           "  'registry_set' { $null = New-ItemProperty -Path ([string]$e.path) -Name ([string]$e.name) "
           "-Value ([int]$e.before) -PropertyType DWord -Force; Remove-ItemProperty -Path x -Name y }\n} }\n")
    g._text = old
    with pytest.raises(GuestError, match="System.Int32"):
        g.do_rollback({})


def test_driver_package_in_use_is_skipped_with_pnputil_output():
    g = _guest()
    files = {"vioscsi.inf": b"[Version]", "vioscsi.sys": b"sys", "vioscsi.cat": b"cat"}
    published = g.model.stage("vioscsi.inf", "amd64", files)
    g._journal("windows.virtio_drivers", "driver_stage", "vioscsi.inf", published_name=published,
               original_name="vioscsi.inf", folder="x", pnputil_syntax="add-driver")
    g.model.in_use.add(published.lower())
    out = _rollback(g)
    assert "presently installed using the specified INF" in out["restored"][0]["skipped"]
    assert any(p["published"] == published for p in g.model.staged_packages())
    g.model.in_use.clear()
    out = _rollback(g)                  # not marked rolled back: a second rollback tries again
    assert out["restored"][0]["removed"] is True
    assert not any(p["published"] == published for p in g.model.staged_packages())


def test_rollback_ps1_picks_the_pnputil_syntax_by_build():
    body = ps_lint.switch_branches(wc.windows_script_text("rollback.ps1"))["driver_stage"]
    assert "14393" in body and "'/delete-driver'" in body and "'-d'" in body and "Invoke-Native" in body


def test_msi_install_is_uninstalled_and_1605_is_fine():
    g = _guest()
    g.model.msiexec_install({"kind": "agent-msi", "version": "0.1.266", "arch": "amd64"})
    code = next(iter(g.model.products))
    g._journal("windows.qemu_ga", "msi_install", code, product_code=code, media="x.msi", version="0.1.266")
    g._journal("windows.qemu_ga", "msi_install", code, product_code=code, media="x.msi", version="0.1.266")
    out = _rollback(g)
    assert [r.get("removed") for r in out["restored"]] == [True, True]     # the second one: 1605
    assert not g.model.products and not g.model.reg.exists(f"{SVC}\\QEMU-GA")
    body = ps_lint.switch_branches(wc.windows_script_text("rollback.ps1"))["msi_install"]
    assert re.search(r"\$MsiGone", body)
    assert re.search(r"\$MsiGone = @\(0, 1605, 3010\)", wc.windows_script_text("rollback.ps1"))


def test_file_replace_entries_carry_the_backup_rollback_needs():
    """Every script that journals file_replace gives it a backup path (rollback.ps1 restores from it)."""
    for p in SCRIPTS:
        text = p.read_text(encoding="utf-8")
        if "file_replace" not in ps_lint.journal_kinds_written(text):
            continue
        assert re.search(r"backup", text[text.index("'file_replace'") - 400:text.index("'file_replace'") + 200]), p.name
