"""SSH transport (paramiko).

Secure by default: the host key must already be in known_hosts; trust-on-first-use
only with ``--accept-new-host-keys`` (the new key is then saved); a *changed* key is
always refused. Passwords come from environment variables named in the inventory and
travel only inside the SSH session (sudo reads its password on stdin, never argv).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Sequence

import paramiko

from guestprep import secrets
from guestprep.connectors import ConnectOptions, sudo as sudo_mod
from guestprep.connectors.base import Script
from guestprep.connectors.local import script_argv
from guestprep.connectors.quoting import join_argv
from guestprep.errors import CommandTimeout, ConnectionFailed, GuestprepError, HostKeyError
from guestprep.models import CommandResult, Guest

# paramiko logs transport-thread failures with tracebacks; ours are reported as exceptions with context.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)

MAX_OUTPUT = 64 * 1024 * 1024  # per stream; a guest flooding us is stopped, not buffered forever
EOF_GRACE = 15.0  # seconds without new output, after the exit status, before giving up on EOF
_known_hosts_lock = threading.Lock()


def default_known_hosts() -> str:
    return os.path.expanduser("~/.ssh/known_hosts")


class KnownHosts:
    """What a known_hosts file says, read without losing anything paramiko cannot model.

    paramiko's loader raises on ``@cert-authority``/``@revoked`` lines (every guest became
    unreachable) and its ``save`` rewrites the file without comments, markers or key types it
    does not know (``sk-*``). Here: plain entries go to paramiko; ``@revoked`` keys are refused
    wherever they appear; a host covered by ``@cert-authority`` is reported precisely (paramiko
    cannot verify host certificates); the file itself is only ever appended to.
    """

    def __init__(self, path: str):
        self.path = path
        self.entries: list[paramiko.hostkeys.HostKeyEntry] = []
        self.revoked: dict[bytes, int] = {}                # key blob -> line number
        self.cert_authorities: list[tuple[list[str], int]] = []  # host patterns, line number
        if os.path.exists(path):
            self._load()

    def _load(self) -> None:
        import base64

        try:
            with open(self.path, encoding="utf-8", errors="replace") as fh:
                lines = fh.read().splitlines()
        except OSError as exc:
            raise ConnectionFailed(f"cannot read known_hosts {self.path}: {exc.strerror or exc}") from None
        for n, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            fields = line.split()
            marker = fields.pop(0) if fields[0].startswith("@") else None
            if len(fields) < 3:
                continue  # OpenSSH ignores malformed lines too
            if marker == "@revoked":
                try:
                    self.revoked[base64.b64decode(fields[2], validate=True)] = n
                except ValueError:
                    pass
                continue
            if marker == "@cert-authority":
                self.cert_authorities.append((fields[0].split(","), n))
                continue
            if marker is not None:
                continue  # an unknown marker: OpenSSH ignores the line, so do we
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(" ".join(fields[:3]), n)
            except (paramiko.hostkeys.InvalidHostKey, paramiko.SSHException, ValueError):
                entry = None
            if entry is not None:  # None: a key type paramiko does not know (sk-*, certificates)
                self.entries.append(entry)

    def install(self, client: paramiko.SSHClient) -> None:
        hk = client.get_host_keys()
        hk._entries.extend(self.entries)  # noqa: SLF001 - paramiko has no public add for hashed names

    def revoked_line(self, key: paramiko.PKey) -> int | None:
        return self.revoked.get(key.asbytes())

    def ca_line(self, hostname: str) -> int | None:
        """The line of a @cert-authority entry whose host patterns match ``hostname``."""
        for patterns, n in self.cert_authorities:
            if _host_matches(hostname, patterns):
                return n
        return None


def _ssh_pattern(pat: str, name: str) -> bool:
    """OpenSSH host patterns know only * and ? (fnmatch would read "[host]:*" as a character class)."""
    import re

    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pat.lower())
    return re.fullmatch(rx, name.lower()) is not None


def _host_matches(hostname: str, patterns: list[str]) -> bool:
    names = {hostname}
    if hostname.startswith("[") and hostname.endswith("]:22"):
        names.add(hostname[1:-4])
    hit = False
    for pat in patterns:
        negated = pat.startswith("!")
        pat = pat[1:] if negated else pat
        if pat.startswith("|1|"):
            matched = any(paramiko.HostKeys.hash_host(h, pat) == pat for h in names)
        else:
            matched = any(_ssh_pattern(pat, h) for h in names)
        if matched and negated:
            return False
        hit = hit or matched
    return hit


def _refuse_marked(known: KnownHosts, hostname: str, key: paramiko.PKey) -> None:
    n = known.revoked_line(key)
    if n is not None:
        raise HostKeyError(f"host key {key.get_name()} SHA256:{_fingerprint(key)} of {hostname} is marked @revoked "
                           f"in {known.path}:{n}; refusing")
    n = known.ca_line(hostname)
    if n is not None:
        raise HostKeyError(
            f"{known.path}:{n} trusts a @cert-authority for {hostname}, but guestprep (paramiko) cannot verify SSH "
            f"host certificates; add the host's own key ({key.get_name()} SHA256:{_fingerprint(key)}, after "
            "verifying it) to known_hosts")


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts):
        self.known = known
        self.path = known.path

    def missing_host_key(self, client, hostname, key):
        _refuse_marked(self.known, hostname, key)
        raise HostKeyError(
            f"host key unknown: the key of {hostname} is not in {self.path} ({key.get_name()} "
            f"SHA256:{_fingerprint(key)}); verify it and add it, or pass --accept-new-host-keys to trust it on first use"
        )


class _AcceptAndSave(paramiko.MissingHostKeyPolicy):
    """Trust on first use: append the key to known_hosts (under a lock: fleet runs are parallel).

    Append only: the file's comments, markers and entries paramiko cannot parse stay as they are."""

    def __init__(self, known: KnownHosts):
        self.known = known
        self.path = known.path

    def missing_host_key(self, client, hostname, key):
        import fcntl

        _refuse_marked(self.known, hostname, key)
        line = paramiko.hostkeys.HostKeyEntry([hostname], key).to_line()
        with _known_hosts_lock:
            p = Path(self.path)
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(p, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(fd, "r+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # other guestprep processes append to the same file
                # another thread or process may have saved this host meanwhile: never a second, different key
                current = KnownHosts(self.path)
                saved = [e.key for e in current.entries if _host_matches(hostname, e.hostnames)]
                if saved and not any(k.asbytes() == key.asbytes() for k in saved):
                    raise HostKeyError(f"host key for {hostname} was just saved to {self.path} by another run with a "
                                       f"different key ({key.get_name()} SHA256:{_fingerprint(key)}); refusing")
                if not saved:
                    size = fh.seek(0, os.SEEK_END)
                    if size:
                        fh.seek(size - 1)
                        if fh.read(1) != b"\n":
                            line = "\n" + line
                    fh.write(line.encode())
                    fh.flush()
                    os.fsync(fh.fileno())
        client.get_host_keys().add(hostname, key.get_name(), key)


def _failed(message: str, exc: BaseException, where: str) -> ConnectionFailed:
    """ConnectionFailed with the sentence to read, the library's full text kept as ``detail`` (evidence)."""
    err = ConnectionFailed(message, where=where)
    err.detail = f"{type(exc).__name__}: {exc}"  # type: ignore[attr-defined]
    return err


def _fingerprint(key: paramiko.PKey) -> str:
    import base64
    import hashlib

    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


class SSHConnector:
    def __init__(self, guest: Guest, options: ConnectOptions | None = None):
        self.guest = guest
        self.name = guest.name
        self.options = options or ConnectOptions()
        self.port = guest.port or 22
        self._nopasswd: bool | None = None
        self._client = self._connect()

    @property
    def _where(self) -> str:
        return f"guest {self.guest.name} ({self.guest.address}:{self.port})"

    @property
    def _where_defined(self) -> str:
        """For input errors: also the inventory file:line the guest came from."""
        src = self.guest.source
        return f"{src} ({self._where})" if src and src != "arguments" else self._where

    def _connect(self) -> paramiko.SSHClient:
        creds = self.guest.credentials
        known_hosts = self.options.known_hosts or default_known_hosts()
        client = paramiko.SSHClient()
        try:
            known = KnownHosts(known_hosts)
        except ConnectionFailed as exc:
            raise ConnectionFailed(exc.message, where=self._where) from None
        known.install(client)
        policy = _AcceptAndSave(known) if self.options.accept_new_host_keys else _RejectUnknown(known)
        client.set_missing_host_key_policy(policy)
        password = secrets.from_env(creds.password_env, "SSH password", self._where_defined)
        passphrase = secrets.from_env(creds.key_passphrase_env, "key passphrase", self._where_defined)
        key_file = os.path.expanduser(creds.key_file) if creds.key_file else None
        if key_file and not os.path.isfile(key_file):
            raise ConnectionFailed(f"key file {key_file} does not exist", where=self._where)
        t = self.options.connect_timeout
        started = time.monotonic()
        try:
            client.connect(
                self.guest.address, port=self.port, username=creds.user, password=password,
                key_filename=key_file, passphrase=passphrase, allow_agent=creds.use_agent,
                look_for_keys=not key_file and not password, timeout=t, banner_timeout=t, auth_timeout=t,
            )
        except HostKeyError as exc:
            client.close()
            raise HostKeyError(exc.message, where=self._where) from None
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"host key CHANGED: known_hosts has {exc.expected_key.get_name()} SHA256:{_fingerprint(exc.expected_key)}, "
                f"the server offered SHA256:{_fingerprint(exc.key)}; refusing (possible man-in-the-middle). "
                "If the guest was legitimately re-keyed, remove the old entry from known_hosts.",
                where=self._where,
            ) from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise _failed(f"authentication failed: the server refused user {creds.user or '(default)'!r} "
                          f"({self._offered(key_file, password)})", exc, self._where) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport = client.get_transport()
            handshake_done = transport is not None and transport.is_active() and transport.remote_version
            elapsed = time.monotonic() - started
            client.close()
            raise _failed(self._reason(exc, key_file, password, bool(handshake_done), elapsed), exc,
                          self._where) from None
        transport = client.get_transport()
        server_key = transport.get_remote_server_key() if transport is not None else None
        if server_key is not None and known.revoked_line(server_key) is not None:
            # listed as a plain entry too: paramiko accepted it, OpenSSH would not
            client.close()
            raise HostKeyError(f"host key {server_key.get_name()} SHA256:{_fingerprint(server_key)} is marked @revoked "
                               f"in {known_hosts}:{known.revoked_line(server_key)}; refusing", where=self._where)
        if transport is not None and self.options.keepalive:
            transport.set_keepalive(self.options.keepalive)
        return client

    def _offered(self, key_file: str | None, password: str | None) -> str:
        offered = [f"key {key_file}"] if key_file else []
        if password:
            offered.append("a password")
        if not key_file and not password:
            offered.append("the default keys in ~/.ssh")
        if self.guest.credentials.use_agent and os.environ.get("SSH_AUTH_SOCK"):
            offered.append("the SSH agent's keys")
        return "offered " + ", ".join(offered)

    def _reason(self, exc: BaseException, key_file: str | None, password: str | None, handshake_done: bool,
                elapsed: float) -> str:
        """A failed connect in words; the exception itself goes to the evidence. paramiko says "No existing
        session" both when nothing answered and when there was nothing to authenticate with."""
        from guestprep.connectors.base import network_reason

        t = self.options.connect_timeout
        text = str(exc)
        silent = "Error reading SSH protocol banner" in text or (
            "No existing session" in text and not handshake_done and elapsed >= t * 0.5)
        if silent:
            return (f"timed out after {t:g} s waiting for the SSH greeting: something accepts connections on "
                    f"{self.guest.address}:{self.port} but does not answer as an SSH server")
        if "No existing session" in text and not handshake_done:
            return f"{self.guest.address}:{self.port} closed the connection during the SSH handshake"
        if "No existing session" in text or "No authentication methods available" in text:
            return (f"authentication failed: no usable key, agent or password to offer for user "
                    f"{self.guest.credentials.user or '(default)'!r} ({self._offered(key_file, password)})")
        reason = network_reason(exc, self.guest.address, self.port, t)
        if reason:
            return reason
        if isinstance(exc, EOFError) or "Connection reset" in text:
            return f"{self.guest.address}:{self.port} closed the connection during the SSH handshake"
        return f"cannot connect: {text or type(exc).__name__}"

    # ------------------------------------------------------------------ commands

    def _privileged(self, argv: list[str], stdin: bytes | None, timeout: float) -> tuple[list[str], bytes | None]:
        if self.guest.credentials.user in (None, "root") and self._is_root(timeout):
            return argv, stdin
        if self._nopasswd is None:
            self._nopasswd = self._exec(join_argv(sudo_mod.PROBE), None, timeout).rc == 0
        password = None
        if not self._nopasswd:
            creds = self.guest.credentials
            password = secrets.from_env(creds.sudo_password_env or creds.password_env, "sudo password",
                                        self._where_defined)
            if password is None:
                raise GuestprepError("sudo needs a password: set sudo_password_env (or password_env) in the inventory",
                                     where=self._where)
        return sudo_mod.wrap(argv, self._nopasswd), sudo_mod.stdin_with_password(password, stdin, self._nopasswd)

    _root: bool | None = None

    def _is_root(self, timeout: float) -> bool:
        if self._root is None:
            res = self._exec(join_argv(["id", "-u"]), None, timeout)
            self._root = res.rc == 0 and res.stdout.strip() == b"0"
        return self._root

    def run(self, command: Sequence[str] | Script, *, stdin: bytes | None = None, timeout: float = 300.0,
            sudo: bool = False) -> CommandResult:
        argv = script_argv(command) if isinstance(command, Script) else list(command)
        if sudo:
            argv, stdin = self._privileged(argv, stdin, timeout)
        return self._exec(join_argv(argv), stdin, timeout)

    def _exec(self, command_line: str, stdin: bytes | None, timeout: float) -> CommandResult:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed("SSH session is closed", where=self._where)
        start = time.monotonic()
        deadline = start + timeout
        try:
            chan = transport.open_session(timeout=self.options.connect_timeout)
            chan.settimeout(1.0)
            chan.exec_command(command_line)
            if stdin:
                chan.sendall(stdin)
            chan.shutdown_write()
            out, err = bytearray(), bytearray()
            exited_at = last_data = 0.0
            while True:
                progressed = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    progressed = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    progressed = True
                if progressed:
                    last_data = time.monotonic()
                if len(out) > MAX_OUTPUT or len(err) > MAX_OUTPUT:
                    chan.close()
                    raise GuestprepError(f"command output exceeded {MAX_OUTPUT // (1024 * 1024)} MiB; stopped it",
                                         where=self._where)
                if chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    # sshd may report the exit status before the last output leaves its pipe: wait for
                    # the channel's EOF too, but not forever (a background child can hold stdout open);
                    # a starved sshd can take seconds to drain, so the grace counts from the last data
                    exited_at = exited_at or time.monotonic()
                    quiet_since = max(exited_at, last_data)
                    if chan.eof_received or time.monotonic() - quiet_since > EOF_GRACE:
                        break
                if time.monotonic() > deadline:
                    chan.close()
                    raise CommandTimeout(f"command did not finish within {timeout:g} s", where=self._where)
                if not progressed:
                    if transport is not None and not transport.is_active():
                        raise ConnectionFailed("connection lost while the command ran", where=self._where)
                    time.sleep(0.005)
            rc = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"SSH channel failed: {exc or type(exc).__name__}", where=self._where) from None
        return CommandResult(rc, bytes(out), bytes(err), time.monotonic() - start)

    # ------------------------------------------------------------------ files

    def put(self, local: str, remote: str, *, mode: int = 0o600) -> None:
        try:
            with self._client.open_sftp() as sftp:
                sftp.put(local, remote)
                sftp.chmod(remote, mode)
        except (OSError, paramiko.SSHException) as exc:
            raise GuestprepError(f"cannot upload {local} to {remote}: {exc}", where=self._where) from None

    def get(self, remote: str, local: str) -> None:
        try:
            with self._client.open_sftp() as sftp:
                sftp.get(remote, local)
        except (OSError, paramiko.SSHException) as exc:
            raise GuestprepError(f"cannot download {remote}: {exc}", where=self._where) from None

    def close(self) -> None:
        self._client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
