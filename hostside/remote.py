"""HTTPS datastore URLs read through qemu's curl driver (no staging copy).

The session cookie is a secret: qemu gets it as a `secret` object read from an
inherited pipe (qemu.secret_objects), so it never appears in any process's argv
(visible to every user through /proc/*/cmdline), in a file, in logs or in
manifests. TLS verification stays on unless --insecure is given.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.parse
from dataclasses import dataclass

from hostside.errors import InputError
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
