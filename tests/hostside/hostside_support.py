"""Helpers and fixtures for hostside tests (imported by conftest.py; a unique module name
so `from hostside_support import ...` can never pick up another area's conftest).

Images built with the real qemu-img/sfdisk/sgdisk/mkfs, recording stand-ins for
zfs/zpool/lvcreate/lvs, and a local HTTPS datastore."""

from __future__ import annotations

import datetime
import json
import os
import shutil
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

MiB = 1 << 20
REPO = Path(__file__).resolve().parents[2]
TOOLS = ["qemu-img", "qemu-io", "sfdisk", "sgdisk", "mkfs.ext4", "mkfs.xfs", "mkntfs",
         "mkfs.vfat", "mkswap"]


def need_tools():
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing tools (run `make setup` as root): {', '.join(missing)}")


def sh(*argv, **kw):
    return subprocess.run([str(a) for a in argv], check=True, capture_output=True, **kw)


def place(fs_image: Path, disk: Path, offset: int) -> None:
    """Copy a filesystem image into a disk image at `offset`, keeping holes."""
    with open(fs_image, "rb") as src, open(disk, "r+b") as dst:
        size = os.fstat(src.fileno()).st_size
        pos = 0
        while pos < size:
            try:
                data = os.lseek(src.fileno(), pos, os.SEEK_DATA)
            except OSError:
                break
            hole = os.lseek(src.fileno(), data, os.SEEK_HOLE)
            src.seek(data)
            remaining = hole - data
            dst.seek(offset + data)
            while remaining:
                chunk = src.read(min(remaining, 4 * MiB))
                dst.write(chunk)
                remaining -= len(chunk)
            pos = hole


def mkfs(kind: str, path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    if kind == "ext4":
        sh("mkfs.ext4", "-q", "-F", "-d", str(REPO / "hostside"), path)
    elif kind == "xfs":
        sh("mkfs.xfs", "-q", "-f", path)
    elif kind == "ntfs":
        sh("mkntfs", "-q", "-F", "-Q", path)
    elif kind == "fat32":
        sh("mkfs.vfat", "-F", "32", path)
    elif kind == "swap":
        sh("mkswap", path)
    return path


def build_mbr(root: Path) -> Path:
    """64 MiB: NTFS at the legacy sector 63, an extended partition with ext4 + swap."""
    disk = root / "mbr.raw"
    open(disk, "wb").truncate(64 * MiB)
    layout = textwrap.dedent("""\
        label: dos
        unit: sectors
        start=63, size=20417, type=7, bootable
        start=22528, size=108544, type=5
        start=24576, size=40960, type=83
        start=67584, size=20480, type=82
        """)
    sh("sfdisk", "-q", disk, input=layout.encode())
    place(mkfs("ntfs", root / "ntfs.fs", 20417 * 512), disk, 63 * 512)
    place(mkfs("ext4", root / "ext4.fs", 40960 * 512), disk, 24576 * 512)
    place(mkfs("swap", root / "swap.fs", 20480 * 512), disk, 67584 * 512)
    return disk


def build_gpt(root: Path) -> Path:
    """400 MiB sparse: ESP (FAT32) at 1 MiB, XFS, and a Linux partition at 2048-aligned."""
    disk = root / "gpt.raw"
    open(disk, "wb").truncate(400 * MiB)
    sh("sgdisk", "-n", "1:2048:+40M", "-t", "1:ef00", "-c", "1:EFI system partition",
       "-n", "2:0:+310M", "-t", "2:8300", "-n", "3:0:0", "-t", "3:8300", disk)
    out = sh("sgdisk", "-p", disk).stdout.decode()
    starts = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].isdigit():
            starts[int(parts[0])] = (int(parts[1]), int(parts[2]))
    s1, e1 = starts[1]
    s2, e2 = starts[2]
    place(mkfs("fat32", root / "esp.fs", (e1 - s1 + 1) * 512), disk, s1 * 512)
    place(mkfs("xfs", root / "xfs.fs", (e2 - s2 + 1) * 512), disk, s2 * 512)
    return disk


def write_descriptor(path: Path, create_type: str, extents: list[str], *, cid="1234abcd",
                     parent_cid="ffffffff", extra: str = "") -> Path:
    path.write_text(
        "# Disk DescriptorFile\nversion=1\n"
        f"CID={cid}\nparentCID={parent_cid}\ncreateType=\"{create_type}\"\n{extra}\n"
        "# Extent description\n" + "\n".join(extents) + "\n\n"
        "# The Disk Data Base\n#DDB\n\nddb.adapterType = \"lsilogic\"\n"
        "ddb.thinProvisioned = \"1\"\n")
    return path


