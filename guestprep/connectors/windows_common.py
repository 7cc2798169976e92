"""What the WinRM and PSRP connectors share: script loading, encoding, CLIXML decoding.

Scripts travel as data, never as command lines built from input:

* WinRM: ``powershell.exe -EncodedCommand <BOOTSTRAP>`` where the bootstrap is a
  fixed script (no input in it). The bootstrap reads one base64 line from stdin:
  a UTF-8 JSON payload ``{"script": ..., "args": [...], "stdin": ...}``, makes a
  scriptblock of ``script`` and invokes it with ``args`` as positional parameters.
  Output is forced to UTF-8 whatever the guest's OEM code page is.
* PSRP: the script text is added to the pipeline and ``args`` as arguments.
"""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from typing import Any, Sequence

from guestprep import secrets
from guestprep.errors import ConfigError
from guestprep.scripts import script_path

SCRIPTS_DIR = script_path("windows")
MARKER_RE = re.compile(r"^#\s*guestprep-script:\s*(?P<name>[A-Za-z0-9_.-]+)\s*$", re.M)

# The fixed bootstrap. It contains no caller input; the payload arrives on stdin.
# Until the version check it uses PowerShell 2.0 syntax only (1.0 has no $PSVersionTable;
# 2.0 has no ConvertFrom-Json, [ordered], [pscustomobject], -shl/-shr). An older engine gets
# the collector's own "unsupported" document (exit 0), which the facts parser turns into the
# WIN-OS-SUPPORTED finding; every other script gets exit code UNSUPPORTED_RC from the connector.
# [Console]::OutputEncoding is not set: in a session without a console (wsmprovhost, and
# processes started by WinRS without one) it throws "The handle is invalid". Output goes as
# UTF-8 bytes straight to the stdout handle instead, whatever the OEM code page is.
# A script's exit code is its own `exit N` or 1 for an error; $LASTEXITCODE is never relayed
# (a native exit code the script tolerated, e.g. pnputil's 259, is not a failure).
UNSUPPORTED_PREFIX = '{"schema":"guestprep.windows.facts/1","supported":false'
UNSUPPORTED_RC = 126
# The version check both wrappers start with (PowerShell 1.0/2.0 syntax only); END_ is how the
# wrapper stops after answering (powershell.exe: exit 0; a PSRP pipeline: return).
_VERSION_CHECK = (
    "$v = '1.0'\n"
    "if (Test-Path -Path 'variable:PSVersionTable') { $v = [string]$PSVersionTable.PSVersion }\n"
    "if ($v -eq '1.0' -or $PSVersionTable.PSVersion.Major -lt 3) {\n"
    "    $h = $env:COMPUTERNAME -replace '[^A-Za-z0-9._-]', ''\n"
    "    Write-Output ('" + UNSUPPORTED_PREFIX + ",\"unsupported_reason\":\"unsupported: PowerShell ' + $v"
    " + ' (guestprep needs PowerShell 3.0 or newer: WMF 3.0+, Windows Server 2012+)\",\"hostname\":\"' + $h"
    " + '\",\"os\":null,\"ps_version\":\"' + $v + '\"}')\n"
    "    END_\n"
    "}\n"
)
BOOTSTRAP = (
    "$ErrorActionPreference = 'Stop'\n"
    "# guestprep-bootstrap/1 (PowerShell 2.0 syntax until the version check)\n"
    + _VERSION_CHECK.replace("END_", "exit 0") +
    "$utf8 = New-Object -TypeName System.Text.UTF8Encoding -ArgumentList $false\n"
    "try { $OutputEncoding = $utf8 } catch { $null = $_ }\n"
    "$stdout = New-Object -TypeName System.IO.StreamWriter -ArgumentList ([Console]::OpenStandardOutput()), $utf8\n"
    "$stdout.AutoFlush = $true\n"
    "$line = [Console]::In.ReadLine()\n"
    "$json = [System.Text.Encoding]::UTF8.GetString([System.Convert]::FromBase64String($line))\n"
    "$payload = ConvertFrom-Json -InputObject $json\n"
    "$block = [scriptblock]::Create([string]$payload.script)\n"
    "$argv = @($payload.args)\n"
    "if ($null -ne $payload.stdin) { $payload.stdin | & $block @argv | ForEach-Object -Process { $stdout.WriteLine([string]$_) } }\n"
    "else { & $block @argv | ForEach-Object -Process { $stdout.WriteLine([string]$_) } }\n"
    "exit 0\n"
)
# PSRP runs a pipeline's script text as given: on a PowerShell 2.0 endpoint a script with 3.0
# syntax (collect.ps1 before its own check, ConvertFrom-Json at the top of every operation
# script) is a parse or command-not-found error, not a finding. So the PSRP connector sends this
# fixed guard as the pipeline's script, the real script as its first argument (data) and the
# script's arguments after it; the guard answers the same "unsupported" document as BOOTSTRAP.
PSRP_GUARD_MARKER = "# guestprep-psrp-guard/1"
PSRP_GUARD = (
    "$ErrorActionPreference = 'Stop'\n"
    + PSRP_GUARD_MARKER + " (PowerShell 2.0 syntax until the version check)\n"
    + _VERSION_CHECK.replace("END_", "return") +
    "$guestprepBlock = [scriptblock]::Create([string]$args[0])\n"
    "$guestprepArgs = @($args | Select-Object -Skip 1)\n"
    "$input | & $guestprepBlock @guestprepArgs\n"
)


