"""Hostile and broken input on the host side (issue 13, items 1-6b): each test failed
before its fix. Real processes, real qemu-img, a local HTTPS datastore."""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hostside_support import Datastore, host_cli, sh, write_descriptor

pytestmark = pytest.mark.integration

MiB = 1 << 20
COOKIE_ENV = {"VC_COOKIE": Datastore.cookie}


def _bad(r, code, *needles):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture(scope="module", autouse=True)
def _needs_curl_driver():
    from hostside import qemu
    if qemu.https_driver_missing():
        pytest.fail(f"qemu-img cannot read https:// sources: {qemu.CURL_PACKAGE_HINT}",
                    pytrace=False)


# ------------------------------------------------------------------ 1. remote validation


def test_remote_descriptor_naming_a_node_file_is_refused(datastore, tmp_path):
    secret = tmp_path / "node-secret.raw"
    secret.write_bytes(b"NODE-SECRET " * 512)
    for name in ("/etc/hostname", str(secret)):
        (datastore.root / "evil.vmdk").write_text(
            '# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n'
            f'createType="monolithicFlat"\n# Extent description\nRW 8 FLAT "{name}" 0\n')
        dest = tmp_path / "evil.raw"
        r = host_cli("convert", datastore.url("evil.vmdk"), "--cookie-env", "VC_COOKIE",
                     "--insecure", "--to", "raw", "--dest", dest, env=COOKIE_ENV)
        _bad(r, 2, "absolute path")
        assert not dest.exists() and not Path(str(dest) + ".partial").exists()


def test_remote_descriptor_with_a_sibling_flat_extent_is_read_as_a_raw_window(
        datastore, images, tmp_path):
    sh("cp", "--sparse=always", images["mbr.raw"], datastore.root / "web01-flat.vmdk")
    write_descriptor(datastore.root / "web01.vmdk", "vmfsThin",
                     [f'RW {64 * MiB // 512} VMFS "web01-flat.vmdk"'])
    dest = tmp_path / "web01.qcow2"
    r = host_cli("convert", datastore.url("web01.vmdk"), "--cookie-env", "VC_COOKIE",
                 "--insecure", "--to", "qcow2", "--dest", dest, "--json", env=COOKIE_ENV)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["verification"]["ok"] and m["source"]["vmdk"]["create_type"] == "vmfsThin"
    assert "web01.vmdk" not in " ".join(m["command"])     # qemu never parses the descriptor
    assert subprocess.run(["qemu-img", "compare", "-F", "qcow2", str(images["mbr.raw"]),
                           str(dest)], capture_output=True).returncode == 0