@pytest.fixture(scope="session")
def images(tmp_path_factory):
    """Every source kind the issue lists, built once per session."""
    need_tools()
    root = tmp_path_factory.mktemp("hostside-images")
    mbr = build_mbr(root)
    gpt = build_gpt(root)
    out = {"root": root, "mbr.raw": mbr, "gpt.raw": gpt}
    for sub in ("monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
                "twoGbMaxExtentFlat", "streamOptimized"):
        # 64 MiB MBR disk for the vmdk subformats; split ones need > 2 GiB to split,
        # so those get the MBR disk grown sparsely to 4.5 GiB.
        src = mbr
        if sub.startswith("twoGb"):
            big = root / "mbr-big.raw"
            if not big.exists():
                shutil.copyfile(mbr, big)
                os.truncate(big, 4608 * MiB)
            src = big
        dst = root / f"mbr-{sub}.vmdk"
        sh("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", f"subformat={sub}", src, dst)
        out[sub] = dst
    # ESXi-style descriptor + flat extent: vmfs and vmfsThin (qemu refuses the latter by name).
    for ct in ("vmfs", "vmfsThin"):
        flat = root / f"gpt-{ct}-flat.vmdk"
        sh("cp", "--sparse=always", gpt, flat)
        out[ct] = write_descriptor(root / f"gpt-{ct}.vmdk", ct,
                                   [f'RW {400 * MiB // 512} VMFS "{flat.name}"'])
    out["qcow2"] = root / "gpt.qcow2"
    sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", gpt, out["qcow2"])
    # A snapshot chain: base + delta with its own writes.
    base = root / "chain-base.vmdk"
    sh("qemu-img", "convert", "-f", "raw", "-O", "vmdk", mbr, base)
    delta = root / "chain-delta.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-b", base.name, "-F", "vmdk", delta,
       cwd=root)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0xab 40M 1M", delta)
    out["chain-base"], out["chain-delta"] = base, delta
    return out


# --------------------------------------------------------------------------- stand-ins

STANDIN = r'''#!/usr/bin/env python3
"""Recording stand-in for {name}: ZFS/LVM cannot run on this machine."""
import json, os, sys
state = os.environ["GP_STANDIN_STATE"]
devroot = os.environ["GUESTPREP_HOST_DEV_ROOT"]
with open(os.path.join(state, "calls.jsonl"), "a") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "\n")
cfg = json.load(open(os.path.join(state, "config.json")))
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]

def size_of(text):
    text = text.rstrip("bB")
    return int(text)

def exists(path):
    return os.path.exists(path)

if name == "zfs":
    if args[0] == "list":
        sys.exit(0 if exists(os.path.join(devroot, "zvol", args[-1])) else 1)
    if args[0] == "get":
        # zfsprops(7): `available` of the parent (configured); `used` of a volume: the space its
        # data consumes (the backing file's allocated blocks here)
        if "used" in args:
            path = os.path.join(devroot, "zvol", args[-1])
            if not exists(path):
                print(f"cannot open '{args[-1]}': dataset does not exist", file=sys.stderr); sys.exit(1)
            print(os.stat(path).st_blocks * 512); sys.exit(0)
        print(cfg.get("zfs_available", 10 << 30)); sys.exit(0)
    if args[0] == "create":
        vol = args[-1]; size = size_of(args[args.index("-V") + 1])
        path = os.path.join(devroot, "zvol", vol)
        if exists(path):
            print(f"cannot create '{vol}': dataset already exists", file=sys.stderr); sys.exit(1)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f: f.truncate(size)
        sys.exit(0)
    if args[0] == "destroy":
        os.unlink(os.path.join(devroot, "zvol", args[-1])); sys.exit(0)
    if args[0] == "rename":
        old, new = (os.path.join(devroot, "zvol", a) for a in args[-2:])
        if exists(new):
            print(f"cannot rename to '{args[-1]}': dataset already exists", file=sys.stderr); sys.exit(1)
        os.rename(old, new); sys.exit(0)
if name == "zpool":
    if args[0] == "get":
        print(cfg.get("ashift", 12)); sys.exit(0)
    if args[0] == "status":
        print(cfg.get("zpool_status", "  pool: rpool\n state: ONLINE\nconfig:\n\n\tNAME STATE\n\trpool ONLINE\n\t  /dev/sda ONLINE\n\nerrors: No known data errors")); sys.exit(0)
if name == "lvs":
    target = args[-1]
    vg, lv = target.split("/")
    if "lv_size,data_percent,lv_attr" in args:
        print(f"  {cfg.get('pool_size', 20 << 30)}|{cfg.get('data_percent', '10.00')}|{cfg.get('pool_attr', 'twi-aotz--')}"); sys.exit(0)
    if "lv_size,data_percent" in args:   # lvs(8): a thin LV's size and the share of it mapped in the pool
        path = os.path.join(devroot, vg, lv)
        if not exists(path):
            print(f"  Failed to find logical volume \"{vg}/{lv}\"", file=sys.stderr); sys.exit(5)
        st = os.stat(path)
        print(f"  {st.st_size}|{100.0 * st.st_blocks * 512 / max(st.st_size, 1):.2f}"); sys.exit(0)
    sys.exit(0 if exists(os.path.join(devroot, vg, lv)) else 5)
if name == "lvcreate":
    size = size_of(args[args.index("-V") + 1]); vg = args[args.index("-T") + 1].split("/")[0]
    lv = args[args.index("-n") + 1]
    path = os.path.join(devroot, vg, lv)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "xb") as f: f.truncate(size)
    sys.exit(0)
if name == "lvrename":
    vg, old, new = args[-3:]
    if exists(os.path.join(devroot, vg, new)):
        print(f"Logical Volume \"{new}\" already exists in volume group \"{vg}\"", file=sys.stderr); sys.exit(5)
    os.rename(os.path.join(devroot, vg, old), os.path.join(devroot, vg, new)); sys.exit(0)
if name == "lvremove":
    vg, lv = args[-1].split("/"); os.unlink(os.path.join(devroot, vg, lv)); sys.exit(0)
print(f"stand-in {name}: unexpected {args}", file=sys.stderr)
sys.exit(2)
'''


