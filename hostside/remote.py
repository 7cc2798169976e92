"""HTTPS datastore URLs read through qemu's curl driver (no staging copy).

The session cookie is a secret: qemu gets it as a `secret` object read from an
inherited pipe (qemu.secret_objects), so it never appears in any process's argv
(visible to every user through /proc/*/cmdline), in a file, in logs or in
manifests. TLS verification stays on unless --insecure is given.

Trusting one vCenter rather than the node's system store: qemu's curl driver has no CA
or pinning option (QEMU block/curl.c: url, readahead, sslverify, timeout, cookie ...) and
libcurl reads no CA variable from the environment (only the curl tool does). With
$GUESTPREP_HOST_CA_FILE (a PEM bundle) or $GUESTPREP_HOST_TLS_SHA256 (the certificate's
SHA-256) set, this process verifies the server itself and qemu reads through a relay
thread on 127.0.0.1 (plain HTTP on loopback, connections from other users refused, the
cookie added by the relay: qemu never holds it).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import shutil
import socket
import ssl
import struct
import tempfile
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from hostside.record import dataclass
from typing import Callable

from hostside.errors import InputError, SourceUnreachable
from hostside.qemu import ImageSpec

FORMAT_BY_SUFFIX = (("-flat.vmdk", "raw"), (".vmdk", "vmdk"), (".qcow2", "qcow2"),
                    (".raw", "raw"), (".img", "raw"))


def is_url(src: str) -> bool:
    return src.lower().startswith(("https://", "http://"))


def guess_format(url: str) -> str | None:
    path = urllib.parse.urlsplit(url).path.lower()
    for suffix, fmt in FORMAT_BY_SUFFIX:
        if path.endswith(suffix):
            return fmt
    return None


def redact_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.hostname or "", parts.path,
                                    parts.query, "")) if parts.port is None else \
        urllib.parse.urlunsplit((parts.scheme, f"{parts.hostname}:{parts.port}", parts.path,
                                 parts.query, ""))


@dataclass
class SecretDir:
    """Private 0700 scratch directory for one run (validated descriptor copies)."""

    path: str

    @classmethod
    def create(cls) -> "SecretDir":
        return cls(tempfile.mkdtemp(prefix="guestprep-secret-"))  # mkdtemp is 0700

    def write(self, name: str, value: str) -> str:
        """A new 0600 file ending in ``name``; unique, so several disks of one run can share the dir."""
        fd, path = tempfile.mkstemp(dir=self.path, suffix=f"-{name}")
        with os.fdopen(fd, "w", encoding="utf-8") as f:   # extent paths reach qemu as the file's bytes
            f.write(value)
        return path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


CA_ENV = "GUESTPREP_HOST_CA_FILE"        # PEM: the only CAs the server's certificate may chain to
PIN_ENV = "GUESTPREP_HOST_TLS_SHA256"     # hex SHA-256 of the server's certificate (DER), colons allowed


def _pin() -> str | None:
    raw = os.environ.get(PIN_ENV, "").replace(":", "").strip().lower()
    if raw and not re.fullmatch(r"[0-9a-f]{64}", raw):
        raise InputError("must be the certificate's SHA-256 as 64 hex digits", PIN_ENV)
    return raw or None


def own_trust() -> bool:
    """True when this process verifies TLS itself (a CA file or a pinned certificate)."""
    return bool(os.environ.get(CA_ENV) or _pin())


def tls_context(insecure: bool) -> ssl.SSLContext:
    """The TLS settings every read of a source uses (our validation and the relay alike)."""
    ca = os.environ.get(CA_ENV)
    if insecure or (_pin() and not ca):   # a pin is checked after the handshake (PinnedConnection)
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if ca:
        if not os.path.isfile(ca):
            raise InputError("CA file not found", f"{CA_ENV}={ca}")
        return ssl.create_default_context(cafile=ca)   # that bundle only, not the system store
    return ssl.create_default_context()


class PinnedConnection(http.client.HTTPSConnection):
    """An HTTPS connection that also checks the server certificate's SHA-256 when one is pinned."""

    def __init__(self, *a, insecure: bool = False, **kw):
        super().__init__(*a, **kw)
        self.pin = None if insecure else _pin()

    def connect(self) -> None:
        super().connect()
        if self.pin:
            der = self.sock.getpeercert(binary_form=True) or b""
            if hashlib.sha256(der).hexdigest() != self.pin:
                self.sock.close()
                exc = ssl.SSLCertVerificationError("certificate not pinned")
                exc.verify_message = (f"certificate SHA-256 {hashlib.sha256(der).hexdigest()} is not "
                                      f"the pinned one ({PIN_ENV})")
                exc.reason = "CERTIFICATE_NOT_PINNED"
                raise exc


