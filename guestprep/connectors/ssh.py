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


class _RejectUnknown(paramiko.MissingHostKeyPolicy):
    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        raise HostKeyError(
            f"host key for {hostname} is not in {self.path} ({key.get_name()} "
            f"SHA256:{_fingerprint(key)}); verify it and add it, or pass --accept-new-host-keys to trust it on first use"
        )


class _AcceptAndSave(paramiko.MissingHostKeyPolicy):
    """Trust on first use: record the key in known_hosts (under a lock: fleet runs are parallel)."""

    def __init__(self, path: str):
        self.path = path

    def missing_host_key(self, client, hostname, key):
        with _known_hosts_lock:
            p = Path(self.path)
            p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            hk = paramiko.HostKeys()
            if p.exists():
                hk.load(str(p))
            hk.add(hostname, key.get_name(), key)
            tmp = p.with_name(p.name + f".tmp{os.getpid()}.{threading.get_ident()}")
            hk.save(str(tmp))
            os.replace(tmp, p)
        client.get_host_keys().add(hostname, key.get_name(), key)


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

    def _connect(self) -> paramiko.SSHClient:
        creds = self.guest.credentials
        known_hosts = self.options.known_hosts or default_known_hosts()
        client = paramiko.SSHClient()
        if os.path.exists(known_hosts):
            try:
                client.load_host_keys(known_hosts)
            except Exception as exc:
                raise ConnectionFailed(f"cannot read known_hosts {known_hosts}: {exc}", where=self._where) from None
        policy = _AcceptAndSave(known_hosts) if self.options.accept_new_host_keys else _RejectUnknown(known_hosts)
        client.set_missing_host_key_policy(policy)
        password = secrets.from_env(creds.password_env, "SSH password", self._where)
        passphrase = secrets.from_env(creds.key_passphrase_env, "key passphrase", self._where)
        key_file = os.path.expanduser(creds.key_file) if creds.key_file else None
        if key_file and not os.path.isfile(key_file):
            raise ConnectionFailed(f"key file {key_file} does not exist", where=self._where)
        t = self.options.connect_timeout
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
            raise ConnectionFailed(f"authentication failed for user {creds.user!r}: {exc}", where=self._where) from None
        except (socket.timeout, TimeoutError):
            client.close()
            raise ConnectionFailed(f"connection timed out after {t:g} s", where=self._where) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            client.close()
            raise ConnectionFailed(f"cannot connect: {exc or type(exc).__name__}", where=self._where) from None
        transport = client.get_transport()
        if transport is not None and self.options.keepalive:
            transport.set_keepalive(self.options.keepalive)
        return client

    # ------------------------------------------------------------------ commands

    def _privileged(self, argv: list[str], stdin: bytes | None, timeout: float) -> tuple[list[str], bytes | None]:
        if self.guest.credentials.user in (None, "root") and self._is_root(timeout):
            return argv, stdin
        if self._nopasswd is None:
            self._nopasswd = self._exec(join_argv(sudo_mod.PROBE), None, timeout).rc == 0
        password = None
        if not self._nopasswd:
            creds = self.guest.credentials
            password = secrets.from_env(creds.sudo_password_env or creds.password_env, "sudo password", self._where)
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