class Standins:
    def __init__(self, root: Path):
        self.root = root
        self.bin = root / "bin"
        self.state = root / "state"
        self.dev = root / "dev"
        for d in (self.bin, self.state, self.dev):
            d.mkdir(parents=True)
        for name in ("zfs", "zpool", "lvs", "lvcreate", "lvremove", "lvrename"):
            p = self.bin / name
            p.write_text(STANDIN.replace("{name}", name).replace(
                "#!/usr/bin/env python3", f"#!{sys.executable}"))
            p.chmod(0o755)
        self.configure()

    def configure(self, **cfg) -> None:
        (self.state / "config.json").write_text(json.dumps(cfg))

    def calls(self) -> list[list[str]]:
        f = self.state / "calls.jsonl"
        return [json.loads(x) for x in f.read_text().splitlines()] if f.exists() else []

    def env(self) -> dict:
        return {"PATH": f"{self.bin}:{os.environ['PATH']}", "GP_STANDIN_STATE": str(self.state),
                "GUESTPREP_HOST_DEV_ROOT": str(self.dev)}


@pytest.fixture
def standins(tmp_path, monkeypatch):
    s = Standins(tmp_path / "standins")
    for k, v in s.env().items():
        monkeypatch.setenv(k, v)
    return s


# --------------------------------------------------------------------------- HTTPS datastore


def make_cert(directory: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class Datastore:
    """Serves files under /folder/ like an ESXi datastore browser: Range + session cookie."""

    cookie = 'vmware_soap_session="52e0c7f8-test-sess-ion0-5eCr3tC00k1e"'

    def __init__(self, root: Path, cert: Path, key: Path):
        self.root = root
        self.requests: list[dict] = []
        self.delay = 0.0           # seconds per GET, to hold a conversion open
        self.fail_after: int | None = None
        store = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _file(self):
                name = self.path.split("?", 1)[0].removeprefix("/folder/")
                path = store.root / name
                store.requests.append({"method": self.command, "path": self.path,
                                       "cookie": self.headers.get("Cookie"),
                                       "range": self.headers.get("Range")})
                if self.headers.get("Cookie") != store.cookie:
                    self.send_response(403)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if "/" in name or not path.is_file():
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return path

            def do_HEAD(self):
                path = self._file()
                if path is None:
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(path.stat().st_size))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()

            def do_GET(self):
                path = self._file()
                if path is None:
                    return
                gets = sum(1 for r in store.requests if r["method"] == "GET")
                if store.fail_after is not None and gets > store.fail_after:
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if store.delay:
                    time.sleep(store.delay)
                size = path.stat().st_size
                rng = self.headers.get("Range", "")
                start, end = 0, size - 1
                if rng.startswith("bytes="):
                    a, _, b = rng[6:].partition("-")
                    start = int(a)
                    end = min(int(b), size - 1) if b else size - 1
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                else:
                    self.send_response(200)
                length = end - start + 1
                self.send_header("Content-Length", str(length))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                with open(path, "rb") as f:
                    f.seek(start)
                    self.wfile.write(f.read(length))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"https://127.0.0.1:{self.port}/folder/{name}?dcPath=ha-datacenter&dsName=ds1"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def datastore(tmp_path):
    need_tools()
    root = tmp_path / "datastore"
    root.mkdir()
    cert, key = make_cert(tmp_path)
    ds = Datastore(root, cert, key)
    yield ds
    ds.close()


def host_cli(*args, env=None, input=None, timeout=300):
    """Run guestprep-host as a separate process (what the controller does over SSH)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "hostside.cli", *map(str, args)],
                          capture_output=True, text=True, env=full_env, input=input,
                          timeout=timeout)


def is_root() -> bool:
    return os.geteuid() == 0


def blockdev(path) -> bool:
    return stat.S_ISBLK(os.stat(path).st_mode)
