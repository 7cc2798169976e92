"""guestprep's PowerShell conventions, checked on the tree-sitter-powershell syntax tree.

Rules (each returns problems as "line N: text"):
- parse: the script parses without ERROR/MISSING nodes
- strict: the text sent to the guest has Set-StrictMode and $ErrorActionPreference = 'Stop'
- aliases: commands are spelled out (no gci, %, ?, select, ...)
- contract: a "# guestprep-script: NAME" marker; "guestprep-output: json" scripts emit
  through Write-Result or ConvertTo-Json
- newer: cmdlets newer than PowerShell 3.0 / Windows Server 2012 run inside a try
  block or an Invoke-Guarded -Body scriptblock, or the script checks Get-Command for them
"""

from __future__ import annotations

import re

import tree_sitter as ts
import tree_sitter_powershell as tsp

PARSER = ts.Parser(ts.Language(tsp.language()))

ALIASES = {
    "%", "?", "ac", "cat", "cd", "chdir", "clc", "clear", "cls", "copy", "cp", "curl", "del", "diff", "dir", "echo",
    "erase", "fl", "foreach", "ft", "fw", "gc", "gci", "gcm", "gi", "gl", "gm", "gp", "gps", "group", "gsv", "gwmi",
    "h", "history", "icm", "iex", "ii", "ipmo", "irm", "iwr", "kill", "ls", "man", "md", "measure", "mi", "mount",
    "move", "mv", "ni", "nv", "ogv", "popd", "ps", "pushd", "pwd", "r", "rd", "ren", "ri", "rm", "rmdir", "sajb",
    "sc", "select", "set", "sl", "sleep", "sls", "sort", "sp", "spps", "start", "sv", "tee", "type", "where", "wget",
    "write", "iwmi", "rwmi", "swmi", "gu", "gwmi", "gdr", "ndr", "rdr", "sal", "epal", "ipal",
}
# Not in PowerShell 3.0 or need Windows 8 / Server 2012 R2+ modules or optional features.
NEWER = {
    "get-filehash", "get-computerinfo", "get-disk", "get-partition", "get-volume", "get-storagesetting",
    "set-storagesetting", "get-netadapter", "get-netipaddress", "get-netipconfiguration", "get-netroute",
    "new-netipaddress", "set-dnsclientserveraddress", "get-dnsclientserveraddress", "get-netconnectionprofile",
    "get-netfirewallprofile", "get-bitlockervolume", "suspend-bitlocker", "resume-bitlocker", "get-tpm",
    "confirm-secureboot" + "uefi", "get-windowsdriver", "mount-diskimage", "dismount-diskimage", "get-diskimage",
    "register-scheduledtask", "unregister-scheduledtask", "get-scheduledtask", "new-scheduledtaskaction",
    "new-scheduledtasktrigger", "new-scheduledtaskprincipal", "get-mpcomputerstatus", "convertfrom-string",
    "get-timezone", "new-temporaryfile", "expand-archive", "compress-archive", "get-clipboard",
}


def parse(text: str) -> ts.Tree:
    return PARSER.parse(text.encode("utf-8"))


def _walk(node: ts.Node):
    yield node
    for c in node.children:
        yield from _walk(c)


def _text(node: ts.Node, src: bytes) -> str:
    return src[node.start_byte:node.end_byte].decode("utf-8", "replace")


def parse_errors(text: str) -> list[str]:
    tree = parse(text)
    src = text.encode("utf-8")
    return [f"line {n.start_point[0] + 1}: syntax error near {_text(n, src)[:40]!r}"
            for n in _walk(tree.root_node) if n.type == "ERROR" or n.is_missing]


def commands(text: str):
    tree = parse(text)
    src = text.encode("utf-8")
    for n in _walk(tree.root_node):
        if n.type == "command_name":
            yield n, _text(n, src)


def strict_problems(text: str) -> list[str]:
    out = []
    if not any(name.lower() == "set-strictmode" for _, name in commands(text)):
        out.append("line 1: no Set-StrictMode")
    if not re.search(r"^\s*\$ErrorActionPreference\s*=\s*'Stop'", text, re.M | re.I):
        out.append("line 1: no $ErrorActionPreference = 'Stop'")
    return out


def alias_problems(text: str) -> list[str]:
    return [f"line {n.start_point[0] + 1}: alias {name!r}" for n, name in commands(text) if name.lower() in ALIASES]


