"""Open a vSphere session (vCenter or ESXi) with TLS verified by default.

Trust comes from, in order: a pinned SHA-256 certificate thumbprint, a CA bundle, or the
system trust store. ``insecure=True`` (the explicit ``--insecure`` flag) is the only way
to skip verification. Every failure becomes a :class:`ConnectionFailed` or
:class:`ConfigError` naming the server, never a pyVmomi traceback.
"""

from __future__ import annotations

import http.client
import xml.parsers.expat
import os
import re
import socket
import ssl
from dataclasses import dataclass
from typing import Any

from pyVim import connect as pyvim_connect
from pyVmomi import vim, vmodl
from pyVmomi.Security import ThumbprintMismatchException

from guestprep.errors import ConfigError, ConnectionFailed

DEFAULT_TIMEOUT = 60
_THUMB_RE = re.compile(r"[0-9a-f]{64}")


def parse_server(server: str) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` -> (host, port); port defaults to 443."""
    s = server.strip()
    if not s or "/" in s or " " in s:
        raise ConfigError(f"not a host or host:port: {server!r}", where="--server")
    m = re.fullmatch(r"\[([0-9a-fA-F:]+)\](?::(\d+))?", s)
    if m:
        return m.group(1), int(m.group(2) or 443)
    if s.count(":") == 1:
        host, port = s.split(":")
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"bad port in {server!r}", where="--server")
        return host, int(port)
    return s, 443


def normalize_thumbprint(value: str) -> str:
    t = value.strip().lower().replace(":", "")
    if t.startswith("sha256:"):
        t = t[len("sha256:"):]
    if not _THUMB_RE.fullmatch(t):
        raise ConfigError("must be a SHA-256 fingerprint: 64 hex digits, colons allowed", where="--thumbprint")
    return t


def ssl_context(*, ca_bundle: str | None, thumbprint: str | None, insecure: bool) -> ssl.SSLContext:
    if insecure and (ca_bundle or thumbprint):
        raise ConfigError("--insecure cannot be combined with --ca-bundle or --thumbprint", where="--insecure")
    if insecure:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca_bundle:
        if not os.path.isfile(ca_bundle):
            raise ConfigError(f"CA bundle not found: {ca_bundle}", where="--ca-bundle")
        try:
            return ssl.create_default_context(cafile=ca_bundle)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"not a PEM CA bundle ({exc})", where=ca_bundle) from None
    return ssl.create_default_context()


@dataclass
class Session:
    """A logged-in ServiceInstance plus what the disk locator needs (host, port, cookie)."""

    si: Any
    host: str
    port: int

    @property
    def content(self) -> Any:
        return self.si.RetrieveContent()

    def cookie(self) -> str:
        """The ``vmware_soap_session`` cookie: HTTP clients reuse the SOAP session with it."""
        return self.si._stub.cookie or ""

    def close(self) -> None:
        try:
            pyvim_connect.Disconnect(self.si)
        except Exception:  # logging out of a dead session must not hide the real error
            pass


def connect(server: str, user: str, password: str, *, ca_bundle: str | None = None,
            thumbprint: str | None = None, insecure: bool = False,
            timeout: float = DEFAULT_TIMEOUT) -> Session:
    host, port = parse_server(server)
    pinned = normalize_thumbprint(thumbprint) if thumbprint else None
    ctx = ssl_context(ca_bundle=ca_bundle, thumbprint=pinned, insecure=insecure)
    if not user:
        raise ConfigError("a user is required", where="--user")
    if not password:
        raise ConfigError("empty password", where="password")
    where = f"vsphere {host}:{port}"
    try:
        si = pyvim_connect.Connect(host=host, port=port, user=user, pwd=password, sslContext=ctx,
                                   thumbprint=pinned, httpConnectionTimeout=timeout,
                                   version="vim.version.version13")
    except vim.fault.InvalidLogin:
        raise ConnectionFailed(f"login refused for user {user!r} (wrong user or password)", where=where) from None
    except vim.fault.HostConnectFault as exc:
        # pyVim wraps transport errors in HostConnectFault; the cause is in __context__
        raise _transport_error(exc.__context__ or exc, pinned, timeout, where) from None
    except vmodl.MethodFault as exc:
        raise ConnectionFailed(f"login failed: {exc.msg or type(exc).__name__}", where=where) from None
    except (ThumbprintMismatchException, OSError, http.client.HTTPException) as exc:
        raise _transport_error(exc, pinned, timeout, where) from None
    return Session(si=si, host=host, port=port)


def _transport_error(exc: BaseException, pinned: str | None, timeout: float, where: str) -> ConnectionFailed:
    if isinstance(exc, ThumbprintMismatchException):
        return ConnectionFailed(f"certificate thumbprint mismatch: pinned {pinned}, server presents {exc.actual}",
                                where=where)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionFailed(
            f"TLS certificate not trusted ({exc.verify_message}); pass --ca-bundle FILE or "
            "--thumbprint SHA256 (or --insecure, not recommended)", where=where)
    if isinstance(exc, ssl.SSLError):
        return ConnectionFailed(f"TLS handshake failed: {exc}", where=where)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectionFailed(f"no answer within {timeout:g}s", where=where)
    if isinstance(exc, ConnectionRefusedError):
        return ConnectionFailed("connection refused (is this the vCenter/ESXi address and port?)", where=where)
    return ConnectionFailed(f"cannot connect: {exc}", where=where)


def translate(exc: BaseException, where: str) -> ConnectionFailed:
    """A transport error in the middle of a run (vCenter went away) as an operator message."""
    if isinstance(exc, vim.fault.NotAuthenticated):
        return ConnectionFailed("session expired or was logged out", where=where)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return ConnectionFailed("vCenter stopped answering (timeout)", where=where)
    return ConnectionFailed(f"vCenter connection lost: {type(exc).__name__}: {exc}", where=where)


# a truncated answer can surface as a parse error rather than a socket error
TRANSPORT_ERRORS = (OSError, http.client.HTTPException, ssl.SSLError, xml.parsers.expat.ExpatError,
                    vim.fault.NotAuthenticated)
