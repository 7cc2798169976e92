"""A real MIT Kerberos KDC on 127.0.0.1 for the Windows connector tests.

Debian's krb5-kdc/krb5-admin-server give krb5kdc, kdb5_util and kadmin.local; the realm,
database, keytab and krb5.conf all live in a temporary directory, so nothing on the
machine is touched. Clients and the WS-Man test server find it through the KRB5_CONFIG,
KRB5_KTNAME and KRB5CCNAME variables that :meth:`Kdc.environ` returns.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REALM = "GUESTPREP.TEST"
TOOLS = ("krb5kdc", "kdb5_util", "kadmin.local")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") is None]


def _tool(name: str) -> str:
    return shutil.which(name, path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin") or name


def _free_port() -> int:
    # the KDC listens on UDP and TCP; a port free for both is good enough on loopback
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            t.bind(("127.0.0.1", 0))
            port = t.getsockname()[1]
            try:
                u.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port for the KDC")


@dataclass
class Kdc:
    root: Path
    port: int
    proc: subprocess.Popen | None = None
    principals: dict[str, str] = field(default_factory=dict)

    @property
    def krb5_conf(self) -> Path:
        return self.root / "krb5.conf"

    @property
    def keytab(self) -> Path:
        return self.root / "http.keytab"

    def environ(self, ccache: Path) -> dict[str, str]:
        return {"KRB5_CONFIG": str(self.krb5_conf), "KRB5_KDC_PROFILE": str(self.root / "kdc.conf"),
                "KRB5_KTNAME": f"FILE:{self.keytab}", "KRB5CCNAME": f"FILE:{ccache}"}

    def _run(self, *argv: str) -> None:
        env = dict(os.environ, **self.environ(self.root / "unused-ccache"))
        subprocess.run(list(argv), env=env, check=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)

    def kadmin(self, query: str) -> None:
        self._run(_tool("kadmin.local"), "-r", REALM, "-q", query)

    def add_user(self, name: str, password: str) -> str:
        # the password reaches kadmin.local as argv of a test-only KDC; product code never does this
        self.kadmin(f"addprinc -pw {password} {name}")
        self.principals[name] = password
        return f"{name}@{REALM}"

    def add_service(self, spn: str) -> None:
        self.kadmin(f"addprinc -randkey {spn}")
        self.kadmin(f"ktadd -k {self.keytab} {spn}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_kdc(root: Path) -> Kdc:
    root.mkdir(parents=True, exist_ok=True)
    kdc = Kdc(root=root, port=_free_port())
    kdc.krb5_conf.write_text(
        "[libdefaults]\n"
        f"  default_realm = {REALM}\n"
        "  dns_lookup_kdc = false\n  dns_lookup_realm = false\n"
        "  dns_canonicalize_hostname = false\n  rdns = false\n"
        "  udp_preference_limit = 1\n"          # TCP: one connection per request, no UDP retries
        "  forwardable = true\n"
        f"[realms]\n  {REALM} = {{\n    kdc = 127.0.0.1:{kdc.port}\n  }}\n", encoding="utf-8")
    (root / "kdc.conf").write_text(
        f"[kdcdefaults]\n  kdc_listen = 127.0.0.1:{kdc.port}\n  kdc_tcp_listen = 127.0.0.1:{kdc.port}\n"
        f"[realms]\n  {REALM} = {{\n    database_name = {root}/principal\n    key_stash_file = {root}/stash\n"
        f"    acl_file = {root}/kadm5.acl\n    kdc_listen = 127.0.0.1:{kdc.port}\n"
        f"    kdc_tcp_listen = 127.0.0.1:{kdc.port}\n  }}\n"
        f"[logging]\n  kdc = FILE:{root}/kdc.log\n", encoding="utf-8")
    kdc._run(_tool("kdb5_util"), "create", "-s", "-r", REALM, "-P", "test-master-key")
    env = dict(os.environ, **kdc.environ(root / "unused-ccache"))
    kdc.proc = subprocess.Popen([_tool("krb5kdc"), "-n", "-r", REALM], env=env, stdout=subprocess.DEVNULL,
                                stderr=open(root / "krb5kdc.err", "wb"))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if kdc.proc.poll() is not None:
            raise RuntimeError(f"krb5kdc exited: {(root / 'krb5kdc.err').read_text(errors='replace')}")
        try:
            with socket.create_connection(("127.0.0.1", kdc.port), timeout=0.5):
                return kdc
        except OSError:
            time.sleep(0.1)
    kdc.stop()
    raise RuntimeError("krb5kdc did not start listening")