def contract_problems(text: str) -> list[str]:
    out = []
    if not re.search(r"^# guestprep-(script|library): [A-Za-z0-9_.-]+\s*$", text, re.M):
        out.append("line 1: no '# guestprep-script: NAME' marker")
    if re.search(r"^# guestprep-output: json\s*$", text, re.M):
        names = {name.lower() for _, name in commands(text)}
        if not names & {"write-result", "convertto-json"}:
            out.append("line 1: JSON output contract but nothing emits JSON (Write-Result / ConvertTo-Json)")
    return out


def _guarded(node: ts.Node, src: bytes) -> bool:
    p = node.parent
    while p is not None:
        if p.type == "try_statement":
            return True
        if p.type == "script_block_expression":
            cmd = p.parent
            while cmd is not None and cmd.type != "command":
                cmd = cmd.parent
            if cmd is not None:
                name = cmd.child_by_field_name("command_name") or next(
                    (c for c in cmd.children if c.type == "command_name"), None)
                if name is not None and _text(name, src).lower() == "invoke-guarded":
                    return True
        p = p.parent
    return False


def newer_problems(text: str) -> list[str]:
    src = text.encode("utf-8")
    checked = {m.lower() for m in re.findall(r"Get-Command\s+-Name\s+'([A-Za-z-]+)'", text)}
    # a loop over names checked with Get-Command -Name $var: @('A', 'B') lists in the foreach header
    for names in re.findall(r"foreach\s*\(\s*\$\w+\s+in\s+@\(([^)]*)\)\s*\)\s*\{\s*\n?\s*if\s*\(-not\s*\(Get-Command", text):
        checked |= {x.strip(" '\"").lower() for x in names.split(",")}
    for m in re.findall(r"-Requires\s+@\(([^)]*)\)", text):
        checked |= {x.strip(" '\"").lower() for x in m.split(",")}
    out = []
    for n, name in commands(text):
        low = name.lower()
        if low in NEWER and low not in checked and not _guarded(n, src):
            out.append(f"line {n.start_point[0] + 1}: {name} is newer than PowerShell 3.0 and not guarded")
    return out


def lint(text: str, composed: str | None = None) -> list[str]:
    """All rules; ``composed`` is the text actually sent (library + script) for the strict rule."""
    return (parse_errors(text) + strict_problems(composed or text) + alias_problems(text)
            + contract_problems(text) + newer_problems(text))


# --------------------------------------------------------------------------- Windows PowerShell pitfalls
# Shared by the lint (test_scripts_lint.py) and the engine model (wsman_server/powershell_model.py).

# Programs we run that are not cmdlets; any name ending in .exe/.com/.cmd/.bat is native too.
NATIVE = {"schtasks", "pnputil", "icacls", "powercfg", "netsh", "msiexec", "bcdedit", "reg", "sc", "cmd",
          "wevtutil", "dism", "route", "ipconfig", "manage-bde", "fsutil", "diskpart", "wmic", "devcon"}
# Parsed differently (or not at all) by PowerShell 2.0: a script holding one fails to parse,
# so not even a version check at its top runs (about_Comparison_Operators: -shl/-shr, -in/-notin
# are PowerShell 3.0; classes/enums/using are 5.0).
PARSE_V3 = {"-shl", "-shr", "-in", "-notin", "-cin", "-cnotin", "-iin", "-inotin"}
# Fail when executed on 2.0 (cmdlets and type accelerators that arrived with 3.0).
RUN_V3_COMMANDS = {"convertfrom-json", "convertto-json", "invoke-restmethod", "invoke-webrequest", "get-ciminstance",
                   "invoke-cimmethod", "new-ciminstance", "set-ciminstance", "get-cimassociatedinstance",
                   "register-scheduledjob", "new-cimsession"}
RUN_V3_TYPES = {"ordered", "pscustomobject"}


def _line(n: ts.Node) -> int:
    return n.start_point[0] + 1


def _ancestors(n: ts.Node):
    p = n.parent
    while p is not None:
        yield p
        p = p.parent


def in_try_block(n: ts.Node) -> bool:
    """Inside the protected block of a try statement (not in its catch/finally)."""
    child = n
    for p in _ancestors(n):
        if p.type == "try_statement":
            body = next((c for c in p.children if c.type == "statement_block"), None)
            if body is not None and child.start_byte >= body.start_byte and child.end_byte <= body.end_byte:
                return True
        child = p
    return False