def unsupported_reason(stdout: bytes) -> str | None:
    """The reason when the bootstrap answered "unsupported" instead of running the script."""
    text = stdout.decode("utf-8", errors="replace").lstrip("\ufeff").strip()
    if not text.startswith(UNSUPPORTED_PREFIX):
        return None
    try:
        doc = json.loads(text.splitlines()[0])
    except json.JSONDecodeError:
        return "unsupported PowerShell version"
    return str(doc.get("unsupported_reason") or "unsupported PowerShell version")


def encode_command(script: str) -> str:
    """PowerShell's -EncodedCommand form: base64 of UTF-16LE."""
    return base64.b64encode(script.encode("utf-16-le")).decode("ascii")


def decode_command(encoded: str) -> str:
    return base64.b64decode(encoded).decode("utf-16-le")


def bootstrap_argv() -> list[str]:
    return ["powershell.exe", "-NoProfile", "-NonInteractive", "-ExecutionPolicy", "Bypass",
            "-EncodedCommand", encode_command(BOOTSTRAP)]


def payload_line(script: str, args: Sequence[str], stdin: bytes | None) -> bytes:
    doc = {"script": script, "args": [str(a) for a in args],
           "stdin": stdin.decode("utf-8") if stdin is not None else None}
    return base64.b64encode(json.dumps(doc, ensure_ascii=False).encode("utf-8")) + b"\r\n"


def parse_payload_line(line: bytes) -> dict:
    return json.loads(base64.b64decode(line.strip()).decode("utf-8"))


def script_marker(text: str) -> str | None:
    m = MARKER_RE.search(text)
    return m.group("name") if m else None


def windows_script_text(name: str) -> str:
    path = SCRIPTS_DIR / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"guest script missing: {exc.strerror}", where=str(path)) from None


def windows_script(name: str, *, library: bool = True) -> str:
    """Script text, with the shared library (journal, JSON result helpers) in front."""
    text = windows_script_text(name)
    if library and name != "lib.ps1":
        return windows_script_text("lib.ps1") + "\n" + text
    return text


# --------------------------------------------------------------------------- CLIXML

_CLIXML_ESC = re.compile(r"_x([0-9A-Fa-f]{4})_")


def _unescape_clixml(s: str) -> str:
    return _CLIXML_ESC.sub(lambda m: chr(int(m.group(1), 16)), s)


