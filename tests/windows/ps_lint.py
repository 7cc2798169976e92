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
