"""Proxmox VE API client: proxmoxer over HTTPS, every request schema-checked first.

Auth: API token (preferred) or user/password ticket; secrets come from environment
variables named on the command line (or stdin), never from argv. TLS verification is on:
the system trust store, a CA file, or a pinned SHA-256 certificate fingerprint (token
auth); ``insecure`` only by explicit flag. In dry-run mode reads go to the server and
writes are recorded, printed and not sent.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import requests
from requests.adapters import HTTPAdapter

from guestprep.errors import ConfigError, ConnectionFailed, GuestprepError
from guestprep.proxmox.schema import Schema, load_shipped

WRITE_METHODS = ("POST", "PUT", "DELETE")


class PveApiError(GuestprepError):
    """Proxmox answered with an error (4xx/5xx) to a valid request."""

    exit_code = 3


class TaskFailed(GuestprepError):
    """A Proxmox task (UPID) ended with an error or timed out."""

    exit_code = 3


@dataclass
class PveConnection:
    host: str
    port: int = 8006
    user: str = "root@pam"
    token_name: str | None = None
    token_secret: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    fingerprint: str | None = None
    insecure: bool = False
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not self.token_name and not self.password:
            raise ConfigError("no credentials: give an API token (--token-name + --token-secret-env) "
                              "or a password (--password-env / --password-stdin)")
        if self.token_name and not self.token_secret:
            raise ConfigError("API token name given but its secret is empty (check --token-secret-env)")
        if sum(bool(x) for x in (self.ca_file, self.fingerprint, self.insecure)) > 1:
            raise ConfigError("choose one of --ca, --fingerprint, --insecure")
        if self.fingerprint:
            fp = self.fingerprint.replace(":", "").lower()
            if not re.fullmatch(r"[0-9a-f]{64}", fp):
                raise ConfigError("--fingerprint must be a SHA-256 fingerprint (64 hex digits, colons allowed)")
            if not self.token_name:
                raise ConfigError("--fingerprint pinning needs API token auth; with a password use --ca")
        if self.ca_file and not os.path.isfile(self.ca_file):
            raise ConfigError("CA file not found", where=self.ca_file)


def secret_from_env(var: str | None, what: str) -> str | None:
    """Read a secret from the env var named on the command line; register it for redaction."""
    from guestprep import secrets
    return secrets.from_env(var, what, where=f"--{what.replace(' ', '-')}-env") if var else None


class _PinnedAdapter(HTTPAdapter):
    """Accept exactly one server certificate, by its SHA-256 fingerprint."""

    def __init__(self, fingerprint: str):
        self._fp = fingerprint.replace(":", "").lower()
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fp
        super().init_poolmanager(*args, **kwargs)


def fill_path(template: str, values: Mapping[str, Any]) -> str:
    def sub(m: re.Match) -> str:
        v = str(values[m.group(1)])
        if "/" in v:
            raise ConfigError(f"{m.group(1)} {v!r} contains '/'")
        return v
    return re.sub(r"\{(\w+)\}", sub, template)


def _wire(params: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (int(v) if isinstance(v, bool) else v) for k, v in params.items() if v is not None}


@dataclass
class Call:
    method: str
    path: str
    params: dict[str, Any]

    def render(self) -> str:
        body = " ".join(f"{k}={v!r}" if isinstance(v, str) and ("\n" in v or " " in v) else f"{k}={v}"
                        for k, v in self.params.items())
        return f"{self.method} {self.path}" + (f"  {body}" if body else "")


class PveClient:
    def __init__(self, conn: PveConnection, *, schema: Schema | None = None, dry_run: bool = False,
                 poll_interval: float = 0.5, sleep: Callable[[float], None] = time.sleep):
        self.conn = conn
        self.schema = schema or load_shipped()
        self.dry_run = dry_run
        self.poll_interval = poll_interval
        self.sleep = sleep
        self.calls: list[Call] = []        # every request sent (and, in dry-run, every write not sent)
        self._api = None

    # ------------------------------------------------------------------ session
    def _connect(self):
        from proxmoxer import ProxmoxAPI  # imported late: the CLI starts faster without it
        c = self.conn
        verify: bool | str = c.ca_file or (not c.insecure and not c.fingerprint)
        if verify is False:
            warnings.filterwarnings("ignore", message="Unverified HTTPS request")
        kw: dict[str, Any] = {"port": c.port, "user": c.user, "verify_ssl": verify, "timeout": c.timeout}
        if c.token_name:
            kw.update(token_name=c.token_name, token_value=c.token_secret)
        else:
            kw.update(password=c.password)
        try:
            api = ProxmoxAPI(c.host, backend="https", **kw)
        except Exception as e:  # proxmoxer raises plain exceptions for login failures
            raise self._transport_error(e, "login") from None
        if c.fingerprint:
            api._store["session"].mount("https://", _PinnedAdapter(c.fingerprint))
        self._api = api

    def _transport_error(self, e: Exception, what: str) -> GuestprepError:
        where = f"https://{self.conn.host}:{self.conn.port}"
        if isinstance(e, requests.exceptions.SSLError):
            return ConnectionFailed(f"TLS verification failed during {what} (give the cluster CA with --ca, or "
                                    f"--fingerprint; --insecure only if you must): {e.__class__.__name__}", where=where)
        if isinstance(e, requests.exceptions.RequestException):
            return ConnectionFailed(f"cannot reach the Proxmox API during {what}: {e.__class__.__name__}", where=where)
        text = str(e)
        if "401" in text or "authentication" in text.lower():
            return ConnectionFailed(f"authentication failed for {self.conn.user} during {what}", where=where)
        return ConnectionFailed(f"{what} failed: {text[:300]}", where=where)

    # ------------------------------------------------------------------ calls
    def call(self, method: str, template: str, path_params: Mapping[str, Any] | None = None,
             params: Mapping[str, Any] | None = None) -> Any:
        path_params = dict(path_params or {})
        wire = _wire(params or {})
        self.schema.validate(method, template, wire, path_params)   # before anything leaves this host
        path = fill_path(template, path_params)
        self.calls.append(Call(method, path, wire))
        if self.dry_run and method in WRITE_METHODS:
            return f"UPID:dry-run:{len(self.calls):08X}:00000000:00000000:dryrun:{path_params.get('vmid', '')}:{self.conn.user}:"
        return self._send(method, path, wire, retry_auth=True)

    def _send(self, method: str, path: str, wire: dict[str, Any], *, retry_auth: bool) -> Any:
        from proxmoxer.core import ResourceException
        if self._api is None:
            self._connect()
        resource = self._api(path.lstrip("/"))
        fn = {"GET": resource.get, "POST": resource.post, "PUT": resource.put, "DELETE": resource.delete}[method]
        try:
            return fn(**wire)
        except ResourceException as e:
            if e.status_code == 401 and retry_auth and not self.conn.token_name:
                self._api = None   # ticket expired or revoked: log in again once
                return self._send(method, path, wire, retry_auth=False)
            if e.status_code == 401:
                raise ConnectionFailed(f"authentication failed for {self.conn.user} ({method} {path})") from None
            detail = e.errors if isinstance(e.errors, dict) and e.errors else e.content
            if e.status_code == 400 and isinstance(e.errors, dict):
                detail = "; ".join(f"{k}: {v}" for k, v in e.errors.items())
            raise PveApiError(f"Proxmox answered {e.status_code}: {detail}", where=f"{method} {path}") from None
        except requests.exceptions.RequestException as e:
            raise self._transport_error(e, f"{method} {path}") from None

    def get(self, template: str, path_params: Mapping[str, Any] | None = None, **params: Any) -> Any:
        return self.call("GET", template, path_params, params)

    # ------------------------------------------------------------------ tasks
    def wait_task(self, node: str, upid: str, what: str, timeout: float = 3600.0) -> None:
        """Poll a task by UPID until it stops; raise TaskFailed with the log tail on error."""
        if self.dry_run and upid.startswith("UPID:dry-run:"):
            return
        deadline = time.monotonic() + timeout
        while True:
            st = self.get("/nodes/{node}/tasks/{upid}/status", {"node": node, "upid": upid})
            if st.get("status") == "stopped":
                exit_status = st.get("exitstatus", "")
                if exit_status == "OK" or str(exit_status).startswith("WARNINGS"):
                    return
                log = self.get("/nodes/{node}/tasks/{upid}/log", {"node": node, "upid": upid}, limit=500)
                tail = "\n    ".join(line.get("t", "") for line in (log or [])[-10:])
                raise TaskFailed(f"{what} failed: {exit_status}\n  task log (tail):\n    {tail}", where=upid)
            if time.monotonic() > deadline:
                raise TaskFailed(f"{what} still running after {timeout:.0f}s", where=upid)
            self.sleep(self.poll_interval)
