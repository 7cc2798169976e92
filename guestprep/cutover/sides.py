"""The three places a cutover touches, opened from the wave: vSphere (the source), the Proxmox API
(the target), and the Proxmox node over SSH (where disks are converted).

One set per VM job: pyVmomi and requests sessions are not shared between threads. The
guestprep-host zipapp is uploaded once per node per controller process (a lock per node) and
its SHA-256 checked on the node before every use.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guestprep.connectors import ConnectOptions
from guestprep.errors import ConfigError, OperationError
from guestprep.models import Credentials, Guest, Transport

from guestprep.cutover.wave import NodeSpec, Wave

ZIPAPP_NAME = "guestprep-host.pyz"


@dataclass
class Secrets:
    """Read once by the command (env/stdin), never in argv, the wave, or the journal."""

    vsphere_password: str = field(default="", repr=False)


def open_vsphere(wave: Wave, secrets: Secrets):
    from guestprep.vsphere.client import connect

    vs = wave.vsphere
    return connect(vs["server"], vs["user"], secrets.vsphere_password, ca_bundle=vs.get("ca_bundle"),
                   thumbprint=vs.get("thumbprint"), insecure=bool(vs.get("insecure")),
                   timeout=float(vs.get("timeout", 60)))


def open_proxmox(wave: Wave, poll: float):
    from guestprep.proxmox.client import PveClient, PveConnection, secret_from_env

    px = wave.proxmox
    where = f"{wave.path}: proxmox"
    known = {"host", "port", "user", "token_name", "token_secret_env", "password_env", "ca", "fingerprint",
             "insecure", "timeout"}
    unknown = set(px) - known
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}", where=where)
    conn = PveConnection(host=px["host"], port=int(px.get("port", 8006)), user=px.get("user", "root@pam"),
                         token_name=px.get("token_name"),
                         token_secret=secret_from_env(px.get("token_secret_env"), "token secret"),
                         password=secret_from_env(px.get("password_env"), "password"),
                         ca_file=px.get("ca"), fingerprint=px.get("fingerprint"), insecure=bool(px.get("insecure")),
                         timeout=float(px.get("timeout", 30)))
    return PveClient(conn, poll_interval=poll)


def zipapp_path() -> Path:
    """The guestprep-host zipapp to ship: $GUESTPREP_HOST_ZIPAPP, else dist/ of this checkout."""
    import os

    env = os.environ.get("GUESTPREP_HOST_ZIPAPP")
    p = Path(env) if env else Path(__file__).resolve().parents[2] / "dist" / ZIPAPP_NAME
    if not p.is_file():
        raise ConfigError(f"the guestprep-host zipapp is missing: build it with `python3 tools/build_zipapp.py` "
                          f"or set GUESTPREP_HOST_ZIPAPP", where=str(p))
    return p


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_upload_locks: dict[str, threading.Lock] = {}
_uploaded: set[str] = set()
_guard = threading.Lock()


class NodeLink:
    """An SSH session to one Proxmox node, through the suite's own SSH connector (host keys verified)."""

    def __init__(self, spec: NodeSpec, wave_id: str, accept_new_host_keys: bool = False):
        from guestprep.connectors.ssh import SSHConnector

        self.spec = spec
        guest = Guest(name=f"node {spec.name}", address=spec.address, transport=Transport.SSH, port=spec.port,
                      credentials=Credentials(user=spec.user, key_file=spec.key_file, use_agent=spec.key_file is None),
                      origin=f"wave nodes.{spec.name}")
        self.conn = SSHConnector(guest, ConnectOptions(known_hosts=spec.known_hosts,
                                                       accept_new_host_keys=accept_new_host_keys,
                                                       command_timeout=24 * 3600.0))
        self.dir = f"{spec.workdir.rstrip('/')}/{wave_id}"
        self.zipapp = f"{self.dir}/{ZIPAPP_NAME}"

    def close(self) -> None:
        self.conn.close()

    def run(self, argv: list[str], *, timeout: float = 300.0, stdin: bytes | None = None):
        return self.conn.run(argv, timeout=timeout, stdin=stdin)

    def run_tethered(self, argv: list[str], *, lock: str, done_if: str | None = None,
                     stdin_line: bytes | None = None, env: list[str] | None = None, wait: float = 3600.0,
                     timeout: float = 24 * 3600.0, keepalive=None, keepalive_every: float = 300.0):
        """``argv`` under guestprep-host's watchdog (hostside/watchdog.py): it stops when this channel's
        stdin ends — this process exited or was killed, the connection dropped — and one run per
        ``lock`` at a time (a resume waits for a dying run to clean up). ``stdin_line`` (a cookie)
        is the only thing ever written to the channel; its stdin stays open until the command ends.
        ``keepalive`` is called every ``keepalive_every`` seconds meanwhile (in this thread)."""
        import time

        import paramiko

        from guestprep.connectors.quoting import join_argv
        from guestprep.errors import CommandTimeout, ConnectionFailed
        from guestprep.models import CommandResult

        wd = ["env", f"PYTHONPATH={self.zipapp}", *(env or []), self.spec.python, "-m", "hostside.watchdog",
              "--lock", lock, "--wait", f"{wait:g}", *(["--done-if", done_if] if done_if else []),
              *(["--stdin-line"] if stdin_line is not None else []), "--", *argv]
        where = f"node {self.spec.name}"
        # the connector's run() closes stdin after writing it; the tether needs it open (its _client
        # is the connector's paramiko client: same session, same verified host key)
        transport = self.conn._client.get_transport()
        if transport is None or not transport.is_active():
            raise ConnectionFailed("SSH session is closed", where=where)
        start, deadline = time.monotonic(), time.monotonic() + timeout
        out, err = bytearray(), bytearray()
        try:
            chan = transport.open_session(timeout=30)
            chan.settimeout(1.0)
            chan.exec_command(join_argv(wd))
            if stdin_line is not None:
                chan.sendall(stdin_line)
            exited_at, kept = 0.0, time.monotonic()
            while True:
                if keepalive is not None and time.monotonic() - kept > keepalive_every:
                    kept = time.monotonic()
                    try:
                        keepalive()
                    except Exception:   # the command's own result says whether the session held
                        pass
                moved = False
                while chan.recv_ready():
                    out += chan.recv(65536)
                    moved = True
                while chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                    moved = True
                if chan.exit_status_ready() and not moved:
                    exited_at = exited_at or time.monotonic()   # then the channel's EOF, briefly
                    if chan.eof_received or time.monotonic() - exited_at > 5:
                        break
                if time.monotonic() > deadline:
                    chan.close()   # the watchdog sees stdin end and stops the command
                    raise CommandTimeout(f"command did not finish within {timeout:g} s", where=where)
                if not transport.is_active():
                    raise ConnectionFailed("connection lost while the command ran", where=where)
                if not moved:
                    time.sleep(0.02)
            rc = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionFailed(f"SSH channel failed: {exc or type(exc).__name__}", where=where) from None
        return CommandResult(rc, bytes(out), bytes(err), time.monotonic() - start)

    def remote_sha256(self, path: str) -> str | None:
        r = self.run(["sha256sum", "--", path], timeout=600)
        return r.stdout.split()[0].decode() if r.rc == 0 and r.stdout.split() else None

    def ensure_dir(self, path: str) -> None:
        r = self.run(["mkdir", "-p", "-m", "0700", "--", path])
        if r.rc != 0:
            raise OperationError(f"cannot create {path}: {r.stderr.decode(errors='replace').strip()}",
                                 where=f"node {self.spec.name}")

    def ensure_zipapp(self, local: Path) -> str:
        """Upload guestprep-host once per node; always check the node's copy by its SHA-256."""
        want = sha256_of(local)
        key = f"{self.spec.name}:{self.zipapp}:{want}"
        with _guard:
            lock = _upload_locks.setdefault(self.spec.name, threading.Lock())
        with lock:
            if key not in _uploaded or self.remote_sha256(self.zipapp) != want:
                if self.remote_sha256(self.zipapp) != want:
                    self.ensure_dir(self.dir)
                    self.conn.put(str(local), self.zipapp, mode=0o700)
                got = self.remote_sha256(self.zipapp)
                if got != want:
                    raise OperationError(f"{ZIPAPP_NAME} on the node has sha256 {got}, expected {want}; refusing "
                                         "to run it", where=f"node {self.spec.name}")
                _uploaded.add(key)
        return want

    def put_file(self, local: Path, remote: str) -> None:
        """Upload unless the node already holds exactly these bytes."""
        if self.remote_sha256(remote) == sha256_of(local):
            return
        self.conn.put(str(local), remote, mode=0o600)

    def read_json(self, path: str) -> Any | None:
        import json

        r = self.run(["cat", "--", path])
        if r.rc != 0:
            return None
        try:
            return json.loads(r.stdout.decode())
        except ValueError:
            return None
