"""How Windows PowerShell (2.0-5.1, in a remote wsmprovhost session) fails on a script's text.

The fake guest cannot run PowerShell (none exists on this machine), so this module decides,
from the script text (parsed with tree-sitter-powershell, see tests/windows/ps_lint.py) and the
modelled guest (its ``ps_version``, scheduled tasks and journal), where the real engine would
throw before or while our modelled commands run. Each rule cites the documented behaviour.
Every script the fake guest answers runs in a remote session (WinRM/PSRP): there is no console.

What the model does NOT know: any native program other than the few modelled in
``native_result``, the real text of errors beyond the first line, localisation of messages.
"""

from __future__ import annotations

import re
from typing import Any

from tests.windows import ps_lint

# schtasks.exe for a task that does not exist (schtasks /Query, /Delete): exit code 1 and this
# line on stderr. schtasks reference: https://learn.microsoft.com/windows-server/administration/
# windows-commands/schtasks-query (the message is the Win32 text of ERROR_FILE_NOT_FOUND, 0x2).
SCHTASKS_MISSING = "ERROR: The system cannot find the file specified."
# pnputil /add-driver /install when no present device matches the package: ERROR_NO_MORE_ITEMS
# (259), always the case on VMware hardware for vioscsi/viostor/NetKVM (issue 12, item 2).
PNPUTIL_NO_DEVICE = 259


def ps_version(guest: Any) -> tuple[int, int]:
    """(major, minor) of the guest's Windows PowerShell; "2.0" for a WMF-less 2008 R2."""
    text = str((getattr(guest, "facts", None) or {}).get("ps_version") or "5.1")
    m = re.match(r"(\d+)(?:\.(\d+))?", text)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (5, 1)


def _known_tasks_for(marker: str | None, guest: Any) -> list[str]:
    """Task names a script passes to schtasks through a variable (the model has no variables)."""
    from guestprep.operations.windows.cutover import TOOLS_TASK
    from guestprep.operations.windows.network import TASK as NETWORK_TASK

    if marker == "capture-network":
        return [NETWORK_TASK]
    if marker == "schedule-vmware-tools-removal":
        return [TOOLS_TASK]
    if marker == "rollback":
        return [e["target"] for e in getattr(guest, "journal", []) if e.get("kind") == "task_create"
                and not e.get("rolled_back")]
    return []


def native_result(call: dict[str, Any], marker: str | None, guest: Any) -> tuple[int, str]:
    """(exit code, stderr) of one modelled native program run on ``guest``."""
    name = call["name"].lower().rsplit("\\", 1)[-1]
    args = [a.lower() if isinstance(a, str) else a for a in call["args"]]
    if name in ("schtasks", "schtasks.exe") and args and args[0] in ("/query", "/delete"):
        try:
            tn = call["args"][args.index("/tn") + 1]
        except (ValueError, IndexError):
            tn = None
        names = [tn] if isinstance(tn, str) else _known_tasks_for(marker, guest)
        if any(n not in getattr(guest, "tasks", {}) for n in names):
            return 1, SCHTASKS_MISSING
        return 0, ""
    if name in ("pnputil", "pnputil.exe") and args and args[0] in ("/add-driver", "-a"):
        return PNPUTIL_NO_DEVICE, ""
    return 0, ""


def _first_v2_failure(text: str) -> tuple[int, str] | None:
    """Windows PowerShell 2.0 on a script using 3.0 syntax: a parse error for operators it does
    not know (about_Comparison_Operators: -shl/-shr, -in/-notin are "introduced in PowerShell
    3.0"), else the first 3.0 cmdlet/type it executes (ConvertFrom-Json is in
    Microsoft.PowerShell.Utility from 3.0 on; [ordered]/[pscustomobject] are 3.0 accelerators)."""
    items = list(ps_lint.v3_syntax(text))
    parse_time = [(line, what) for line, what, p in items if p]
    if parse_time:
        line, what = parse_time[0]
        token = what.split()[-1]
        return line, f"At line:{line} char:1 Unexpected token '{token}' in expression or statement. (ParseException)"
    runtime = sorted((line, what) for line, what, _p in items)
    # function bodies run only when called: count what is at script level or called from there
    for line, what in runtime:
        if what.startswith("cmdlet "):
            name = what.split()[-1]
            return line, (f"The term '{name}' is not recognized as the name of a cmdlet, function, script file, "
                          "or operable program. (CommandNotFoundException)")
        if what.startswith("type "):
            return line, f"Unable to find type {what.split()[-1]}: make sure that the assembly containing this type is loaded."
    return None


def _console_encoding_fault(text: str) -> tuple[int, str] | None:
    # A remote session runs in wsmprovhost (PSRP) or a WinRS child without a console:
    # Console.set_OutputEncoding calls SetConsoleOutputCP on no console and throws IOException
    # "The handle is invalid" (https://github.com/dahlbyk/posh-git/issues/708,
    # https://github.com/ralish/PSWinVitals/issues/5, https://github.com/Azure/iotedge/issues/794).
    for node, guarded in ps_lint.console_encoding_assignments(text):
        if not guarded:
            return (node.start_point[0] + 1,
                    'Exception setting "OutputEncoding": "The handle is invalid." (SetValueInvocationException)')
    return None