def decode_clixml(data: bytes | str) -> str:
    """Turn PowerShell's ``#< CLIXML`` stderr into readable lines.

    Error records (``S="Error"``) and warnings become plain text; progress
    records are dropped. Text that is not CLIXML is returned unchanged.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    if "#< CLIXML" not in text:
        return text
    before, _, rest = text.partition("#< CLIXML")
    out: list[str] = [before.strip()] if before.strip() else []
    xml = rest.strip()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return text  # not well-formed: keep the raw text rather than lose it
    for el in root.iter():
        tag = el.tag.rsplit("}", 1)[-1]
        if tag == "S" and el.get("S") in ("Error", "Warning", "Verbose", "Debug", "Information"):
            line = _unescape_clixml(el.text or "")
            prefix = {"Warning": "WARNING: ", "Verbose": "VERBOSE: ", "Debug": "DEBUG: "}.get(el.get("S") or "", "")
            out.append(prefix + line)
    return "".join(out).replace("\r\n", "\n").strip()


# --------------------------------------------------------------------------- vars


def truthy(value: object) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


def optional_text(guest_vars: object, key: str) -> str | None:
    """A guest var as text, or None when unset or empty."""
    value = guest_vars.get(key)  # type: ignore[attr-defined]
    return str(value) if value else None


# --------------------------------------------------------------------------- scripts with JSON results


def call_script(conn: object, name: str, params: dict, timeout: float = 300.0, where: str = "") -> dict:
    """Run guest_scripts/windows/<name> with ``params`` as one JSON argument; return its JSON result.

    A non-zero exit raises :class:`guestprep.errors.OperationError` with the decoded
    PowerShell error; output that is not one JSON object raises CollectorError.
    """
    from guestprep.connectors.base import Script
    from guestprep.errors import CollectorError, OperationError

    script = Script(text=windows_script(name), args=(json.dumps(params, ensure_ascii=False),),
                    interpreter="powershell", name=name)
    res = conn.run(script, timeout=timeout)  # type: ignore[attr-defined]
    if res.rc != 0:
        msg = (res.err_text() or res.text()).strip() or "no error text"
        raise OperationError(f"{name} failed (exit {res.rc}): {msg}", where=where or None)
    text = res.text().lstrip("\ufeff").strip()
    try:
        doc = json.loads(text.splitlines()[-1] if text else "")
    except (json.JSONDecodeError, IndexError):
        raise CollectorError(f"{name} printed no JSON result: {text[:120]!r}", where=where or None) from None
    if not isinstance(doc, dict):
        raise CollectorError(f"{name} printed JSON {type(doc).__name__}, expected an object", where=where or None)
    return doc


CHUNK = 64 * 1024  # fits the default 500 KB WS-Man envelope after two base64 layers


def put_file(conn: object, local: str, remote: str, where: str = "") -> None:
    """Upload in chunks to ``remote.partial``, verify SHA-256, then move into place (never overwrite)."""
    import hashlib
    import os

    from guestprep.errors import OperationError

    try:
        size = os.path.getsize(local)
        fh = open(local, "rb")
    except OSError as exc:
        raise ConfigError(f"cannot read {local}: {exc.strerror}", where=where or None) from None
    digest = hashlib.sha256()
    with fh:
        # an identical file already there: nothing to do (idempotent re-runs)
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
        want = digest.hexdigest().upper()
        try:
            have = call_script(conn, "file-hash.ps1", {"path": remote}, where=where)
            if str(have.get("sha256", "")).upper() == want:
                return
            raise OperationError(f"{remote} exists with different content (SHA-256 {have.get('sha256')}); "
                                 "not overwriting", where=where or None)
        except OperationError as exc:
            if "exists with different content" in exc.message:
                raise
        partial = remote + ".guestprep-partial"
        fh.seek(0)
        offset = 0
        while True:
            chunk = fh.read(CHUNK)
            if not chunk and offset:
                break
            call_script(conn, "put-chunk.ps1", {"path": partial, "offset": offset,
                                                "data": base64.b64encode(chunk).decode("ascii")}, where=where)
            offset += len(chunk)
            if not chunk:
                break
    got = call_script(conn, "file-hash.ps1", {"path": partial}, where=where)
    if str(got.get("sha256", "")).upper() != want or int(got.get("size", -1)) != size:
        raise OperationError(f"upload of {local} to {remote} is corrupt (SHA-256 {got.get('sha256')} != {want})",
                             where=where or None)
    call_script(conn, "move-file.ps1", {"source": partial, "dest": remote}, where=where)


def get_file(conn: object, remote: str, local: str, where: str = "") -> None:
    """Download in chunks to ``local.partial``, verify SHA-256, then create ``local`` exclusively."""
    import hashlib
    import os

    from guestprep.errors import OperationError

    if os.path.exists(local):
        raise ConfigError(f"{local} already exists; not overwriting", where=where or None)
    meta = call_script(conn, "file-hash.ps1", {"path": remote}, where=where)
    partial = local + ".partial"
    digest = hashlib.sha256()
    with open(partial, "wb") as out:
        offset = 0
        while offset < int(meta["size"]):
            doc = call_script(conn, "get-chunk.ps1", {"path": remote, "offset": offset, "length": CHUNK}, where=where)
            data = base64.b64decode(doc["data"])
            if not data:
                break
            out.write(data)
            digest.update(data)
            offset += len(data)
    if digest.hexdigest().upper() != str(meta["sha256"]).upper():
        os.unlink(partial)
        raise OperationError(f"download of {remote} is corrupt", where=where or None)
    os.link(partial, local)  # fails if local appeared meanwhile: exclusive create
    os.unlink(partial)


def require_auth_library(module: str, extra: str, client: str, where: str) -> None:
    """Kerberos/CredSSP client libraries are optional extras: a missing one is a setup error, not a dead guest."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"{extra} authentication needs the {module} library, which is not installed "
                          f"(install guestprep[{extra}] or {client}[{extra}] on the controller)", where=where)


