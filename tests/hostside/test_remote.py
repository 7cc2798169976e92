"""HTTPS datastore URLs through qemu's curl driver: a local TLS server with Range support
that demands the session cookie. The cookie must never reach argv, logs or manifests."""

from __future__ import annotations

import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest

from hostside_support import Datastore, host_cli

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture(autouse=True, scope="module")
def _needs_curl_driver():
    """A real part: the suite FAILS (never skips) when qemu-img cannot read https://.

    `qemu-img --help` lists https even without Debian's module, so this opens a URL."""
    from hostside import qemu
    if qemu.https_driver_missing():
        pytest.fail(f"qemu-img cannot read https:// sources: {qemu.CURL_PACKAGE_HINT}",
                    pytrace=False)


def _env(ds=None, cookie=None):
    return {"VC_COOKIE": cookie if cookie is not None else Datastore.cookie}


def _serve(ds, images, key, name):
    shutil.copyfile(images[key], ds.root / name)


class CmdlineWatcher:
    """Polls every process's argv while a command runs: the cookie must never be there."""

    def __init__(self, needle: str):
        self.needle = needle.encode()
        self.seen_qemu = 0
        self.leaks: list[str] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            for path in glob.glob("/proc/[0-9]*/cmdline"):
                try:
                    with open(path, "rb") as f:
                        argv = f.read()
                except OSError:
                    continue
                if b"qemu-img" in argv:
                    self.seen_qemu += 1
                if self.needle in argv:
                    self.leaks.append(argv.decode(errors="replace"))
            time.sleep(0.02)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def test_inspect_and_audit_a_flat_extent_over_https(datastore, images):
    _serve(datastore, images, "gpt.raw", "web01-flat.vmdk")
    url = datastore.url("web01-flat.vmdk")
    r = host_cli("inspect", url, "--cookie-env", "VC_COOKIE", "--insecure", "--json",
                 env=_env())
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "raw" and doc["remote"] and doc["virtual_size"] == 400 * MiB
    r = host_cli("audit", url, "--cookie-env", "VC_COOKIE", "--insecure", "--json", env=_env())
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["firmware"] == "uefi"
    ranges = [q for q in datastore.requests if q["method"] == "GET"]
    assert ranges and all(q["range"] for q in ranges)      # streamed in ranges, no full copy
    assert all(q["cookie"] == Datastore.cookie for q in datastore.requests)


