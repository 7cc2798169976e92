"""Build and run the govmomi vCenter simulator (tests/vsphere/vcsim/main.go) over TLS.

Shared by tests/vsphere/conftest.py and benchmarks/vsphere_inventory.py. The binary is
cached outside the repo, keyed by a hash of the Go source, so only the first run pays
the ~20 s build. Certificates are generated per run: a test CA signs the server
certificate for 127.0.0.1, and a second, unrelated CA serves as the untrusted control.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # tests.support, also from benchmarks/
from tests.support.cachelock import exclusive  # noqa: E402

HERE = Path(__file__).resolve().parent
GO_MAIN = HERE / "vcsim" / "main.go"
CACHE = Path(os.environ.get("GUESTPREP_CACHE", "/var/tmp/guestprep-cache"))
GOPATH = "/usr/share/gocode"
USER = "administrator@vsphere.local"


class SimulatorUnavailable(Exception):
    """go or the govmomi sources are missing: tests skip with this reason."""


def _cache_root() -> Path:
    """The shared cache, or a per-user one when another user owns the shared one."""
    for root in (CACHE, Path(tempfile.gettempdir()) / f"guestprep-cache-{os.getuid()}"):
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.access(root, os.W_OK | os.X_OK):
                return root
        except OSError:
            continue
    raise SimulatorUnavailable(f"no writable cache directory ({CACHE})")


def build() -> Path:
    src = GO_MAIN.read_bytes()
    digest = hashlib.sha256(src).hexdigest()[:16]
    for root in (CACHE, Path(tempfile.gettempdir()) / f"guestprep-cache-{os.getuid()}"):
        if (root / f"vcsim-{digest}" / "vcsim").exists():
            return root / f"vcsim-{digest}" / "vcsim"
    cache = _cache_root()
    out_dir = cache / f"vcsim-{digest}"
    binary = out_dir / "vcsim"
    if not shutil.which("go"):
        raise SimulatorUnavailable("`go` not found: apt-get install golang-go")
    if not (Path(GOPATH) / "src/github.com/vmware/govmomi/simulator").is_dir():
        raise SimulatorUnavailable("govmomi sources missing: apt-get install golang-github-vmware-govmomi-dev")
    out_dir.mkdir(parents=True, exist_ok=True)
    # parallel test workers each need the binary: one Go build, the others wait for it
    with exclusive(out_dir.with_name(out_dir.name + ".lock"), "the vCenter simulator"):
        if not binary.exists():
            _go_build(out_dir, binary, cache)
    return binary


def _go_build(out_dir: Path, binary: Path, cache: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="vcsim-build-", dir=out_dir))
    try:
        shutil.copy(GO_MAIN, work / "main.go")
        env = dict(os.environ, GO111MODULE="off", GOPATH=GOPATH, GOCACHE=str(cache / "gocache"),
                   GOFLAGS="", CGO_ENABLED="0")
        tmp_bin = work / "vcsim"
        proc = subprocess.run(["go", "build", "-o", str(tmp_bin), "main.go"], cwd=work, env=env,
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0:
            raise SimulatorUnavailable(f"building the simulator failed:\n{proc.stderr[-2000:]}")
        os.replace(tmp_bin, binary)  # atomic: a concurrent build never sees half a binary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str):
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


@dataclass
class Certs:
    ca_pem: Path          # trusts the simulator
    other_ca_pem: Path    # an unrelated CA: must be refused
    cert_pem: Path
    key_pem: Path
    thumbprint_sha256: str


def make_certs(directory: Path) -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("guestprep test CA")
    _, other = _ca("unrelated CA")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    leaf = (x509.CertificateBuilder().subject_name(_name("127.0.0.1")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = Certs(directory / "ca.pem", directory / "other-ca.pem", directory / "server.pem",
                  directory / "server.key", hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest())
    paths.ca_pem.write_bytes(ca.public_bytes(pem))
    paths.other_ca_pem.write_bytes(other.public_bytes(pem))
    paths.cert_pem.write_bytes(leaf.public_bytes(pem))
    paths.key_pem.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    os.chmod(paths.key_pem, 0o600)
    return paths


class Simulator:
    """One running simulator process; ``close()`` ends it (stdin EOF, then kill)."""

    def __init__(self, binary: Path, certs: Certs, password: str, *, vms_per_pool: int = 2,
                 hosts_per_cluster: int = 3, startup_timeout: float = 120, verbose: bool = False,
                 delay_ms: int = 0):
        self.certs = certs
        self.user = USER
        self.password = password
        env = dict(os.environ, VCSIM_USER=USER, VCSIM_PASSWORD=password)
        self.proc = subprocess.Popen(
            [str(binary), "-cert", str(certs.cert_pem), "-key", str(certs.key_pem),
             "-vm", str(vms_per_pool), "-host", str(hosts_per_cluster),
             "-delay", str(delay_ms)] + (["-v"] if verbose else []),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None if verbose else subprocess.DEVNULL, env=env)
        import selectors
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        if not sel.select(startup_timeout):
            self.close()
            raise RuntimeError("simulator did not start in time")
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError(f"simulator exited with {self.proc.returncode} before serving")
        info = json.loads(line)
        self.host, port = info["url"].rsplit(":", 1)
        self.port = int(port)
        self.server = f"{self.host}:{self.port}"

    def connect(self):
        """A guestprep vSphere session to this simulator, its certificate verified (the one way tests log in)."""
        from guestprep.vsphere.client import connect

        return connect(self.server, self.user, self.password, ca_bundle=str(self.certs.ca_pem))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except Exception:
                self.proc.kill()
                self.proc.wait()