def https_spec(url: str, fmt: str | None, *, cookie: str | None, insecure: bool,
               timeout: int = 60) -> ImageSpec:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "https":
        raise InputError("only https:// datastore URLs are accepted (plain http would send "
                         "the session cookie in clear)", redact_url(url))
    if parts.username or parts.password:
        raise InputError("credentials in the URL are refused: pass the session cookie "
                         "through --cookie-env or --cookie-stdin", redact_url(url))
    if not parts.hostname:
        raise InputError("URL has no host", url)
    fmt = fmt or guess_format(url)
    if fmt is None:
        raise InputError("cannot tell the image format from the URL: pass --format",
                         redact_url(url))
    if fmt not in ("raw", "vmdk", "qcow2"):
        raise InputError(f"unsupported format {fmt!r} for a URL", redact_url(url))
    if cookie is not None and any(c in cookie for c in "\r\n\x00"):
        raise InputError("session cookie contains line breaks", "--cookie")
    if not insecure and own_trust():   # qemu reads through our verified relay (no cookie for qemu)
        local = relay().route(url, cookie)
        return ImageSpec({"driver": fmt, "file.driver": "http", "file.url": local,
                          "file.timeout": str(timeout)}, redact_url(url), {}, is_remote=True)
    opts = {"driver": fmt, "file.driver": "https", "file.url": url,
            "file.sslverify": "off" if insecure else "on", "file.timeout": str(timeout)}
    held = {}
    if cookie:
        held["gpcookie0"] = cookie
        opts["file.cookie-secret"] = "gpcookie0"
    return ImageSpec(opts, redact_url(url), held, is_remote=True)


def sibling_url(url: str, name: str) -> str:
    """The URL of file `name` in the same datastore folder (same query: dcPath, dsName)."""
    parts = urllib.parse.urlsplit(url)
    folder = parts.path.rsplit("/", 1)[0]
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc,
                                    f"{folder}/{urllib.parse.quote(name)}", parts.query, ""))


MAX_READ = 32 << 20   # no single validation read is larger (a grain directory <= 16 MiB)
_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class RemoteFile:
    """Byte ranges of an https:// file, read the way qemu's curl driver reads it: the same
    TLS verification (on unless --insecure, the system CA store), the same session cookie.

    Used to validate a remote image before qemu opens it. Offers seek/read so the
    VMDK parsers run unchanged; every read is one Range request (keep-alive).
    """

    def __init__(self, url: str, *, cookie: str | None, insecure: bool, timeout: float = 60,
                 hint: Callable[[str, bool], str] | None = None):
        parts = urllib.parse.urlsplit(url)
        self.label = redact_url(url)
        self.cookie = cookie
        self.insecure = insecure
        self.hint = hint or (lambda message, insecure: "")
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        self.conn = PinnedConnection(parts.hostname, parts.port, timeout=timeout,
                                     context=tls_context(insecure), insecure=insecure)
        self.size: int | None = None
        self.pos = 0
        self.requests = 0

    def _fail(self, message: str) -> SourceUnreachable:
        return SourceUnreachable(message + self.hint(message, self.insecure), self.label)

    def read_at(self, offset: int, length: int) -> bytes:
        if length <= 0 or (self.size is not None and offset >= self.size):
            return b""
        if length > MAX_READ:
            raise InputError(f"refusing to read {length} bytes at once from the source",
                             self.label)
        headers = {"Range": f"bytes={offset}-{offset + length - 1}"}
        if self.cookie:
            headers["Cookie"] = self.cookie
        for attempt in (0, 1):   # one retry: a keep-alive connection the server closed
            try:
                self.conn.request("GET", self.target, headers=headers)
                resp = self.conn.getresponse()
                break
            except ssl.SSLCertVerificationError as exc:
                raise self._fail(f"TLS certificate verification failed: "
                                 f"{exc.verify_message or exc.reason}") from None
            except ssl.SSLError as exc:
                raise self._fail(f"TLS error: {exc.reason or exc}") from None
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.conn.close()
                if attempt:
                    raise self._fail("the server closed the connection") from None
            except (OSError, http.client.HTTPException) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                raise self._fail(f"cannot read the source: {reason}") from None
        self.requests += 1
        try:
            if resp.status == 416:
                resp.read()
                return b""
            if resp.status in (401, 403):
                resp.read()
                raise self._fail(f"HTTP {resp.status} {resp.reason}")
            if resp.status != 206:
                resp.close()
                self.conn.close()
                if resp.status == 200:
                    raise self._fail("the server ignores Range requests (HTTP 200 for a "
                                     "byte range): cannot validate the image without a "
                                     "full download")
                raise self._fail(f"HTTP {resp.status} {resp.reason}")
            m = _RANGE_RE.match(resp.getheader("Content-Range", "").strip())
            if not m or int(m.group(1)) != offset:
                raise self._fail("the server answered a byte range with the wrong "
                                 "Content-Range")
            if m.group(3) != "*":
                self.size = int(m.group(3))
            want = int(m.group(2)) - offset + 1
            if want > length:
                raise self._fail("the server sent more bytes than asked for")
            data = resp.read(want)
            if len(data) != want:
                raise self._fail("the server sent a short response")
            return data
        except (OSError, http.client.HTTPException) as exc:
            self.conn.close()
            raise self._fail(f"cannot read the source: {exc}") from None

    # file-like access for the VMDK parsers
    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos

    def read(self, length: int) -> bytes:
        data = self.read_at(self.pos, length)
        self.pos += len(data)
        return data

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "RemoteFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# --------------------------------------------------------------------------- the relay

