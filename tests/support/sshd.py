"""A real OpenSSH sshd on 127.0.0.1 with generated host and user keys (tests and benchmarks)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.support.cachelock import exclusive

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"
TEST_USER = "guestprep-test"
TEST_PASSWORD = "Gp-test-pw-1!"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path, kind: str = "ed25519") -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", "guestprep-test", "-f", str(path)], check=True)
    return path


@dataclass
class SSHServer:
    host: str
    port: int
    workdir: Path
    user_key: Path          # private key authorized for root and the test user
    known_hosts: Path       # a known_hosts file that trusts this server's host key
    host_pubkey: str
    password_user: str | None
    password: str | None
    proc: subprocess.Popen

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def ensure_password_user() -> bool:
    """Create a local test user with a password (root only); used for password and sudo tests."""
    if os.geteuid() != 0:
        return False
    # parallel test workers each start an sshd: one useradd/chpasswd at a time (both lock /etc/shadow)
    with exclusive(Path(tempfile.gettempdir()) / "guestprep-test-user.lock", f"the user {TEST_USER}"):
        if subprocess.run(["id", TEST_USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", TEST_USER], check=True, capture_output=True)
        subprocess.run(["chpasswd"], input=f"{TEST_USER}:{TEST_PASSWORD}\n".encode(), check=True)
    return True


def start_sshd(workdir: Path, max_startups: int = 1000, extra_config: str = "") -> SSHServer:
    if not os.path.exists(SSHD):
        raise RuntimeError("sshd not installed (Debian package openssh-server)")
    workdir.mkdir(parents=True, exist_ok=True)
    os.chmod(workdir, 0o755)
    host_key = keygen(workdir / "ssh_host_ed25519_key")
    user_key = keygen(workdir / "user_key")
    auth = workdir / "authorized_keys"
    auth.write_text((workdir / "user_key.pub").read_text())
    os.chmod(auth, 0o644)
    has_pw_user = ensure_password_user()
    port = free_port()
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    config = workdir / "sshd_config"
    config.write_text(f"""
Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {workdir}/sshd.pid
AuthorizedKeysFile {auth}
PermitRootLogin yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PubkeyAuthentication yes
UsePAM no
StrictModes no
MaxStartups {max_startups}
MaxSessions 100
LoginGraceTime 30
Subsystem sftp internal-sftp
LogLevel ERROR
{extra_config}
""")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                            stderr=open(workdir / "sshd.log", "wb"))
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(workdir / 'sshd.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                if s.recv(4).startswith(b"SSH"):
                    break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("sshd did not start listening")
    pub = (workdir / "ssh_host_ed25519_key.pub").read_text().split()
    known = workdir / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {pub[0]} {pub[1]}\n")
    return SSHServer("127.0.0.1", port, workdir, user_key, known, f"{pub[0]} {pub[1]}",
                     TEST_USER if has_pw_user else None, TEST_PASSWORD if has_pw_user else None, proc)