def _native_stderr_fault(text: str, marker: str | None, guest: Any) -> tuple[int, str] | None:
    # Windows PowerShell 3.0-5.1 (and 7.0/7.1): redirecting a native program's stderr (2>$null,
    # 2>&1, 2>file) wraps each stderr line in an ErrorRecord (NativeCommandError); with
    # $ErrorActionPreference = 'Stop' the first one terminates the script
    # (about_Redirection, about_Preference_Variables; https://github.com/PowerShell/PowerShell/issues/4002
    # and #3996; PowerShell 7.2 made PSNotApplyErrorActionToStderr mainstream:
    # https://github.com/MicrosoftDocs/PowerShell-Docs/issues/6466).
    for call in ps_lint.native_calls(text):
        if not ps_lint.stderr_redirected(call["redirections"]):
            continue
        if ps_lint._preference_at(text, call["start"]) != "stop":
            continue
        _rc, err = native_result(call, marker, guest)
        if err:
            return call["line"], f"{call['name']} : {err} (NativeCommandError)"
    return None


def _relayed_exit_code(text: str, marker: str | None, guest: Any) -> tuple[int, str] | None:
    # `exit $LASTEXITCODE` (the old bootstrap's last line, or a script's) hands the last native
    # exit code to powershell.exe even when the script tolerated it (about_Automatic_Variables:
    # $LASTEXITCODE "contains the exit code of the last native program that was run").
    calls = [c for c in ps_lint.native_calls(text)]
    if not calls:
        return None
    rc, _err = native_result(calls[-1], marker, guest)
    if rc != 0:
        return calls[-1]["line"], (f"powershell.exe exited {rc}: $LASTEXITCODE of {calls[-1]['name']} relayed "
                                   "by `exit $LASTEXITCODE` although the script tolerated it")
    return None


def _stop_native_stderr_applies(major: int, minor: int) -> bool:
    return major <= 5 or (major == 7 and minor < 2)


def script_fault(text: str, guest: Any) -> str | None:
    """The error Windows PowerShell would raise running ``text`` on ``guest``, or None."""
    from guestprep.connectors.windows_common import script_marker

    marker = script_marker(text)
    major, minor = ps_version(guest)
    relays = bool(getattr(guest, "_bootstrap_relays_lastexitcode", False))
    if relays:
        guest._bootstrap_relays_lastexitcode = False   # one bootstrap, one script
    faults: list[tuple[int, str]] = []
    if major < 3:
        v2 = _first_v2_failure(text)
        if v2 is not None:
            if v2[1].endswith("(ParseException)"):
                return v2[1]          # nothing of the script runs
            faults.append(v2)
    enc = _console_encoding_fault(text)
    if enc is not None:
        faults.append(enc)
    if _stop_native_stderr_applies(major, minor):
        native = _native_stderr_fault(text, marker, guest)
        if native is not None:
            faults.append(native)
    if faults:
        return min(faults)[1]
    script_exit = ps_lint.exit_lastexitcode_problems(text)
    if relays or script_exit:
        relayed = _relayed_exit_code(text, marker, guest)
        if relayed is not None:
            return relayed[1]
    return None


def _evaluate_concat(node: Any, src: bytes, values: dict[str, str]) -> str | None:
    """The value of a '...' + $v + '...' expression (single-quoted literals and known variables)."""
    out = []
    for n in ps_lint._walk(node):
        if n.type == "string_literal":
            t = ps_lint._text(n, src)
            if not (t.startswith("'") and t.endswith("'")):
                return None
            out.append(t[1:-1].replace("''", "'"))
        elif n.type == "variable":
            name = ps_lint._text(n, src).lower()
            if name not in values:
                return None
            out.append(values[name])
    return "".join(out)


def _bootstrap_v2_answer(boot: str, guest: Any, version: str) -> Any:
    """What the bootstrap's version-check branch writes: its Write-Output argument, evaluated."""
    from tests.windows.wsman_server.guest import ScriptResult

    tree = ps_lint.parse(boot)
    src = boot.encode("utf-8")
    end = ps_lint.version_check_end(boot)
    host = re.sub(r"[^A-Za-z0-9._-]", "", str(guest.facts.get("hostname") or ""))
    for n in ps_lint._walk(tree.root_node):
        if end is not None and n.type == "command" and n.end_byte <= end \
                and (ps_lint._command_name(n, src) or "").lower() == "write-output":
            elements = next((c for c in n.children if c.type == "command_elements"), None)
            value = _evaluate_concat(elements, src, {"$v": version, "$h": host}) if elements is not None else None
            if value is None:
                return ScriptResult(b"", b"model: cannot evaluate the bootstrap's unsupported answer", 1)
            return ScriptResult((value + "\r\n").encode("utf-8"), b"", 0)
    return ScriptResult(b"", b"model: the bootstrap's version check writes nothing", 1)


def bootstrap_fault(boot: str, guest: Any) -> Any:
    """The error (text, or a ScriptResult) the WinRM bootstrap meets on ``guest``, or None."""
    major, minor = ps_version(guest)
    faults: list[tuple[int, str]] = []
    enc = _console_encoding_fault(boot)
    if enc is not None:
        faults.append(enc)
    if major < 3:
        # The bootstrap must find out before using anything newer (issue 12, item 4). 2.0 runs it
        # top-down: whichever comes first, a 3.0 item or the version check's answer, decides.
        end = ps_lint.version_check_end(boot)
        items = [(line, what) for line, what, p in ps_lint.v3_syntax(boot, end)]
        v2 = _first_v2_failure(boot)
        if v2 is not None and v2[1].endswith("(ParseException)"):
            return v2[1]
        if items and v2 is not None:
            faults.append(v2)
        if faults:
            return min(faults)[1]
        if end is None:
            return "model: the bootstrap never checks $PSVersionTable"
        return _bootstrap_v2_answer(boot, guest, f"{major}.{minor}")
    if faults:
        return min(faults)[1]
    # remembered for the script that follows: a relayed $LASTEXITCODE fails it after the fact
    guest._bootstrap_relays_lastexitcode = bool(ps_lint.exit_lastexitcode_problems(boot))
    return None
