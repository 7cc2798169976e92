"""Windows PowerShell 2.0-5.1 pitfalls (issue 12, item 4), against the PowerShell engine model.

Each test names the defect it guards; run against the code before the fix, each fails
(the model reproduces what Windows PowerShell does with that text, see powershell_model.py).
"""

from __future__ import annotations

import json

import pytest

from guestprep.connectors import open_connector
from guestprep.connectors import windows_common as wc
from guestprep.errors import OperationError
from guestprep.facts import windows as wf
from tests.windows.wsman_server import powershell_model as pm
from tests.windows.wsman_server.guest import FakeWindowsGuest, ScriptResult, load_profile

pytestmark = pytest.mark.unit

FIRST_BOOT = {"restore-network.ps1", "remove-vmware-tools.ps1"}
OPERATION_SCRIPTS = sorted(p.name for p in wc.SCRIPTS_DIR.glob("*.ps1")
                           if p.name != "lib.ps1" and p.name not in FIRST_BOOT)


def guest(version: str = "5.1.17763.5830", profile: str = "ws2019-en-US") -> FakeWindowsGuest:
    facts = load_profile(profile)
    facts["ps_version"] = version
    return FakeWindowsGuest(facts)


# ------------------------------------------------------------------ the model's own negative controls

def test_model_native_stderr_under_stop_throws_only_in_windows_powershell():
    text = ("# guestprep-script: x\n$ErrorActionPreference = 'Stop'\n"
            "$null = & schtasks.exe '/Query' '/TN' 'guestprep-nope' 2>$null\n")
    assert "cannot find the file specified" in pm.script_fault(text, guest("5.1"))
    assert "cannot find the file specified" in pm.script_fault(text, guest("3.0"))
    assert pm.script_fault(text, guest("7.4")) is None                    # PSNotApplyErrorActionToStderr
    assert pm.script_fault(text.replace("'Stop'", "'Continue'"), guest("5.1")) is None
    assert pm.script_fault(text.replace(" 2>$null", ""), guest("5.1")) is None   # no redirection
    g = guest("5.1")
    g.tasks["guestprep-nope"] = {}
    assert pm.script_fault(text, g) is None                                 # the task exists: no stderr


def test_model_console_encoding_in_a_remote_session():
    bare = "# guestprep-script: x\n[Console]::OutputEncoding = New-Object -TypeName System.Text.UTF8Encoding\n"
    assert "The handle is invalid" in pm.script_fault(bare, guest())
    guarded = "# guestprep-script: x\ntry { [Console]::OutputEncoding = $e } catch { $null = $_ }\n"
    assert pm.script_fault(guarded, guest()) is None


def test_model_powershell_2():
    assert "Unexpected token '-shr'" in pm.script_fault("# guestprep-script: x\n$a = 4 -shr 1\n",
                                                        FakeWindowsGuest("ws2008r2-ps2"))
    assert "ConvertFrom-Json" in pm.script_fault("# guestprep-script: x\n$p = ConvertFrom-Json -InputObject '{}'\n",
                                                 guest("2.0"))
    assert pm.script_fault("# guestprep-script: x\n$p = ConvertFrom-Json -InputObject '{}'\n", guest("3.0")) is None


# ------------------------------------------------------------------ defects in today's scripts

@pytest.mark.parametrize("name", OPERATION_SCRIPTS)
@pytest.mark.parametrize("version", ["3.0", "4.0", "5.1.14393.6343"])
def test_every_operation_script_runs_in_a_remote_session(name, version):
    """lib.ps1 went in front of every script with a bare [Console]::OutputEncoding assignment:
    in wsmprovhost every operation died with "The handle is invalid"."""
    assert pm.script_fault(wc.windows_script(name), guest(version)) is None


def test_capture_network_when_the_task_does_not_exist_yet():
    """`schtasks /Query ... 2>$null` under Stop: the first capture on a guest always failed."""
    g = guest()
    assert "guestprep-restore-network" not in g.tasks
    assert pm.script_fault(wc.windows_script("capture-network.ps1"), g) is None


def test_schedule_tools_removal_when_the_task_does_not_exist_yet():
    g = guest()
    assert pm.script_fault(wc.windows_script("schedule-vmware-tools-removal.ps1"), g) is None


def test_rollback_of_a_task_that_already_removed_itself():
    """The restore task deletes itself after the first KVM boot; rolling back afterwards ran
    `schtasks /Delete ... 2>$null` on a missing task: NativeCommandError under Stop."""
    g = guest()
    g.journal.append({"id": 1, "operation": "windows.network_capture", "kind": "task_create",
                      "target": "guestprep-restore-network", "rolled_back": False})
    assert pm.script_fault(wc.windows_script("rollback.ps1"), g) is None


def test_rollback_on_powershell_7_does_not_relay_the_tolerated_exit_code():
    """Without the 5.1 throw, the tolerated `schtasks /Delete` exit 1 was relayed by the bootstrap's
    `exit $LASTEXITCODE`: the rollback "failed" after it had succeeded."""
    g = guest("7.4")
    g.journal.append({"id": 1, "operation": "windows.network_capture", "kind": "task_create",
                      "target": "guestprep-restore-network", "rolled_back": False})
    assert pm.bootstrap_fault(wc.BOOTSTRAP, g) is None
    assert pm.script_fault(wc.windows_script("rollback.ps1"), g) is None


