"""WinRM transport (pywinrm): WinRS shell, PowerShell scripts sent as data.

Secure by default: HTTPS with certificate verification; HTTP only with NTLM/Kerberos/
CredSSP message encryption; Basic only over HTTPS. Guest vars (Ansible names, so
imported Ansible inventories work) are documented in docs/windows.md and read by
:class:`WinRMSettings`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from guestprep import secrets
from guestprep.connectors import ConnectOptions
from guestprep.connectors.base import Script
from guestprep.connectors import windows_common as wc
from guestprep.connectors.kerberos import service_ticket_reason as kerberos_reason
from guestprep.errors import CommandTimeout, ConfigError, ConnectionFailed, GuestprepError
from guestprep.models import CommandResult, Guest

TRANSPORTS = ("ntlm", "kerberos", "credssp", "basic", "certificate")


@dataclass(frozen=True)
class WinRMSettings:
    endpoint: str
    scheme: str
    transport: str
    user: str
    password_env: str | None
    verify: bool
    ca_trust_path: str | None
    message_encryption: str
    operation_timeout: int
    read_timeout: int
    retries: int
    kerberos_delegation: bool
    kerberos_hostname_override: str | None

    @classmethod
    def from_guest(cls, guest: Guest, options: ConnectOptions) -> "WinRMSettings":
        v: Mapping[str, Any] = guest.vars or {}
        where = wc.guest_where(guest)
        scheme = str(v.get("ansible_winrm_scheme", "https")).lower()
        if scheme not in ("http", "https"):
            raise ConfigError(f"ansible_winrm_scheme must be http or https, got {scheme!r}", where=where)
        port = guest.port or wc.int_var(v, "ansible_port", 5986 if scheme == "https" else 5985, where, 1, 65535)
        path = str(v.get("ansible_winrm_path", "/wsman"))
        transport = _first(v.get("ansible_winrm_transport"), "ntlm")
        if transport == "plaintext":
            transport = "basic"
        if transport not in TRANSPORTS:
            raise ConfigError(f"ansible_winrm_transport {transport!r} not supported (one of {', '.join(TRANSPORTS)})",
                              where=where)
        verify, ca = wc.tls_policy(v.get("ansible_winrm_server_cert_validation", "validate"),
                                 v.get("ansible_winrm_ca_trust_path"), options, where, "ansible_winrm_server_cert_validation")
        enc = str(v.get("ansible_winrm_message_encryption", "auto")).lower()
        _check_cleartext(scheme, transport, enc, options, where)
        op = wc.int_var(v, "ansible_winrm_operation_timeout_sec", 20, where, 1)
        return cls(
            endpoint=f"{scheme}://{wc.url_host(guest.address)}:{port}{path}", scheme=scheme, transport=transport,
            user=guest.credentials.user or "", password_env=guest.credentials.password_env, verify=verify,
            ca_trust_path=ca, message_encryption=enc, operation_timeout=op,
            read_timeout=wc.int_var(v, "ansible_winrm_read_timeout_sec", op + 10, where, 1),
            retries=wc.int_var(v, "guestprep_winrm_retries", 2, where, 0, 20),
            kerberos_delegation=wc.truthy(v.get("ansible_winrm_kerberos_delegation", False)),
            kerberos_hostname_override=wc.optional_text(v, "ansible_winrm_kerberos_hostname_override"),
        )


def _first(value: Any, default: str) -> str:
    if value is None or value == "":
        return default
    if isinstance(value, (list, tuple)):
        return str(value[0]).lower() if value else default
    return str(value).split(",")[0].strip().lower()


def _check_cleartext(scheme: str, transport: str, enc: str, options: ConnectOptions, where: str) -> None:
    if scheme != "http":
        return
    if transport in ("basic", "certificate"):
        raise ConfigError(f"{transport} authentication over HTTP would send credentials in clear text; "
                          "use ansible_winrm_scheme=https or ntlm/kerberos", where=where)
    if enc == "never" and not options.insecure_tls:
        raise ConfigError("ansible_winrm_message_encryption=never over HTTP sends everything in clear text; "
                          "pass --insecure to allow it explicitly", where=where)


class WinRMConnector:
    name = "winrm"

    def __init__(self, guest: Guest, options: ConnectOptions):
        import winrm.protocol

        self.guest = guest
        self.options = options
        self.settings = s = WinRMSettings.from_guest(guest, options)
        self._where = f"{guest.name} ({s.endpoint})"
        self._secret = wc.guest_password(guest, optional=s.transport == "kerberos")
        user = s.user
        if s.transport == "kerberos":
            from guestprep.connectors import kerberos

            wc.require_auth_library("kerberos", "kerberos", "pywinrm", self._where)
            user = kerberos.principal_for(s.user, self._where)
            kerberos.ensure_initiator_credentials(user, self._secret, self._where)
        elif s.transport == "credssp":
            wc.require_auth_library("requests_credssp", "credssp", "pywinrm", self._where)
        wc.check_basic_password(s.transport, self._secret or "", self._where)
        validation = "validate" if s.verify else "ignore"
        try:
            self.protocol = winrm.protocol.Protocol(
                endpoint=s.endpoint, transport=s.transport, username=user, password=self._secret,
                server_cert_validation=validation,
                ca_trust_path=s.ca_trust_path if (s.verify and s.ca_trust_path) else "legacy_requests",
                message_encryption=s.message_encryption, operation_timeout_sec=s.operation_timeout,
                read_timeout_sec=s.read_timeout, kerberos_delegation=s.kerberos_delegation,
                kerberos_hostname_override=s.kerberos_hostname_override,
            )
        except Exception as exc:  # pywinrm validates its arguments here
            raise ConfigError(secrets.redact(f"cannot set up WinRM: {exc}"), where=self._where) from None
        self._shell_id: str | None = None
        self._open_shell()

    # ------------------------------------------------------------------ shell
    def _open_shell(self) -> None:
        last: Exception | None = None
        for attempt in range(self.settings.retries + 1):
            try:
                self._shell_id = self.protocol.open_shell(codepage=65001)
                return
            except Exception as exc:
                err = self._map_error(exc, "opening a shell")
                if isinstance(err, ConfigError) or not _transient(exc) or attempt == self.settings.retries:
                    raise err from None
                last = err
                time.sleep(min(2.0, 0.2 * 2 ** attempt))
        raise last or ConnectionFailed("cannot open shell", where=self._where)

    def _map_error(self, exc: Exception, doing: str) -> GuestprepError:
        import requests
        from winrm import exceptions as wex

        s = self.settings
        if isinstance(exc, wex.InvalidCredentialsError):
            return ConnectionFailed(f"authentication failed: the server refused user {s.user!r} ({s.transport}) while {doing}",
                                    where=self._where)
        if isinstance(exc, requests.exceptions.SSLError):
            reason = wc.ssl_reason(exc)
            return _with_detail(ConnectionFailed(f"TLS certificate verification failed: {reason}; give the CA with --ca-bundle or "
                                    "ansible_winrm_ca_trust_path (or --insecure)", where=self._where), exc)
        if isinstance(exc, (requests.exceptions.ReadTimeout,)):
            return CommandTimeout(f"no answer within {s.read_timeout}s while {doing}", where=self._where)
        if isinstance(exc, requests.exceptions.ConnectionError):
            from urllib.parse import urlsplit

            u = urlsplit(s.endpoint)
            return _with_detail(ConnectionFailed(f"connection failed while {doing}: "
                                                 f"{wc.short_error(exc, u.hostname or '', u.port, s.read_timeout)}",
                                                 where=self._where), exc)
        if isinstance(exc, wex.WinRMTransportError):
            return ConnectionFailed(secrets.redact(f"HTTP {exc.code} while {doing}: {_fault_text(exc.response_text)}"),
                                    where=self._where)
        gss = kerberos_reason(exc)
        if gss is not None:
            return ConnectionFailed(f"Kerberos authentication failed while {doing}: {gss}", where=self._where)
        if isinstance(exc, wex.WinRMError):
            return ConnectionFailed(secrets.redact(f"WinRM error while {doing}: {exc}"), where=self._where)
        return ConnectionFailed(secrets.redact(f"{type(exc).__name__} while {doing}: {exc}"), where=self._where)

    # ------------------------------------------------------------------ run
    def run(self, command: Sequence[str] | Script, *, stdin: bytes | None = None, timeout: float = 300.0,
            sudo: bool = False) -> CommandResult:
        if isinstance(command, Script):
            if command.interpreter not in ("powershell", "pwsh"):
                raise ConfigError(f"WinRM runs PowerShell scripts, not {command.interpreter!r}", where=self._where)
            text, args = command.text, list(command.args)
        else:
            if not command:
                raise ConfigError("empty command", where=self._where)
            # argv travels as data to a fixed script: no command line is built from input.
            text = wc.windows_script("run-argv.ps1")  # lib.ps1 in front: Invoke-Native
            args = [json.dumps({"argv": [str(a) for a in command]})]
        res = self._run_payload(wc.payload_line(text, args, stdin), timeout)
        reason = wc.unsupported_reason(res.stdout) if res.rc == 0 else None
        if reason is not None and wc.script_marker(text) != "collect":
            # the bootstrap refused an old PowerShell: the collector document is for collect.ps1
            # (a WIN-OS-SUPPORTED finding); anything else is a failure naming the reason
            return CommandResult(rc=wc.UNSUPPORTED_RC, stdout=b"", stderr=reason.encode("utf-8"),
                                 duration=res.duration)
        return res

    def _run_payload(self, payload: bytes, timeout: float) -> CommandResult:
        from winrm import exceptions as wex

        if self._shell_id is None:
            self._open_shell()
        start = time.monotonic()
        argv = wc.bootstrap_argv()
        try:
            cmd_id = self.protocol.run_command(self._shell_id, argv[0], argv[1:])
            self.protocol.send_command_input(self._shell_id, cmd_id, payload, end=True)
        except Exception as exc:
            raise self._map_error(exc, "starting a command") from None
        out, err = bytearray(), bytearray()
        while True:
            if time.monotonic() - start > timeout:
                self._terminate(cmd_id)
                raise CommandTimeout(f"command did not finish within {timeout:g}s (terminated)", where=self._where)
            try:
                o, e, rc, done = self.protocol.get_command_output_raw(self._shell_id, cmd_id)
            except wex.WinRMOperationTimeoutError:
                continue  # long poll expired with nothing new: ask again
            except Exception as exc:
                self._shell_id = None  # the session may be gone; reopen on the next call
                raise self._map_error(exc, "reading command output") from None
            out += o
            err += e
            if done:
                break
        self._terminate(cmd_id)
        return CommandResult(rc=rc, stdout=bytes(out), stderr=wc.decode_clixml(bytes(err)).encode("utf-8"),
                             duration=time.monotonic() - start)

    def _terminate(self, cmd_id: str) -> None:
        try:
            self.protocol.cleanup_command(self._shell_id, cmd_id)
        except Exception:
            pass  # best effort: the shell is deleted on close anyway

    # ------------------------------------------------------------------ files
    def put(self, local: str, remote: str, *, mode: int = 0o600) -> None:
        wc.put_file(self, local, remote, where=self._where)

    def get(self, remote: str, local: str) -> None:
        wc.get_file(self, remote, local, where=self._where)

    def close(self) -> None:
        if self._shell_id is not None:
            try:
                self.protocol.close_shell(self._shell_id)
            except Exception:
                pass
            self._shell_id = None

    def __enter__(self) -> "WinRMConnector":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _transient(exc: Exception) -> bool:
    import requests
    from winrm import exceptions as wex

    if isinstance(exc, (wex.InvalidCredentialsError, requests.exceptions.SSLError)):
        return False
    if isinstance(exc, wex.WinRMTransportError):
        return exc.code in (502, 503, 504)
    return isinstance(exc, (requests.exceptions.ConnectionError,))


def _fault_text(xml: str | bytes | None) -> str:
    import re

    text = xml.decode("utf-8", "replace") if isinstance(xml, bytes) else (xml or "")
    m = re.search(r"<[^>]*Message[^>]*>(.*?)</", text, re.S) or re.search(r"<[^>]*Text[^>]*>(.*?)</", text, re.S)
    return m.group(1).strip() if m else (text[:200] or "no detail")


def _with_detail(err: GuestprepError, exc: BaseException) -> GuestprepError:
    """Keep the library's whole text (the urllib3 chain) as the failure's evidence."""
    err.detail = secrets.redact(f"{type(exc).__name__}: {exc}")  # type: ignore[attr-defined]
    return err