RELAY_HEADERS = ("Content-Length", "Content-Range", "Accept-Ranges", "Content-Type", "Last-Modified")


def _hex_addr(ip: str, port: int) -> str:
    """An IPv4 address:port as /proc/net/tcp writes it (the address in host byte order)."""
    return "%08X:%04X" % (struct.unpack("=I", socket.inet_aton(ip))[0], port)


def peer_uid(client: tuple[str, int], server: tuple[str, int]) -> int | None:
    """The uid owning the other end of a loopback TCP connection (proc(5): /proc/net/tcp)."""
    want = (_hex_addr(*client), _hex_addr(*server))
    try:
        with open("/proc/net/tcp", encoding="ascii") as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if (fields[1], fields[2]) == want:
                    return int(fields[7])
    except OSError:
        return None
    return None


class Relay:
    """Serves registered https:// URLs on 127.0.0.1 to this user's processes (qemu-img), reading
    them with our TLS settings and the session cookie. HEAD and GET with Range, keep-alive."""

    def __init__(self):
        self.routes: dict[str, tuple[str, str | None]] = {}
        self.lock = threading.Lock()
        relay_self = self
        local = threading.local()

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):   # nothing about requests (URLs, cookies) goes to stderr
                pass

            def _refuse(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _relay(self, body: bool) -> None:
                if peer_uid(self.client_address, self.server.server_address) != os.getuid():
                    return self._refuse(403)
                route = relay_self.routes.get(self.path)
                if route is None:
                    return self._refuse(404)
                url, cookie = route
                parts = urllib.parse.urlsplit(url)
                conns = local.__dict__.setdefault("conns", {})
                headers = {k: v for k, v in (("Range", self.headers.get("Range")), ("Cookie", cookie)) if v}
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                for attempt in (0, 1):   # one retry: a keep-alive connection the server closed
                    conn = conns.get(parts.netloc)
                    if conn is None:
                        conn = conns[parts.netloc] = PinnedConnection(
                            parts.hostname, parts.port, timeout=60, context=tls_context(False))
                    try:
                        conn.request(self.command, target, headers=headers)
                        resp = conn.getresponse()
                        break
                    except (OSError, http.client.HTTPException):
                        conn.close()
                        conns.pop(parts.netloc, None)
                        if attempt:
                            return self._refuse(502)
                if body and resp.getheader("Content-Length") is None:   # we relay sized bodies only
                    conn.close()
                    conns.pop(parts.netloc, None)
                    return self._refuse(502)
                self.send_response(resp.status)
                for h in RELAY_HEADERS:
                    if resp.getheader(h) is not None:
                        self.send_header(h, resp.getheader(h))
                self.end_headers()
                left = int(resp.getheader("Content-Length") or 0) if body else 0
                while left > 0:
                    chunk = resp.read(min(left, 1 << 20))
                    if not chunk:
                        break
                    self.wfile.write(chunk)
                    left -= len(chunk)
                if left:   # upstream ended early: neither side's connection is reusable
                    self.close_connection = True
                    conn.close()
                    conns.pop(parts.netloc, None)
                else:
                    resp.read()

            def do_HEAD(self):
                self._relay(False)

            def do_GET(self):
                self._relay(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="tls-relay", daemon=True).start()

    def route(self, url: str, cookie: str | None) -> str:
        """A loopback URL for ``url``; the name keeps its last path element (qemu guesses nothing
        from it, a reader of qemu's messages recognises the disk)."""
        name = urllib.parse.quote(urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1])
        with self.lock:
            path = f"/r{len(self.routes)}/{name}"
            self.routes[path] = (url, cookie)
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"


_relay: Relay | None = None
_relay_lock = threading.Lock()


def relay() -> Relay:
    global _relay
    with _relay_lock:
        if _relay is None:
            _relay = Relay()
        return _relay