def test_bootstrap_never_relays_a_tolerated_native_exit_code():
    tolerant = ("# guestprep-script: test-echo\n$ErrorActionPreference = 'Stop'\n"
                "$out = & pnputil.exe '/add-driver' 'x.inf' '/install'\n"
                "if ($LASTEXITCODE -ne 0 -and $LASTEXITCODE -ne 259) { throw 'pnputil failed' }\n")
    g = guest()
    assert pm.bootstrap_fault(wc.BOOTSTRAP, g) is None
    assert pm.script_fault(tolerant, g) is None
    assert "exit $LASTEXITCODE" not in wc.BOOTSTRAP


def test_bootstrap_runs_in_a_remote_session():
    """The bootstrap set [Console]::OutputEncoding bare: "The handle is invalid" without a console."""
    assert pm.bootstrap_fault(wc.BOOTSTRAP, guest()) is None


@pytest.mark.parametrize("version", ["2.0", "1.0"])
def test_bootstrap_answers_unsupported_on_powershell_2(version):
    """The bootstrap called ConvertFrom-Json (3.0) before any version check: a crash, not a finding."""
    g = FakeWindowsGuest("ws2008r2-ps2") if version == "2.0" else guest(version, "ws2008r2-en-US")
    res = pm.bootstrap_fault(wc.BOOTSTRAP, g)
    assert isinstance(res, ScriptResult) and res.rc == 0, res
    facts = wf.parse(json.loads(res.stdout), where="test")
    assert facts.supported is False and f"PowerShell {version}" in facts.unsupported_reason
    assert wc.unsupported_reason(res.stdout) == facts.unsupported_reason


@pytest.mark.integration
def test_powershell_2_guest_is_a_finding_over_winrm(wsman):
    run = wsman("ws2008r2-ps2")
    conn = open_connector(run.make_guest("winrm"), run.options())
    try:
        facts = wf.collect(conn, timeout=30)
        with pytest.raises(OperationError, match=r"exit 126\).*unsupported: PowerShell 2\.0"):
            wc.call_script(conn, "file-hash.ps1", {"path": "C:\\x"}, where="guest old")
    finally:
        conn.close()
    assert facts.supported is False and "unsupported: PowerShell 2.0" in facts.unsupported_reason
    from guestprep.checks import registry

    statuses = {f.check_id: f.status.value for f in registry.evaluate("windows", facts, "old")}
    assert statuses["WIN-OS-SUPPORTED"] == "fail"
    assert run.guest.ran == []          # the script never ran: the bootstrap answered


# ------------------------------------------------------------------ first-boot scripts are self-contained

@pytest.mark.parametrize("name", sorted(FIRST_BOOT))
def test_first_boot_scripts_carry_the_helpers_they_call(name):
    """Written to the guest and run by the task scheduler: every guestprep helper they call must
    be in the text the operation writes (lib.ps1 in front)."""
    from guestprep.operations.windows import cutover, network  # noqa: F401  (the writers)
    from tests.windows import ps_lint

    text = wc.windows_script(name)
    defined = {m.lower() for m in __import__("re").findall(r"(?im)^\s*function\s+([A-Za-z-]+)", text)}
    called = {n.lower() for _, n in ps_lint.commands(text)}
    ours = {c for c in called if c in {"invoke-native", "remove-guestpreptask",
                                       "write-guestpreplog", "read-jsonfile", "write-jsonfile",
                                       "get-registryvalueornull", "test-guestpreptask"}}
    assert ours <= defined, ours - defined
    assert ps_lint.pitfall_problems(wc.windows_script_text(name), text) == []


@pytest.mark.integration
def test_powershell_2_guest_is_a_finding_over_psrp(wsman):
    """PSRP ran the script text as given: on a 2.0 endpoint every operation script died on
    ConvertFrom-Json (CommandNotFoundException) instead of the clean "unsupported" finding."""
    run = wsman("ws2008r2-ps2")
    conn = open_connector(run.make_guest("psrp"), run.options())
    try:
        facts = wf.collect(conn, timeout=30)
        with pytest.raises(OperationError, match=r"exit 126\).*unsupported: PowerShell 2\.0"):
            wc.call_script(conn, "file-hash.ps1", {"path": "C:\\x"}, where="guest old")
        res = conn.run(["hostname.exe"], timeout=30)
        assert res.rc == wc.UNSUPPORTED_RC and b"unsupported: PowerShell 2.0" in res.stderr
    finally:
        conn.close()
    assert facts.supported is False and "unsupported: PowerShell 2.0" in facts.unsupported_reason
    assert run.guest.ran == []          # no script ran: the guard answered


@pytest.mark.integration
def test_psrp_guard_runs_the_script_on_powershell_3_and_later(wsman):
    run = wsman("ws2019-en-US")
    conn = open_connector(run.make_guest("psrp"), run.options())
    try:
        facts = wf.collect(conn, timeout=30)
    finally:
        conn.close()
    assert facts.supported is True and run.guest.ran == ["collect"]


def test_psrp_guard_is_powershell_2_safe_until_its_version_check():
    from tests.windows import ps_lint

    assert ps_lint.pre_version_check_problems(wc.PSRP_GUARD) == []
    assert ps_lint.parse_errors(wc.PSRP_GUARD) == []
    assert ps_lint.pitfall_problems(wc.PSRP_GUARD) == []
    res = pm.bootstrap_fault(wc.PSRP_GUARD, FakeWindowsGuest("ws2008r2-ps2"))
    assert isinstance(res, ScriptResult) and wc.unsupported_reason(res.stdout).startswith("unsupported: PowerShell 2.0")