def test_remote_qcow2_with_a_local_backing_file_is_refused(datastore, tmp_path):
    marker = tmp_path / "node-local.raw"
    with open(marker, "wb") as f:
        f.write(b"NODE-LOCAL-DATA!" * (MiB // 16))
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", str(marker), "-F", "raw",
       datastore.root / "evil.qcow2", str(MiB))
    dest = tmp_path / "evil-copy.raw"
    r = host_cli("convert", datastore.url("evil.qcow2"), "--cookie-env", "VC_COOKIE",
                 "--insecure", "--to", "raw", "--dest", dest, env=COOKIE_ENV)
    _bad(r, 2, "backing file")
    assert not dest.exists()


def _nodes(node):
    """Every block node of a json: definition (children under any key)."""
    if isinstance(node, dict):
        if "driver" in node:
            yield node
        for v in node.values():
            yield from _nodes(v)
    elif isinstance(node, list):
        for v in node:
            yield from _nodes(v)


def test_qemu_is_always_told_not_to_follow_backing_files(images, tmp_path):
    """Every copy-on-write node qemu opens carries "backing": null. (A sparse VMDK is now
    read as raw windows of its allocated grains, so it may have no vmdk node at all.)"""
    for key in ("qcow2", "monolithicSparse", "chain-delta"):
        dest = tmp_path / f"{key}.raw"
        extra = ["--chain"] if key == "chain-delta" else []
        r = host_cli("convert", images[key], *extra, "--to", "raw", "--dest", dest, "--json")
        assert r.returncode == 0, r.stderr
        m = json.loads(r.stdout)
        sources = [json.loads(a[5:]) for a in m["command"] if a.startswith("json:")]
        if key == "monolithicSparse":   # raw windows of its grains: no COW node at all
            assert not sources and m["source_view"]["sources"] >= 1, m["command"]
            continue
        cow = [n for n in _nodes(sources) if n["driver"] in ("qcow2", "vmdk")]
        assert cow and all("backing" in n for n in cow), sources
        assert [n for n in cow if n["backing"] is None], sources   # the bottom of each chain


def test_a_qcow2_chain_is_spelled_out_and_confined(images, tmp_path):
    base = tmp_path / "base.qcow2"
    sh("qemu-img", "convert", "-O", "qcow2", images["mbr.raw"], base)
    top = tmp_path / "top.qcow2"
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", top,
       cwd=tmp_path)
    sh("qemu-io", "-f", "qcow2", "-c", "write -P 0xcd 1M 64k", top)
    dest = tmp_path / "out.raw"
    r = host_cli("convert", top, "--chain", "--to", "raw", "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    cmd = " ".join(json.loads(r.stdout)["command"])
    assert str(base) in cmd and cmd.count('"backing":null') == 1   # at the bottom only
    sh("qemu-io", "-f", "raw", "-c", "read -P 0xcd 1M 64k", dest)
    # the base names a file outside the top image's directory: refused
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sh("qemu-img", "rebase", "-u", "-f", "qcow2", "-b", str(images["mbr.raw"]), "-F", "raw",
       base)
    r = host_cli("convert", top, "--chain", "--to", "raw", "--dest", tmp_path / "x.raw")
    _bad(r, 2, "lies outside")


# ------------------------------------------------------------------ 2. interruption


def _children(pid: int) -> list[int]:
    out = []
    for stat_path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat_path.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_slow(datastore, images, dest, *, new_session=False):
    sh("cp", "--sparse=always", images["gpt.raw"], datastore.root / "slow-flat.vmdk")
    datastore.delay = 0.2
    proc = subprocess.Popen([sys.executable, "-m", "hostside.cli", "convert",
                             datastore.url("slow-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                             "--insecure", "--to", dest.suffix[1:], "--dest", str(dest),
                             "--progress", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, **COOKIE_ENV), start_new_session=new_session)
    partial = Path(str(dest) + ".partial")
    deadline = time.monotonic() + 60
    while not partial.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert partial.exists(), "conversion never started"
    for _ in range(20):       # phase events (inspect, audit, ...) come first
        if '"progress"' in proc.stderr.readline():
            break
    else:
        raise AssertionError("no progress event")
    qemu = [p for p in _children(proc.pid) if "qemu-img" in Path(f"/proc/{p}/cmdline").read_text()]
    assert qemu, "no qemu-img child"
    return proc, qemu[0]


def test_sighup_during_a_qcow2_conversion_removes_it(datastore, images, tmp_path):
    dest = tmp_path / "out" / "vm-1-disk-0.qcow2"
    dest.parent.mkdir()
    proc, qemu = _start_slow(datastore, images, dest)
    proc.send_signal(signal.SIGHUP)      # an SSH drop
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "no target left behind" in err, err
    assert list(dest.parent.iterdir()) == []
    assert not _alive(qemu)


def _killed_group(datastore, images, dest):
    """A conversion SIGKILLed with its process group (the OOM killer, a node that crashed)."""
    proc, qemu = _start_slow(datastore, images, dest, new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while _alive(qemu) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(qemu)
    return proc


def test_kill9_of_the_process_group_leaves_no_final_target(datastore, images, tmp_path):
    dest = tmp_path / "out" / "vm-1-disk-0.raw"
    dest.parent.mkdir()
    proc = _killed_group(datastore, images, dest)
    assert not dest.exists()                              # nothing looks finished
    claim = dest.parent / "vm-1-disk-0.raw.guestprep-manifest.json.claim"
    assert sorted(p.name for p in dest.parent.iterdir()) == [
        "vm-1-disk-0.raw.guestprep-manifest.json.claim", "vm-1-disk-0.raw.partial"]
    doc = json.loads(claim.read_text())
    assert doc["pid"] == proc.pid and doc["partial"] == str(dest) + ".partial"
    # a rerun names the leftover (and whose it was) instead of converting around it
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", dest)
    _bad(r, 2, "interrupted run", "vm-1-disk-0.raw.partial", f"pid {proc.pid}",
         "--discard-stale-partial")
    assert not dest.exists() and claim.exists()
    # a dry run with the flag removes nothing
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", dest, "--dry-run",
                 "--discard-stale-partial")
    assert r.returncode == 0, r.stderr
    assert (dest.parent / "vm-1-disk-0.raw.partial").exists() and claim.exists()
    # the same conversion asked to discard it: removed first, recorded, then converted
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", dest, "--json",
                 "--discard-stale-partial")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["discarded_partial"] == {"partial": str(dest) + ".partial", "removed": True,
                                      "left_by": f"pid {proc.pid}, started {doc['created_at']}"}
    assert m["verification"]["ok"]
    assert sorted(p.name for p in dest.parent.iterdir()) == [
        "vm-1-disk-0.raw", "vm-1-disk-0.raw.guestprep-manifest.json"]


def test_a_running_conversion_is_never_reclaimed(datastore, images, tmp_path):
    """The claim's owner is alive (stopped, not killed): neither a rerun nor reclaim touch it."""
    dest = tmp_path / "out" / "vm-1-disk-0.qcow2"
    dest.parent.mkdir()
    proc, qemu = _start_slow(datastore, images, dest, new_session=True)
    try:
        os.killpg(proc.pid, signal.SIGSTOP)
        r = host_cli("convert", images["mbr.raw"], "--to", "qcow2", "--dest", dest,
                     "--discard-stale-partial")
        _bad(r, 2, "another conversion", "is running", f"pid {proc.pid}")
        manifest = str(dest) + ".guestprep-manifest.json"
        r = host_cli("reclaim", "--manifest", manifest)
        _bad(r, 2, "still running", f"pid {proc.pid}")
        assert Path(str(dest) + ".partial").exists()
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    # now killed: reclaim removes the partial and the claim, and says so
    r = host_cli("reclaim", "--manifest", manifest, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["removed"] is True
    assert list(dest.parent.iterdir()) == []
    r = host_cli("reclaim", "--manifest", manifest)
    assert r.returncode == 0 and "nothing to remove" in r.stdout


def _claimed_by_a_dead_run(manifest: Path, kind: str, partial: str, label: str) -> None:
    """The claim a conversion SIGKILLed on this boot leaves: written by hostside/claim.py in a
    process that then exits (its pid is gone)."""
    code = "import sys; from hostside import claim; claim.write(*sys.argv[1:])"
    subprocess.run([sys.executable, "-c", code, str(manifest), kind, partial, label], check=True,
                   env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))


def _written(path: Path, data: int, size: int | None = None) -> None:
    with open(path, "wb") as f:
        f.write(os.urandom(data))
        f.truncate(size or data)


def test_a_discarded_partial_counts_as_free_space_for_a_file_target(tmp_path):
    """A killed run's partial fills most of a small directory storage: the retry that removes it
    first (--discard-stale-partial) fits once it is gone, so the space check counts it as free
    (before, it refused: 'needs N bytes but ... has M free'); the manifest says how much it added."""
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    source = tmp_path / "data.raw"
    _written(source, 8 * MiB)
    small = tmp_path / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", small)
    try:
        dest = small / "vm-7-disk-0.qcow2"
        partial = Path(str(dest) + ".partial")
        _written(partial, 12 * MiB)
        manifest = Path(str(dest) + ".guestprep-manifest.json")
        _claimed_by_a_dead_run(manifest, "qcow2", str(partial), str(dest))
        r = host_cli("convert", source, "--to", "qcow2", "--dest", dest, "--json", "--dry-run",
                     "--discard-stale-partial")
        assert r.returncode == 0, r.stderr          # a dry run fits too, and removes nothing
        assert partial.exists()
        r = host_cli("convert", source, "--to", "qcow2", "--dest", dest, "--json",
                     "--discard-stale-partial")
        assert r.returncode == 0, r.stderr
        m = json.loads(r.stdout)
        assert m["discarded_partial"]["removed"] is True and m["verification"]["ok"]
        assert m["target"]["details"]["reclaimable_bytes"] == 12 * MiB
        assert m["target"]["details"]["free_bytes"] < 8 * MiB   # what statvfs said before the removal
        assert sorted(p.name for p in small.iterdir()) == [dest.name, manifest.name]
    finally:
        sh("umount", small)


def test_a_discarded_partial_counts_as_free_space_for_zvol_and_lvmthin(images, standins):
    """The same for a pool: a partial zvol's `used`, a partial thin LV's mapped share."""
    zvol = standins.dev / "zvol/rpool/data/guestprep-partial-vm-7-disk-0"
    zvol.parent.mkdir(parents=True)
    _written(zvol, 32 * MiB, 64 * MiB)
    manifest = standins.root / "zvol.json"
    _claimed_by_a_dead_run(manifest, "zvol", "rpool/data/guestprep-partial-vm-7-disk-0", "rpool/data/vm-7-disk-0")
    standins.configure(zfs_available=0)      # full: only the partial's space can hold the copy
    r = host_cli("convert", images["mbr.raw"], "--to", "zvol", "--dest", "rpool/data/vm-7-disk-0",
                 "--manifest", manifest, "--json", "--discard-stale-partial")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["target"]["details"]["reclaimable_bytes"] == 32 * MiB and m["discarded_partial"]["removed"]
    calls = [" ".join(c[:2]) + " " + c[-1] for c in standins.calls()]
    assert calls.index("zfs destroy rpool/data/guestprep-partial-vm-7-disk-0") < \
        calls.index("zfs create rpool/data/guestprep-partial-vm-7-disk-0")

    lv = standins.dev / "pve/guestprep-partial-vm-8-disk-0"
    lv.parent.mkdir(parents=True)
    _written(lv, 32 * MiB, 64 * MiB)
    manifest = standins.root / "lv.json"
    _claimed_by_a_dead_run(manifest, "lvmthin", "pve/guestprep-partial-vm-8-disk-0", "pve/data/vm-8-disk-0")
    standins.configure(pool_size=100 * MiB, data_percent="100.00")
    r = host_cli("convert", images["mbr.raw"], "--to", "lvmthin", "--dest", "pve/data/vm-8-disk-0",
                 "--manifest", manifest, "--json", "--discard-stale-partial")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["target"]["details"]["reclaimable_bytes"] == 32 * MiB and m["discarded_partial"]["removed"]
    # without a partial to discard, the same pool is too full: the space check still works
    r = host_cli("convert", images["mbr.raw"], "--to", "lvmthin", "--dest", "pve/data/vm-9-disk-0",
                 "--manifest", standins.root / "lv9.json", "--discard-stale-partial")
    _bad(r, 2, "needs", "free")


def test_reclaim_touches_only_a_temporary_target_name(tmp_path):
    """A claim is a file on the node: whatever it says, only `*.partial` / guestprep-partial-*
    names are removed."""
    victim = tmp_path / "important.raw"
    victim.write_bytes(b"data")
    manifest = tmp_path / "m.json"
    for partial in (str(victim), "relative.partial", str(tmp_path / "x.qcow2")):
        Path(str(manifest) + ".claim").write_text(json.dumps({
            "schema": "guestprep.host-claim/1", "kind": "raw", "partial": partial,
            "target": partial, "pid": 999999999, "start_ticks": 1, "boot_id": "x"}))
        _bad(host_cli("reclaim", "--manifest", manifest), 2, "not a temporary target name")
    assert victim.read_bytes() == b"data"
    Path(str(manifest) + ".claim").write_text("{not json")
    _bad(host_cli("reclaim", "--manifest", manifest), 2, "not a claim file")
    Path(str(manifest) + ".claim").write_text("")      # killed while writing it: nothing made
    r = host_cli("reclaim", "--manifest", manifest, "--json")
    assert r.returncode == 0 and not Path(str(manifest) + ".claim").exists()
    # a mistyped path is an error, not "nothing to remove"
    _bad(host_cli("reclaim", "--manifest", tmp_path / "nope" / "m.json"), 2, "does not exist")


def test_kill9_of_guestprep_host_alone_takes_qemu_img_with_it(datastore, images, tmp_path):
    dest = tmp_path / "out" / "vm-1-disk-0.raw"
    dest.parent.mkdir()
    proc, qemu = _start_slow(datastore, images, dest, new_session=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while _alive(qemu) and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        assert not _alive(qemu), "qemu-img survived its parent (orphan still writing)"
    finally:
        if _alive(qemu):
            os.kill(qemu, signal.SIGKILL)
    assert not dest.exists()


def test_manifest_records_volume_size_digest_and_the_target_is_renamed(images, tmp_path):
    from hostside.convert import target_digest
    dest = tmp_path / "vm-5-disk-0.raw"
    r = host_cli("convert", images["monolithicSparse"], "--to", "raw", "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["target"]["path"] == str(dest) and m["target"]["size"] == 64 * MiB
    assert m["target"]["digest"] == target_digest(str(dest))
    assert m["target"]["digest"]["algorithm"] == "sha256-data-runs/3"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "vm-5-disk-0.raw", "vm-5-disk-0.raw.guestprep-manifest.json"]


# ------------------------------------------------------------------ 3. grain tables


def _sparse_file(path: Path, *, capacity: int, gd_entries: list[int] | None, gd_offset: int,
                 size: int, grain: int = 8, gtes: int = 512, desc_at: int | None = None):
    header = struct.pack("<4sIIQQQQIQQQB4sH", b"KDMV", 1, 3, capacity, grain,
                         desc_at or 0, 1 if desc_at else 0, gtes, 0, gd_offset, 0, 0,
                         b"\n \r\n", 0)
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(header)
        if desc_at:
            f.seek(desc_at * 512)
            f.write(f'# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n'
                    f'createType="monolithicSparse"\nRW {capacity} SPARSE "{path.name}"\n'
                    .encode())
        if gd_entries:
            f.seek(gd_offset * 512)
            f.write(struct.pack(f"<{len(gd_entries)}I", *gd_entries))
    return path


@pytest.mark.parametrize("n,message", [
    (200_000, "impossible geometry: 200000 grain tables"),   # took 42 s before
    (300, "share the grain table at sector 1700"),
])
def test_a_grain_directory_pointing_every_entry_at_one_table_is_refused_fast(
        tmp_path, n, message):
    # a 1 MiB file whose directory entries all point at one table
    img = _sparse_file(tmp_path / "loop.vmdk", capacity=n * 8 * 512, gd_entries=[1700] * n,
                       gd_offset=1, size=MiB, desc_at=1600)
    r = host_cli("inspect", img, timeout=30)
    _bad(r, 2, message)


def test_a_20kb_file_claiming_2_40_sectors_is_refused(tmp_path):
    img = _sparse_file(tmp_path / "huge.vmdk", capacity=1 << 40, gd_entries=None,
                       gd_offset=2, size=20 * 1024, desc_at=30)
    r = host_cli("inspect", img, timeout=30)
    _bad(r, 2, "impossible geometry")


# ------------------------------------------------------------------ 4. FIFO extents


@pytest.mark.parametrize("etype", ["SPARSE", "FLAT"])
def test_a_fifo_named_as_an_extent_is_refused_by_type(tmp_path, etype):
    os.mkfifo(tmp_path / "pipe.vmdk")
    ct = "twoGbMaxExtentSparse" if etype == "SPARSE" else "monolithicFlat"
    offset = " 0" if etype == "FLAT" else ""
    desc = write_descriptor(tmp_path / "d.vmdk", ct, [f'RW 8 {etype} "pipe.vmdk"{offset}'])
    r = host_cli("inspect", desc, timeout=30)
    _bad(r, 2, "FIFO", "pipe.vmdk")


def test_a_fifo_as_the_parent_disk_is_refused(tmp_path):
    os.mkfifo(tmp_path / "parent.vmdk")
    (tmp_path / "d-flat.vmdk").write_bytes(b"\0" * 4096)
    desc = write_descriptor(tmp_path / "d.vmdk", "vmfsSparse",
                            ['RW 8 VMFSSPARSE "d-flat.vmdk"'], parent_cid="0000abcd",
                            extra='parentFileNameHint="parent.vmdk"')
    r = host_cli("inspect", desc, "--chain", timeout=30)
    _bad(r, 2, "FIFO")


# ------------------------------------------------------------------ 5. output paths first


def test_manifest_in_a_missing_directory_is_refused_before_converting(images, tmp_path):
    dest = tmp_path / "vm-1-disk-0.qcow2"
    r = host_cli("convert", images["mbr.raw"], "--to", "qcow2", "--dest", dest,
                 "--manifest", tmp_path / "no" / "such" / "m.json")
    _bad(r, 2, "manifest's directory does not exist", str(tmp_path / "no" / "such"))
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------ 6. the --insecure hint


@pytest.fixture
def not_tls():
    """A TCP server that answers TLS with plain text: TLS fails with or without verification."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    stop = threading.Event()

    def serve():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                try:
                    conn.recv(4096)
                    conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\nnot tls\n")
                except OSError:
                    pass

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield f"https://127.0.0.1:{srv.getsockname()[1]}/folder/x-flat.vmdk"
    stop.set()
    t.join()
    srv.close()


def test_insecure_hint_only_when_insecure_was_not_given(not_tls):
    r = host_cli("inspect", not_tls, "--insecure", timeout=60)
    _bad(r, 3)
    assert "pass --insecure" not in r.stderr and "verification is off" in r.stderr
    r = host_cli("inspect", not_tls, timeout=60)
    _bad(r, 3, "--insecure knowingly")


# ------------------------------------------------------------------ 6b. VMware data files


def _sesparse(path: Path, size: int = 1300 * 1024) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
        f.write((0xCAFEBABE).to_bytes(8, "little") + (0x200000001).to_bytes(8, "little"))
    return path


def test_a_sesparse_data_file_given_directly_is_refused_naming_its_descriptor(tmp_path):
    data = _sesparse(tmp_path / "web01-000001-sesparse.vmdk")
    write_descriptor(tmp_path / "web01-000001.vmdk", "seSparse",
                     [f'RW {1300 * 1024 // 512} SESPARSE "web01-000001-sesparse.vmdk"'],
                     parent_cid="0000abcd", extra='parentFileNameHint="web01.vmdk"')
    dest = tmp_path / "out.raw"
    r = host_cli("convert", data, "--to", "raw", "--dest", dest)
    _bad(r, 2, "seSparse", str(tmp_path / "web01-000001.vmdk"))
    assert not dest.exists()
    r = host_cli("inspect", data, "--format", "vmdk")
    _bad(r, 2, "seSparse")


def test_a_cowd_data_file_is_refused(tmp_path):
    data = tmp_path / "old-delta.vmdk"
    data.write_bytes(b"COWD" + b"\0" * 4092)
    r = host_cli("inspect", data)
    _bad(r, 2, "COWD", "descriptor")


@pytest.mark.parametrize("key", ["monolithicSparse", "chain-delta"])
def test_format_raw_on_vmware_metadata_needs_an_override(images, tmp_path, key):
    dest = tmp_path / "out.raw"
    r = host_cli("convert", images[key], "--format", "raw", "--to", "raw", "--dest", dest)
    _bad(r, 2, "--raw-despite-vmdk-header", "VMware metadata")
    assert not dest.exists()
    r = host_cli("inspect", images[key], "--format", "raw", "--raw-despite-vmdk-header",
                 "--json")
    assert r.returncode == 0, r.stderr
    assert any("--raw-despite-vmdk-header" in n for n in json.loads(r.stdout)["notes"])


def test_a_remote_sesparse_file_guessed_raw_is_refused(datastore, tmp_path):
    _sesparse(datastore.root / "web01-000001-flat.vmdk")
    r = host_cli("inspect", datastore.url("web01-000001-flat.vmdk"), "--cookie-env",
                 "VC_COOKIE", "--insecure", env=COOKIE_ENV)
    _bad(r, 2, "seSparse")


# ------------------------------------------------------------------ no curl driver


def test_a_missing_curl_driver_names_the_debian_package(datastore, images, tmp_path):
    """Debian's qemu-img without qemu-block-extra says "Unknown driver 'https'"."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "qemu-img"
    fake.write_text(f"#!{sys.executable}\n"
                    "import os, sys\n"
                    "if any('\"https\"' in a or 'driver=https' in a for a in sys.argv):\n"
                    "    print(\"qemu-img: Could not open 'x': Unknown driver 'https'\", file=sys.stderr)\n"
                    "    sys.exit(1)\n"
                    "os.execv('/usr/bin/qemu-img', ['qemu-img'] + sys.argv[1:])\n")
    fake.chmod(0o755)
    sh("cp", "--sparse=always", images["mbr.raw"], datastore.root / "a-flat.vmdk")
    env = dict(COOKIE_ENV, PATH=f"{bin_dir}:{os.environ['PATH']}")
    r = host_cli("inspect", datastore.url("a-flat.vmdk"), "--cookie-env", "VC_COOKIE",
                 "--insecure", env=env)
    _bad(r, 3, "qemu-block-extra", "https (curl) block driver", "Proxmox")