# --------------------------------------------------------------------------- connector helpers (WinRM and PSRP)


def url_host(address: str) -> str:
    """An address as the host part of a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def guest_where(guest: Any) -> str:
    """'guest NAME (inventory file:line)': where a bad guest var is reported."""
    source = getattr(guest, "source", None)
    return f"guest {guest.name}" + (f" ({source})" if source else "")


def int_var(guest_vars: Any, key: str, default: Any, where: str, minimum: int = 0, maximum: int | None = None) -> int:
    """A numeric guest var (port, timeout, retries). Values discovered from vSphere or typed in an
    inventory arrive as text: a bad one is a ConfigError naming the guest and the var, not a
    ValueError from int()."""
    value = guest_vars.get(key, default) if guest_vars is not None else default
    if value is None or value == "":
        value = default
    if isinstance(value, bool):
        raise ConfigError(f"{key} must be a whole number, got {value!r}", where=where)
    try:
        n = int(value) if isinstance(value, float) and value.is_integer() else int(str(value).strip(), 10)
    except ValueError:
        raise ConfigError(f"{key} must be a whole number, got {str(value)[:40]!r}", where=where) from None
    if n < minimum or (maximum is not None and n > maximum):
        bound = f"{minimum}..{maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{key} must be {bound}, got {n}", where=where)
    return n


def tls_policy(validation: Any, ca: Any, options: Any, where: str, var: str) -> tuple[bool, str | None]:
    """(verify, CA bundle) from the transport's cert-validation var; 'ignore' needs --insecure."""
    import os

    ignore = str(validation).lower() == "ignore" or (isinstance(validation, bool) and not validation)
    if ignore and not options.insecure_tls:
        raise ConfigError(f"{var}=ignore turns TLS verification off; pass --insecure to allow it explicitly",
                          where=where)
    ca_path = str(ca) if ca else options.ca_bundle
    if ca_path and not os.path.isfile(ca_path):
        raise ConfigError(f"CA bundle {ca_path} does not exist", where=where)
    return (not (ignore or options.insecure_tls)), ca_path


def guest_password(guest: Any, optional: bool = False) -> str | None:
    """The guest's password from its environment variable, registered so that secrets.redact masks it
    everywhere; ``optional`` for Kerberos, which can use a ticket."""
    env = guest.credentials.password_env
    if not env and optional:
        return None
    if not env:
        raise ConfigError("credentials.password_env is not set (passwords come from an environment variable)",
                          where=f"guest {guest.name}")
    return secrets.from_env(env, "credentials.password_env", f"guest {guest.name}")


def check_basic_password(auth: str, password: str, where: str) -> None:
    """requests encodes Basic credentials as Latin-1; anything else would fail deep inside it."""
    if auth == "basic":
        try:
            password.encode("latin-1")
        except UnicodeEncodeError:
            raise ConfigError("the password has characters Basic authentication cannot carry (not Latin-1); "
                              "use ntlm/negotiate or kerberos", where=where) from None


def ssl_reason(exc: Exception) -> str:
    """The one phrase of a TLS verification error a user can act on."""
    text = str(exc)
    for key in ("certificate has expired", "self-signed certificate", "unable to get local issuer certificate",
                "Hostname mismatch", "IP address mismatch", "certificate verify failed"):
        if key.lower() in text.lower():
            return key
    return short_error(exc)


def short_error(exc: Exception, host: str = "", port: int | None = None, timeout: float | None = None) -> str:
    """A connection failure in words (refused, timed out, name does not resolve, TLS verification
    failed), else the error's own text whole: never a chain cut mid-sentence. The caller keeps
    ``str(exc)`` as evidence."""
    from guestprep.connectors.base import network_reason

    reason = network_reason(exc, host or "the guest", port, timeout)
    if reason:
        return reason
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