def _command_name(cmd: ts.Node, src: bytes) -> str | None:
    for c in cmd.children:
        if c.type == "command_name":
            return _text(c, src)
        if c.type == "command_name_expr":
            inner = next((x for x in c.children if x.type == "command_name"), None)
            return _text(inner or c, src)
    return None


def _strip_quotes(s: str) -> str:
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s


def is_native(name: str) -> bool:
    low = name.lower().strip("'\"")
    base = low.rsplit("\\", 1)[-1]
    return base.endswith((".exe", ".com", ".cmd", ".bat")) or base in NATIVE


def native_calls(text: str):
    """Each native program invocation: dict(node, name, args (literal text or None for an
    expression), redirections (e.g. '2>$null', '2>&1'), line, start)."""
    tree = parse(text)
    src = text.encode("utf-8")
    for n in _walk(tree.root_node):
        if n.type != "command":
            continue
        name = _command_name(n, src)
        if not name or not is_native(name):
            continue
        args: list[str | None] = []
        redirs: list[str] = []
        elements = next((c for c in n.children if c.type == "command_elements"), None)
        for e in (elements.children if elements is not None else []):
            t = _text(e, src)
            if e.type == "command_argument_sep":
                continue
            if e.type == "redirection" or re.match(r"^[0-9*]?>", t):
                redirs.append(t.replace(" ", ""))
            elif e.type == "generic_token":
                args.append(t)
            else:
                lit = [x for x in _walk(e) if x.type in ("string_literal", "generic_token")]
                only = len(lit) == 1 and _text(lit[0], src) == t
                args.append(_strip_quotes(t) if only and "$" not in t else None)
        yield {"node": n, "name": name.strip("'\""), "args": args, "redirections": redirs, "line": _line(n),
               "start": n.start_byte}
    return


def stderr_redirected(redirections: list[str]) -> bool:
    """2>..., 2>&1, *>... (stream 2 of a native program) - not 1>/> (stdout only)."""
    return any(r.startswith(("2>", "*>")) for r in redirections)


def _preference_at(text: str, pos: int) -> str | None:
    """The value last assigned to $ErrorActionPreference before byte ``pos`` (textually)."""
    src = text.encode("utf-8")[:pos].decode("utf-8", "replace")
    found = re.findall(r"\$ErrorActionPreference\s*=\s*['\"]?(\w+)", src, re.I)
    return found[-1].lower() if found else None


def native_stderr_problems(text: str) -> list[str]:
    """Native stderr redirected while 'Stop' is in force: Windows PowerShell 3.0-5.1 turn each
    stderr line into an ErrorRecord and the first one terminates the script."""
    out = []
    for c in native_calls(text):
        if stderr_redirected(c["redirections"]) and _preference_at(text, c["start"]) == "stop":
            out.append(f"line {c['line']}: {c['name']} with {' '.join(c['redirections'])} under "
                       "$ErrorActionPreference = 'Stop' (throws in Windows PowerShell 5.1): use Invoke-Native")
    return out


def console_encoding_assignments(text: str):
    """(node, guarded) for each assignment to [Console]::OutputEncoding."""
    tree = parse(text)
    src = text.encode("utf-8")
    for n in _walk(tree.root_node):
        if n.type != "assignment_expression":
            continue
        left = next((c for c in n.children if c.type == "left_assignment_expression"), None)
        if left is None:
            continue
        lt = re.sub(r"\s+", "", _text(left, src)).lower()
        if lt in ("[console]::outputencoding", "[system.console]::outputencoding"):
            yield n, in_try_block(n)


def console_encoding_problems(text: str) -> list[str]:
    return [f"line {_line(n)}: [Console]::OutputEncoding assigned outside try/catch (throws \"The handle is "
            "invalid\" in a remote session)" for n, guarded in console_encoding_assignments(text) if not guarded]


def exit_lastexitcode_problems(text: str) -> list[str]:
    """`exit $LASTEXITCODE`: relays whatever native code came last, tolerated ones included."""
    tree = parse(text)
    src = text.encode("utf-8")
    out = []
    for n in _walk(tree.root_node):
        if n.type == "flow_control_statement" and n.children and n.children[0].type == "exit":
            rest = re.sub(r"[\s()]", "", _text(n, src)[4:]).lower()
            if rest in ("$lastexitcode", "$global:lastexitcode"):
                out.append(f"line {_line(n)}: exit $LASTEXITCODE relays a native exit code the script may have "
                           "tolerated: exit with an explicit code")
    return out