def test_tls_is_verified_unless_insecure(datastore, images):
    _serve(datastore, images, "mbr.raw", "a-flat.vmdk")
    r = host_cli("inspect", datastore.url("a-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                 env=_env())
    assert r.returncode == 3 and "Traceback" not in r.stderr
    assert "certificate" in r.stderr.lower() and "--insecure knowingly" in r.stderr
    assert not [q for q in datastore.requests if q["method"] == "GET"]


def test_wrong_or_missing_cookie_is_refused(datastore, images):
    _serve(datastore, images, "mbr.raw", "a-flat.vmdk")
    url = datastore.url("a-flat.vmdk")
    r = host_cli("inspect", url, "--cookie-env", "VC_COOKIE", "--insecure",
                 env=_env(cookie="vmware_soap_session=\"stale\""))
    assert r.returncode == 3 and "403" in r.stderr and "cookie" in r.stderr
    r = host_cli("inspect", url, "--cookie-env", "NOT_SET_ANYWHERE", "--insecure")
    assert r.returncode == 2 and "NOT_SET_ANYWHERE is not set" in r.stderr
    for bad in (url.replace("https://", "http://"),
                url.replace("https://", "https://root:pw@")):
        r = host_cli("inspect", bad, "--cookie-env", "VC_COOKIE", "--insecure", env=_env())
        assert r.returncode == 2 and "Traceback" not in r.stderr


@pytest.mark.parametrize("key,name", [
    ("mbr.raw", "db01-flat.vmdk"),          # an ESXi flat extent, read as raw
    ("streamOptimized", "db01.vmdk"),       # a single-file vmdk, read by qemu's vmdk driver
])
def test_convert_streams_without_leaking_the_cookie(datastore, images, tmp_path, key, name):
    _serve(datastore, images, key, name)
    dest = tmp_path / "vm-100-disk-0.qcow2"
    with CmdlineWatcher(Datastore.cookie.split('"')[1]) as watch:
        r = host_cli("convert", datastore.url(name), "--cookie-stdin", "--insecure",
                     "--to", "qcow2", "--dest", dest, "--json", "--progress", "json",
                     input=Datastore.cookie + "\n")
    assert r.returncode == 0, r.stderr
    assert watch.seen_qemu > 0, "the watcher never saw qemu-img running"
    assert watch.leaks == []
    manifest = (tmp_path / "vm-100-disk-0.qcow2.guestprep-manifest.json").read_text()
    secret = Datastore.cookie.split('"')[1]
    for text in (manifest, r.stdout, r.stderr):
        assert secret not in text
    m = json.loads(r.stdout)
    assert m["verification"]["ok"] and m["source"]["remote"]
    assert "cookie-secret" in " ".join(m["command"])  # passed by reference only
    assert subprocess.run(["qemu-img", "compare", "-F", "qcow2", str(images["mbr.raw"]),
                           str(dest)], capture_output=True).returncode == 0
    for d in glob.glob("/tmp/guestprep-secret-*"):   # no cookie file left anywhere
        for f in glob.glob(os.path.join(d, "*")):
            with open(f, "rb") as fh:
                assert secret.encode() not in fh.read()


def test_failure_midway_removes_the_target(datastore, images, tmp_path):
    _serve(datastore, images, "gpt.raw", "big-flat.vmdk")
    datastore.fail_after = 12
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "partial.qcow2"
    r = host_cli("convert", datastore.url("big-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                 "--insecure", "--to", "qcow2", "--dest", dest, env=_env())
    assert r.returncode == 3, r.stderr
    assert "qemu-img convert failed" in r.stderr and "no target left behind" in r.stderr
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_interrupt_removes_the_target(datastore, images, tmp_path, sig):
    _serve(datastore, images, "gpt.raw", "slow-flat.vmdk")
    datastore.delay = 0.2
    out = tmp_path / "out"
    out.mkdir()
    dest = out / "partial.raw"
    env = dict(os.environ, VC_COOKIE=Datastore.cookie)
    proc = subprocess.Popen([sys.executable, "-m", "hostside.cli", "convert",
                             datastore.url("slow-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                             "--insecure", "--to", "raw", "--dest", str(dest),
                             "--progress", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # wait until the target exists and qemu-img is copying, then interrupt
    partial = out / "partial.raw.partial"
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert partial.exists(), "conversion never started"
    assert not dest.exists()        # written under the temporary name only
    line = proc.stderr.readline()
    while line and '"progress"' not in line:   # phase events come first (inspect, audit, ...)
        line = proc.stderr.readline()
    assert '"progress"' in line
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "no target left behind" in err
    assert list(out.iterdir()) == []


def test_a_stalled_transfer_is_stopped_and_cleaned_up(datastore, images, tmp_path):
    _serve(datastore, images, "mbr.raw", "stall-flat.vmdk")
    datastore.delay = 4.0  # every range request hangs longer than the stall timeout
    out = tmp_path / "out"
    out.mkdir()
    r = host_cli("convert", datastore.url("stall-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                 "--insecure", "--to", "raw", "--dest", out / "d.raw", "--stall-timeout", "1",
                 env=_env())
    assert r.returncode == 3, r.stderr
    assert "no progress for 1s" in r.stderr and "no target left behind" in r.stderr
    assert list(out.iterdir()) == []


# ---------------------------------------------------------------- trusting one server, not the system store


def _fingerprint(pem_path) -> str:
    import hashlib
    import ssl as ssl_mod
    return hashlib.sha256(ssl_mod.PEM_cert_to_DER_cert(pem_path.read_text())).hexdigest()


@pytest.mark.parametrize("trust", ["ca_file", "pin"])
def test_convert_verifies_tls_against_the_given_ca_or_pin(datastore, images, tmp_path, trust):
    """The controller passes the CA it trusts (or the certificate's SHA-256): the node verifies
    the server with it, qemu reads through the loopback relay and never holds the cookie."""
    _serve(datastore, images, "mbr.raw", "db02-flat.vmdk")
    cert = tmp_path / "cert.pem"   # the datastore fixture's self-signed server certificate
    env = {remote_env: value for remote_env, value in
           (("GUESTPREP_HOST_CA_FILE", str(cert)) if trust == "ca_file" else
            ("GUESTPREP_HOST_TLS_SHA256", _fingerprint(cert)),)}
    dest = tmp_path / "vm-101-disk-0.qcow2"
    secret = Datastore.cookie.split('"')[1]
    with CmdlineWatcher(secret) as watch:
        r = host_cli("convert", datastore.url("db02-flat.vmdk"), "--cookie-stdin", "--to", "qcow2",
                     "--dest", dest, "--json", input=Datastore.cookie + "\n", env=env)
    assert r.returncode == 0, r.stderr
    assert watch.seen_qemu > 0 and watch.leaks == []
    m = json.loads(r.stdout)
    cmd = " ".join(m["command"])
    assert "http://127.0.0.1:" in cmd and "cookie" not in cmd and secret not in r.stdout + r.stderr
    assert m["verification"]["ok"]
    assert subprocess.run(["qemu-img", "compare", "-F", "qcow2", str(images["mbr.raw"]), str(dest)],
                          capture_output=True).returncode == 0
    gets = [q for q in datastore.requests if q["method"] == "GET"]
    assert gets and all(q["cookie"] == Datastore.cookie for q in datastore.requests)


def test_a_server_outside_the_given_trust_is_refused(datastore, images, tmp_path):
    from hostside_support import make_cert

    _serve(datastore, images, "mbr.raw", "db03-flat.vmdk")
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    other, _ = make_cert(other_dir)   # a different self-signed certificate for the same address
    for env in ({"GUESTPREP_HOST_CA_FILE": str(other)},
                {"GUESTPREP_HOST_TLS_SHA256": _fingerprint(other)}):
        r = host_cli("convert", datastore.url("db03-flat.vmdk"), "--cookie-stdin", "--to", "raw",
                     "--dest", tmp_path / "x.raw", input=Datastore.cookie + "\n", env=env)
        assert r.returncode == 3 and "Traceback" not in r.stderr, r.stderr
        assert "certificate" in r.stderr.lower(), r.stderr
        assert not (tmp_path / "x.raw").exists()
    assert not [q for q in datastore.requests if q["method"] == "GET"]
    r = host_cli("inspect", datastore.url("db03-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                 env={**_env(), "GUESTPREP_HOST_TLS_SHA256": "12ab"})
    assert r.returncode == 2 and "GUESTPREP_HOST_TLS_SHA256" in r.stderr and "64 hex" in r.stderr


def test_the_relay_refuses_other_users(tmp_path):
    """Another local user connecting to the loopback relay gets 403, never the datastore file."""
    from hostside import remote

    assert remote.peer_uid(("127.0.0.1", 1), ("127.0.0.1", 2)) is None   # no such connection
    rl = remote.relay()
    import socket as socket_mod
    s = socket_mod.create_connection(rl.server.server_address)
    try:
        assert remote.peer_uid(s.getsockname(), rl.server.server_address) == os.getuid()
    finally:
        s.close()
