"""HTTPS datastore URLs read through qemu's curl driver (no staging copy).

The session cookie is a secret: qemu gets it as a `secret` object read from an
inherited pipe (qemu.secret_objects), so it never appears in any process's argv
(visible to every user through /proc/*/cmdline), in a file, in logs or in
manifests. TLS verification stays on unless --insecure is given.
"""

from __future__ import annotations

import http.client
import os
import re
import shutil
import ssl
import tempfile
import urllib.parse
from dataclasses import dataclass
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
        with os.fdopen(fd, "w") as f:
            f.write(value)
        return path

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


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
        ctx = ssl.create_default_context()
        if insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        self.conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                                context=ctx)
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
