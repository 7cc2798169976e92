"""PSRP transport (pypsrp): a PowerShell runspace pool, optionally a JEA endpoint.

Scripts run as PowerShell pipelines (script text + positional arguments as data),
so no command line is ever built. Exit status: a script that throws or writes an
error record is rc 1; argv commands report their native exit code. Guest vars use
Ansible's psrp names (ansible_psrp_*); see docs/windows.md.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from guestprep import secrets
from guestprep.connectors import ConnectOptions
from guestprep.connectors import windows_common as wc
from guestprep.connectors.base import Script
from guestprep.errors import CommandTimeout, ConfigError, ConnectionFailed, GuestprepError
from guestprep.models import CommandResult, Guest

AUTHS = ("negotiate", "ntlm", "kerberos", "credssp", "basic", "certificate")
CONFIG_PREFIX = "http://schemas.microsoft.com/powershell/"
RC_PREFIX = "guestprep-rc="


@dataclass(frozen=True)
class PSRPSettings:
    server: str
    port: int
    ssl: bool
    path: str
    auth: str
    user: str
    verify: bool
    ca: str | None
    encryption: str
    configuration: str
    operation_timeout: int
    read_timeout: int
    connection_timeout: int
    hostname_override: str | None
    service: str | None
    delegate: bool
    credssp_mechanism: str

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.ssl else 'http'}://{wc.url_host(self.server)}:{self.port}/{self.path}"

    @classmethod
    def from_guest(cls, guest: Guest, options: ConnectOptions) -> "PSRPSettings":
        v: Mapping[str, Any] = guest.vars or {}
        where = wc.guest_where(guest)
        proto = str(v.get("ansible_psrp_protocol", "https")).lower()
        if proto not in ("http", "https"):
            raise ConfigError(f"ansible_psrp_protocol must be http or https, got {proto!r}", where=where)
        auth = str(v.get("ansible_psrp_auth", "negotiate")).lower()
        if auth not in AUTHS:
            raise ConfigError(f"ansible_psrp_auth {auth!r} not supported (one of {', '.join(AUTHS)})", where=where)
        if proto == "http" and auth in ("basic", "certificate"):
            raise ConfigError(f"{auth} authentication over HTTP would send credentials in clear text; "
                              "use ansible_psrp_protocol=https", where=where)
        enc = str(v.get("ansible_psrp_message_encryption", "auto")).lower()
        if proto == "http" and enc == "never" and not options.insecure_tls:
            raise ConfigError("ansible_psrp_message_encryption=never over HTTP sends everything in clear text; "
                              "pass --insecure to allow it explicitly", where=where)
        verify, ca = wc.tls_policy(v.get("ansible_psrp_cert_validation", "validate"), v.get("ansible_psrp_ca_cert"),
                                 options, where, "ansible_psrp_cert_validation")
        conf = str(v.get("ansible_psrp_configuration_name", "Microsoft.PowerShell"))
        op = wc.int_var(v, "ansible_psrp_operation_timeout", 20, where, 1)
        return cls(
            server=guest.address,
            port=guest.port or wc.int_var(v, "ansible_port", 5986 if proto == "https" else 5985, where, 1, 65535),
            ssl=proto == "https", path=str(v.get("ansible_psrp_path", "wsman")).lstrip("/"), auth=auth,
            user=guest.credentials.user or "", verify=verify, ca=ca, encryption=enc, configuration=conf,
            operation_timeout=op, read_timeout=wc.int_var(v, "ansible_psrp_read_timeout", op + 10, where, 1),
            connection_timeout=wc.int_var(v, "ansible_psrp_connection_timeout", options.connect_timeout, where, 1),
            hostname_override=wc.optional_text(v, "ansible_psrp_negotiate_hostname_override"),
            service=wc.optional_text(v, "ansible_psrp_negotiate_service"),
            delegate=wc.truthy(v.get("ansible_psrp_negotiate_delegate", False)),
            credssp_mechanism=_credssp_mechanism(v.get("ansible_psrp_credssp_auth_mechanism", "auto"), where),
        )


def _credssp_mechanism(value: Any, where: str) -> str:
    mech = str(value).lower()
    if mech not in ("auto", "kerberos", "ntlm"):
        raise ConfigError(f"ansible_psrp_credssp_auth_mechanism must be auto, kerberos or ntlm, got {mech!r}",
                          where=where)
    return mech


class PSRPConnector:
    name = "psrp"

    def __init__(self, guest: Guest, options: ConnectOptions):
        from pypsrp.powershell import RunspacePool
        from pypsrp.wsman import WSMan

        self.guest = guest
        self.options = options
        self.settings = s = PSRPSettings.from_guest(guest, options)
        self._where = f"{guest.name} ({s.endpoint}, {s.configuration})"
        # Kerberos may use the admin's existing ticket (kinit/keytab) instead of a password
        self._secret = wc.guest_password(guest, optional=s.auth == "kerberos")
        user = s.user
        if s.auth == "kerberos":
            from guestprep.connectors.kerberos import principal_for

            wc.require_auth_library("gssapi", "kerberos", "pypsrp", self._where)
            user = principal_for(s.user, self._where)
        elif s.auth == "credssp":
            wc.require_auth_library("requests_credssp", "credssp", "pypsrp", self._where)
        wc.check_basic_password(s.auth, self._secret or "", self._where)
        cert_validation: bool | str = (s.ca or True) if s.verify else False
        self.wsman = WSMan(
            s.server, port=s.port, ssl=s.ssl, path=s.path, auth=s.auth, username=user, password=self._secret,
            cert_validation=cert_validation, encryption=s.encryption, operation_timeout=s.operation_timeout,
            read_timeout=s.read_timeout, connection_timeout=s.connection_timeout, no_proxy=True,
            negotiate_hostname_override=s.hostname_override, negotiate_delegate=s.delegate or None,
            negotiate_service=s.service,
            credssp_auth_mechanism=s.credssp_mechanism,
        )
        # pypsrp prefixes http://schemas.microsoft.com/powershell/ itself
        conf = s.configuration[len(CONFIG_PREFIX):] if s.configuration.startswith(CONFIG_PREFIX) else s.configuration
        self.pool = RunspacePool(self.wsman, configuration_name=conf)
        try:
            self.pool.open()
        except Exception as exc:
            raise self._map_error(exc, "opening the runspace pool") from None

    def _map_error(self, exc: Exception, doing: str) -> GuestprepError:
        import requests
        from pypsrp import exceptions as pex

        s = self.settings
        if isinstance(exc, pex.AuthenticationError) or (isinstance(exc, pex.WinRMTransportError) and exc.code == 401):
            return ConnectionFailed(f"authentication failed: the server refused user {s.user!r} ({s.auth}) while {doing}",
                                    where=self._where)
        if isinstance(exc, requests.exceptions.SSLError):
            return _with_detail(ConnectionFailed(f"TLS certificate verification failed: {wc.ssl_reason(exc)}; give the CA with "
                                    "--ca-bundle or ansible_psrp_ca_cert (or --insecure)", where=self._where), exc)
        if isinstance(exc, requests.exceptions.ReadTimeout):
            return CommandTimeout(f"no answer within {s.read_timeout}s while {doing}", where=self._where)
        if isinstance(exc, requests.exceptions.ConnectionError):
            return _with_detail(ConnectionFailed(f"connection failed while {doing}: "
                                                 f"{wc.short_error(exc, s.server, s.port, s.connection_timeout)}",
                                                 where=self._where), exc)
        if isinstance(exc, pex.WSManFaultError):
            return ConnectionFailed(secrets.redact(f"WS-Management fault {exc.code} while {doing}: "
                                                   f"{(exc.message or exc.reason or '').strip()}"), where=self._where)
        if isinstance(exc, pex.WinRMTransportError):
            return ConnectionFailed(secrets.redact(f"HTTP {exc.code} while {doing}: {wc.short_error(exc)}"),
                                    where=self._where)
        return ConnectionFailed(secrets.redact(f"{type(exc).__name__} while {doing}: {exc}"), where=self._where)

    def run(self, command: Sequence[str] | Script, *, stdin: bytes | None = None, timeout: float = 300.0,
            sudo: bool = False) -> CommandResult:
        from pypsrp.complex_objects import PSInvocationState
        from pypsrp.powershell import PowerShell

        argv_mode = not isinstance(command, Script)
        if isinstance(command, Script):
            if command.interpreter not in ("powershell", "pwsh"):
                raise ConfigError(f"PSRP runs PowerShell scripts, not {command.interpreter!r}", where=self._where)
            text, args = command.text, [str(a) for a in command.args]
        else:
            if not command:
                raise ConfigError("empty command", where=self._where)
            text = wc.windows_script("run-argv.ps1")  # lib.ps1 in front: Invoke-Native
            args = [json.dumps({"argv": [str(a) for a in command], "report_rc": True})]
        start = time.monotonic()
        ps = PowerShell(self.pool)
        # the fixed version guard runs first; the script travels as its first argument (data)
        ps.add_script(wc.PSRP_GUARD)
        ps.add_argument(text)
        for a in args:
            ps.add_argument(a)
        try:
            if stdin is not None:
                ps.begin_invoke(input=stdin.decode("utf-8").splitlines())
            else:
                ps.begin_invoke()
            while ps.state == PSInvocationState.RUNNING:
                left = timeout - (time.monotonic() - start)
                if left <= 0:
                    try:
                        ps.stop()
                    except Exception:
                        pass
                    raise CommandTimeout(f"command did not finish within {timeout:g}s (stopped)", where=self._where)
                ps.poll_invoke(timeout=max(1, min(self.settings.operation_timeout, int(left) + 1)))
        except GuestprepError:
            raise
        except Exception as exc:
            raise self._map_error(exc, "running a pipeline") from None
        lines = [str(o) for o in ps.output]
        rc = 1 if (ps.had_errors or ps.state == PSInvocationState.FAILED) else 0
        if argv_mode and lines and lines[-1].startswith(RC_PREFIX):
            rc = int(lines.pop()[len(RC_PREFIX):] or 0)
        errors = "\n".join(_error_text(e) for e in ps.streams.error)
        if "no-language mode" in errors:
            # JEA RestrictedRemoteServer endpoints refuse every script: a setup problem, not a guest finding
            raise ConfigError(f"PSRP endpoint {self.settings.configuration!r} runs in NoLanguage mode (a JEA "
                              "RestrictedRemoteServer); guestprep sends PowerShell scripts and needs a "
                              "FullLanguage endpoint for its account (see docs/windows.md, 'JEA')", where=self._where)
        out = ("\n".join(lines) + ("\n" if lines else "")).encode("utf-8")
        duration = time.monotonic() - start
        reason = wc.unsupported_reason(out) if rc == 0 else None
        if reason is not None and wc.script_marker(text) != "collect":
            # as over WinRM: the collector document is for collect.ps1 (WIN-OS-SUPPORTED);
            # any other script fails naming the reason
            return CommandResult(rc=wc.UNSUPPORTED_RC, stdout=b"", stderr=reason.encode("utf-8"), duration=duration)
        return CommandResult(rc=rc, stdout=out, stderr=errors.encode("utf-8"), duration=duration)

    def put(self, local: str, remote: str, *, mode: int = 0o600) -> None:
        wc.put_file(self, local, remote, where=self._where)

    def get(self, remote: str, local: str) -> None:
        wc.get_file(self, remote, local, where=self._where)

    def close(self) -> None:
        try:
            self.pool.close()
        except Exception:
            pass

    def __enter__(self) -> "PSRPConnector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _error_text(err: Any) -> str:
    exc = getattr(err, "exception", None)
    msg = getattr(exc, "message", None) or getattr(err, "message", None) or str(err)
    return wc.decode_clixml(str(msg))


def _with_detail(err: GuestprepError, exc: BaseException) -> GuestprepError:
    """Keep the library's whole text (the urllib3 chain) as the failure's evidence."""
    err.detail = secrets.redact(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
    return err