def version_check_end(text: str) -> int | None:
    """End byte of the first if statement whose condition reads $PSVersionTable, or None."""
    tree = parse(text)
    src = text.encode("utf-8")
    for n in _walk(tree.root_node):
        if n.type == "if_statement":
            cond = next((c for c in n.children if c.type == "pipeline"), None)
            if cond is not None and "$psversiontable" in _text(cond, src).lower():
                return n.end_byte
    return None


def v3_syntax(text: str, until: int | None = None):
    """(line, what, parse_time) for PowerShell 3.0+ syntax; runtime-only items before ``until``
    (None: anywhere). Parse-time items count anywhere: 2.0 rejects the whole script."""
    tree = parse(text)
    src = text.encode("utf-8")
    for n in _walk(tree.root_node):
        t = _text(n, src)
        low = t.lower()
        before = until is None or n.start_byte < until
        if n.type == "comparison_operator" and low in PARSE_V3:
            yield _line(n), f"operator {t}", True
        elif n.type in ("class_statement", "enum_statement", "using_statement"):
            yield _line(n), n.type.replace("_statement", ""), True
        elif not before:
            continue
        elif n.type == "command_name" and low in RUN_V3_COMMANDS:
            yield _line(n), f"cmdlet {t}", False
        elif n.type == "type_literal":
            name = re.sub(r"[\[\]\s]", "", low)
            if name in RUN_V3_TYPES:
                yield _line(n), f"type [{name}]", False
        elif n.type == "member_name" and low in ("foreach", "where") and n.parent is not None \
                and n.parent.type == "invokation_expression":
            yield _line(n), f"method .{t}() (4.0)", False


def pre_version_check_problems(text: str) -> list[str]:
    """Code that must run on PowerShell 2.0 (the bootstrap, up to and including its version
    check) uses only 2.0 syntax; 3.0 parse-time syntax is refused anywhere in it."""
    end = version_check_end(text)
    out = []
    if end is None:
        out.append("line 1: no $PSVersionTable check")
        end = len(text.encode("utf-8"))
    for line, what, _parse_time in v3_syntax(text, end):
        out.append(f"line {line}: {what} is PowerShell 3.0+ and runs before (or breaks the parse of) the version check")
    return out


def pitfall_problems(text: str, composed: str | None = None) -> list[str]:
    """The Windows PowerShell 5.1 pitfall rules for one guest script (``composed``: with lib.ps1)."""
    full = composed or text
    return native_stderr_problems(full) + console_encoding_problems(text) + exit_lastexitcode_problems(text)


# ---------------------------------------------------------------- journal kinds (rollback consistency)

def journal_calls(text: str) -> list[tuple[int, str | None]]:
    """(line, -Kind argument as written, None when absent) of every Add-JournalEntry call."""
    tree = parse(text)
    src = text.encode("utf-8")
    out = []
    for n in _walk(tree.root_node):
        if n.type != "command" or (_command_name(n, src) or "").lower() != "add-journalentry":
            continue
        elements = next((c for c in n.children if c.type == "command_elements"), None)
        parts = [c for c in (elements.children if elements is not None else []) if c.type != "command_argument_sep"]
        kind = next((_text(v, src) for f, v in zip(parts, parts[1:]) if _text(f, src).lower() == "-kind"), None)
        out.append((_line(n), kind))
    return out


def journal_kinds_written(text: str) -> set[str]:
    """The journal kinds a script writes: the literal -Kind of each Add-JournalEntry call."""
    return {_strip_quotes(k) for _line_no, k in journal_calls(text) if k is not None}


def switch_branches(text: str, subject: str = "kind") -> dict[str, str]:
    """label -> body text of the `switch (...<subject>...)` clauses (rollback.ps1's replay branches;
    `default` excluded)."""
    tree = parse(text)
    src = text.encode("utf-8")
    out: dict[str, str] = {}
    for n in _walk(tree.root_node):
        if n.type != "switch_statement":
            continue
        head = _text(n, src).split("{", 1)[0].lower()
        if f".{subject}" not in head:
            continue
        for clause in _walk(n):
            if clause.type != "switch_clause":
                continue
            cond = next((c for c in clause.children if c.type == "switch_clause_condition"), None)
            body = next((c for c in clause.children if c.type == "statement_block"), None)
            if cond is None or body is None:
                continue
            label = _strip_quotes(_text(cond, src))
            if label.lower() != "default":
                out[label] = _text(body, src)
    return out
