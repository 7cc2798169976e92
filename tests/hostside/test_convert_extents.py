"""Issue 17: conversion and verification at the cost of the data, not of the virtual size.

Real qemu-img throughout (qemu-io writes the data, a zeroed grain included); a recording
wrapper on PATH (it runs the real qemu-img) shows which qemu-img calls a run makes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostside_support import host_cli, sh
from hostside import convert, image, privdir, storage
from hostside.errors import VerificationFailed

pytestmark = pytest.mark.integration

MiB = 1 << 20
GiB = 1 << 30
# (offset, length, pattern) written into the 64 GiB test disk; grain-aligned and not
WRITES = [(0, 1 * MiB, 0x11), (5 * GiB + 12345, 300000, 0x22), (33 * GiB, 2 * MiB, 0x33),
          (64 * GiB - 64 * 1024, 64 * 1024, 0x44)]


@pytest.fixture(scope="module")
def big_sparse(tmp_path_factory):
    """64 GiB monolithicSparse (zeroed-grain flag on) with ~3.5 MiB of data and one
    zeroed grain between two data grains."""
    root = tmp_path_factory.mktemp("big-sparse")
    disk = root / "big.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "zeroed_grain=on", disk, "64G")
    for off, length, pat in WRITES:
        sh("qemu-io", "-f", "vmdk", "-c", f"write -P {pat} {off} {length}", disk)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 0x55 40G 192k", disk)
    sh("qemu-io", "-f", "vmdk", "-c", f"write -z {40 * GiB + 65536} 64k", disk)  # zeroed grain
    return disk


def _same(a, b, fmt_b) -> bool:
    return subprocess.run(["qemu-img", "compare", "-F", fmt_b, str(a), str(b)],
                          capture_output=True).returncode == 0


@pytest.mark.parametrize("to", ["qcow2", "raw"])
def test_a_big_thin_vmdk_costs_its_data(big_sparse, tmp_path, to):
    before = big_sparse.stat().st_mtime_ns, big_sparse.stat().st_size
    dest = tmp_path / f"big.{to}"
    r = host_cli("convert", big_sparse, "--to", to, "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    # qemu-img read a raw view of the data runs, never the vmdk driver's grain-by-grain walk
    view = m["source_view"]
    # 5 written places, the one at 40G split by its zeroed grain; whole 64 KiB grains
    assert view and view["data_runs"] == 6 and view["data_bytes"] == 3670016
    assert not any('"driver":"vmdk"' in a for a in m["command"])
    # verification read the data (and its neighbourhood), not 64 GiB
    ver = m["verification"]
    assert ver["method"] == "extent-compare/1" and ver["ok"]
    assert ver["compared_bytes"] < 8 * MiB
    assert ver["zero_by_block_status_bytes"] > 63 * GiB
    assert ver["source_map"] == "vmdk grain tables (the view the copy read)"
    assert [r_[0] for r_ in ver["ranges"]][:1] == [0] and ver["ranges_count"] == len(ver["ranges"])
    assert m["measure"]["required"] < 64 * MiB       # space check from the grain tables
    assert _same(big_sparse, dest, to)
    assert (big_sparse.stat().st_mtime_ns, big_sparse.stat().st_size) == before


def test_no_verify_computes_nothing_that_reads_the_target_again(images, tmp_path):
    dest = tmp_path / "nv.raw"
    r = host_cli("convert", images["monolithicSparse"], "--to", "raw", "--dest", dest,
                 "--no-verify", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["verification"] == {"performed": False}
    assert m["target"]["digest"] is None and "--no-verify" in m["target"]["digest_note"]
    assert "verify_s" not in m["timings"] and "digest_s" not in m["timings"]
    # with verification the digest comes from the same pass over the target
    dest2 = tmp_path / "v.raw"
    r = host_cli("convert", images["monolithicSparse"], "--to", "raw", "--dest", dest2, "--json")
    m = json.loads(r.stdout)
    assert m["verification"]["digest"] == "computed in the same pass"
    assert m["target"]["digest"] == convert.target_digest(str(dest2))


RECORDER = """#!{python}
import json, os, sys
with open({log!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:2]) + "\\n")
os.execv({real!r}, [{real!r}] + sys.argv[1:])
"""


def test_a_local_sparse_vmdk_asks_qemu_only_to_copy(tmp_path):
    """Fixed cost: what our parsing knows (size, allocation, partition table) is not asked
    of qemu-img again (each call is a process: 10-20 ms on a loaded node)."""
    disk = tmp_path / "empty.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", disk, "4G")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.jsonl"
    real = subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True,
                          text=True).stdout.strip()
    wrapper = bindir / "qemu-img"
    wrapper.write_text(RECORDER.format(python=sys.executable, log=str(log), real=real))
    wrapper.chmod(0o755)
    env = {"PATH": f"{bindir}:{os.environ['PATH']}"}
    r = host_cli("convert", disk, "--to", "qcow2", "--dest", tmp_path / "o.qcow2",
                 "--no-verify", env=env)
    assert r.returncode == 0, r.stderr
    calls = sorted(json.loads(x)[0] for x in log.read_text().splitlines())
    assert calls == ["--version", "convert"], calls   # no create (convert formats it), info, dd, measure
    made = tmp_path / "o.qcow2"
    assert oct(made.stat().st_mode & 0o777) == "0o640"   # our claimed file, mode kept
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(made)],
                                     capture_output=True, text=True, check=True).stdout)
    assert (info["format"], info["virtual-size"]) == ("qcow2", 4 << 30)
    log.unlink()
    r = host_cli("convert", disk, "--to", "raw", "--dest", tmp_path / "o.raw", env=env)
    assert r.returncode == 0, r.stderr
    calls = sorted(json.loads(x)[0] for x in log.read_text().splitlines())
    assert calls == ["--version", "convert"], calls   # verified from the view's own map


def test_a_local_convert_imports_no_https_or_handoff_machinery(images, tmp_path):
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "hostside.cli", "convert",
                        str(images["monolithicSparse"]), "--to", "raw", "--dest",
                        str(tmp_path / "o.raw"), "--no-verify"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines()
                if line.startswith("import time:")}
    assert not imported & {"ssl", "http.client", "hostside.remote", "guestprep.handoff",
                           "guestprep.target_policy"}, sorted(imported)


def test_a_temporary_manifest_left_by_a_killed_run_never_blocks_the_retry(images, tmp_path):
    dest = tmp_path / "vm-7-disk-0.raw"
    left = Path(str(dest) + ".guestprep-manifest.json.partial")
    left.write_text('{"half": ')                 # what a kill -9 during the write leaves
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    manifest = Path(json.loads(r.stdout)["manifest_path"])
    assert json.loads(manifest.read_text())["verification"]["ok"]
    # only the final manifest was added (our own temporary name is gone)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [dest.name, manifest.name, left.name])


def test_device_and_zvol_manifests_go_to_the_manifest_dir(images, standins, tmp_path):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    mdir = tmp_path / "manifests"
    mdir.mkdir()
    r = subprocess.run([sys.executable, "-m", "hostside.cli", "convert",
                        str(images["mbr.raw"]), "--to", "zvol", "--dest",
                        "rpool/data/vm-8-disk-0", "--json"],
                       capture_output=True, text=True, cwd=cwd,
                       env=dict(os.environ, GUESTPREP_HOST_MANIFEST_DIR=str(mdir),
                                PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["manifest_path"]) == \
        mdir / "rpool_data_vm-8-disk-0.guestprep-manifest.json"
    assert list(cwd.iterdir()) == []
    other = tmp_path / "other"
    other.mkdir()
    r = subprocess.run([sys.executable, "-m", "hostside.cli", "convert",
                        str(images["mbr.raw"]), "--to", "zvol", "--dest",
                        "rpool/data/vm-9-disk-0", "--manifest-dir", str(other), "--json"],
                       capture_output=True, text=True, cwd=cwd,
                       env=dict(os.environ, GUESTPREP_HOST_MANIFEST_DIR=str(mdir),
                                PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert r.returncode == 0, r.stderr
    assert Path(json.loads(r.stdout)["manifest_path"]).parent == other   # the option wins
    assert list(cwd.iterdir()) == []


def _target(path: Path) -> storage.FileTarget:
    t = storage.FileTarget("raw", str(path))
    t.write_path = t.path          # verify reads what qemu wrote (before the rename)
    return t


def test_extent_verification_sees_a_hole_where_the_source_has_data(big_sparse, tmp_path):
    scratch = privdir.PrivateDir()
    try:
        src = image.inspect(str(big_sparse), image.SourceOptions(), scratch)
        good = tmp_path / "good.raw"
        r = host_cli("convert", big_sparse, "--to", "raw", "--dest", good, "--no-verify")
        assert r.returncode == 0, r.stderr
        assert convert.verify(src, _target(good))["ok"]                 # negative control
        holed = tmp_path / "holed.raw"
        sh("cp", "--sparse=always", good, holed)
        sh("fallocate", "--punch-hole", "--offset", str(33 * GiB + MiB), "--length", "4096",
           holed)                                  # zeros where the source holds 0x33
        with pytest.raises(VerificationFailed, match="source holds data"):
            convert.verify(src, _target(holed))
        extra = tmp_path / "extra.raw"
        sh("cp", "--sparse=always", good, extra)
        with open(extra, "r+b") as f:              # data where the source is a hole
            f.seek(20 * GiB)
            f.write(b"stray")
        with pytest.raises(VerificationFailed, match="differs"):
            convert.verify(src, _target(extra))
    finally:
        scratch.close()


def _vmfs_sparse_chain(root: Path) -> Path:
    """An ESXi-style chain: a vmfs base (-flat.vmdk) and a vmfsSparse delta (COWD extent,
    layout as qemu's block/vmdk.c VMDK3Header / vmdk_open_vmdk3 read it: 'COWD', then
    version, flags, disk_sectors, granularity, l1dir_offset, l1dir_size, ... as LE u32;
    L1 -> L2 tables of 4096 entries -> grains of `granularity` sectors). qemu-img cannot
    write COWD, so the delta's one grain is placed by hand."""
    import struct
    size = 64 * MiB
    sectors = size // 512
    flat = root / "web-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(size)
        f.seek(MiB)
        f.write(b"\xab" * 65536)
    head = "# Disk DescriptorFile\nversion=1\n"
    tail = '\n# The Disk Data Base\n#DDB\n\nddb.adapterType = "lsilogic"\n'
    (root / "web.vmdk").write_text(head + 'CID=11111111\nparentCID=ffffffff\n'
                                   'createType="vmfs"\n\n# Extent description\n'
                                   f'RW {sectors} VMFS "web-flat.vmdk"\n' + tail)
    gran, l2_entries = 16, 4096
    l1_size = -(-sectors // (l2_entries * gran))
    with open(root / "web-000001-delta.vmdk", "wb") as f:
        f.write((b"COWD" + struct.pack("<10I", 1, 3, sectors, gran, 1, l1_size, 0, 0, 0, 0))
                .ljust(512, b"\0"))
        f.write(struct.pack("<I", 8).ljust(l1_size * 4, b"\0"))   # L1[0]: L2 table at sector 8
        f.seek(8 * 512 + 256 * 4)
        f.write(struct.pack("<I", 40))                  # guest 2 MiB: grain at sector 40
        f.seek(40 * 512)
        f.write(b"\xcd" * gran * 512)
    delta = root / "web-000001.vmdk"
    delta.write_text(head + 'CID=22222222\nparentCID=11111111\ncreateType="vmfsSparse"\n'
                     'parentFileNameHint="web.vmdk"\n# Extent description\n'
                     f'RW {sectors} VMFSSPARSE "web-000001-delta.vmdk"\n' + tail)
    return delta


def test_a_vmfs_sparse_chain_is_sized_from_its_files_and_verified_by_extents(tmp_path):
    root = tmp_path / "ds"
    root.mkdir()
    delta = _vmfs_sparse_chain(root)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "calls.jsonl"
    real = subprocess.run(["sh", "-c", "command -v qemu-img"], capture_output=True,
                          text=True).stdout.strip()
    (bindir / "qemu-img").write_text(RECORDER.format(python=sys.executable, log=str(log),
                                                     real=real))
    (bindir / "qemu-img").chmod(0o755)
    dest = tmp_path / "web.raw"
    r = host_cli("convert", delta, "--chain", "--to", "raw", "--dest", dest, "--json",
                 env={"PATH": f"{bindir}:{os.environ['PATH']}"})
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    calls = [json.loads(x)[0] for x in log.read_text().splitlines()]
    assert "measure" not in calls, calls          # no whole-chain qemu-img measure
    assert m["measure"]["method"] == "allocated blocks of the chain's files"
    assert m["measure"]["required"] < 8 * MiB
    ver = m["verification"]
    assert ver["method"] == "extent-compare/1"     # base and delta placed by depth
    assert ver["ranges"] == [[MiB, 65536], [2 * MiB, 8192]]
    sh("qemu-io", "-f", "raw", "-c", "read -P 0xab 1M 64k", "-c", "read -P 0xcd 2M 8k",
       "-c", "read -P 0 3M 1M", dest)


def _unwritten_extents(path: Path) -> int:
    import fcntl
    import struct
    from hostside import extents as ext
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(ext._FIEMAP_HEAD.size + 512 * ext._FIEMAP_EXTENT.size)
        ext._FIEMAP_HEAD.pack_into(buf, 0, 0, os.fstat(fd).st_size, 1, 0, 512, 0)
        fcntl.ioctl(fd, ext._FS_IOC_FIEMAP, buf)
        mapped = ext._FIEMAP_HEAD.unpack_from(buf, 0)[3]
        flags = [struct.unpack_from("=I", buf, ext._FIEMAP_HEAD.size + k * ext._FIEMAP_EXTENT.size
                                    + 40)[0] for k in range(mapped)]
        return sum(1 for f in flags if f & ext._FIEMAP_EXTENT_UNWRITTEN)
    finally:
        os.close(fd)


def test_the_digest_of_a_qcow2_does_not_follow_the_page_cache(images, tmp_path):
    """qemu's qcow2 driver zero-fills the rest of a new cluster with fallocate: unwritten
    extents, which ext4/XFS report to SEEK_DATA as data or hole depending on whether their
    (zero) pages are cached. The digest finalize recomputes must not change with that
    (the cutover's finalize refused a fresh volume as 'changed after its conversion')."""
    dest = tmp_path / "vm-1-disk-0.qcow2"
    r = host_cli("convert", images["monolithicSparse"], "--to", "qcow2", "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    stated = json.loads(r.stdout)["target"]["digest"]
    assert _unwritten_extents(dest) > 0          # the case this is about is really here
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)    # cold cache
        assert convert.target_digest(str(dest)) == stated
        while os.read(fd, 1 << 20):                            # every page cached
            pass
        assert convert.target_digest(str(dest)) == stated
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert convert.target_digest(str(dest)) == stated
    finally:
        os.close(fd)


def test_a_file_target_is_flushed_by_one_fsync_of_ours_before_it_is_renamed(
        big_sparse, tmp_path, monkeypatch):
    """qemu-img's writeback mode fdatasyncs three times per new qcow2 L2 table (qemu's
    block/qcow2-cluster.c l2_allocate flushes the refcount and L2 caches), one table per
    512 MiB of virtual disk holding data: the cost that grew with the virtual size. The
    target is written with cache=unsafe and made durable by one fsync of ours, which the
    verification overlaps (it reads the same bytes from the page cache) and which ends
    before the target gets its final name."""
    events = []
    real_fsync, real_rename = os.fsync, storage.rename_noreplace

    def fsync(fd):
        path = os.readlink(f"/proc/self/fd/{fd}")
        real_fsync(fd)
        events.append(("fsynced", path))

    def rename(src, dst):
        events.append(("renamed", src))
        return real_rename(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(storage, "rename_noreplace", rename)
    dest = tmp_path / "big.qcow2"
    scratch = privdir.PrivateDir()
    try:
        src = image.inspect(str(big_sparse), image.SourceOptions(), scratch)
        m = convert.execute(convert.prepare(src, storage.make_target("qcow2", str(dest)),
                                            convert.ConvertOptions()))
    finally:
        scratch.close()
    partial = str(dest) + storage.PARTIAL_SUFFIX
    assert events[:2] == [("fsynced", partial), ("renamed", partial)], events
    assert m["command"][m["command"].index("-t") + 1] == "unsafe"
    assert m["verification"]["ok"] and _same(big_sparse, dest, "qcow2")
    assert m["target"]["digest"] == convert.target_digest(str(dest))


def test_a_failed_flush_fails_the_conversion_and_removes_the_target(
        big_sparse, tmp_path, monkeypatch):
    import errno
    real_fsync = os.fsync

    def fsync(fd):
        if os.readlink(f"/proc/self/fd/{fd}").endswith(storage.PARTIAL_SUFFIX):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    dest = tmp_path / "big.raw"
    scratch = privdir.PrivateDir()
    try:
        src = image.inspect(str(big_sparse), image.SourceOptions(), scratch)
        for verify in (True, False):
            with pytest.raises(convert.ToolFailed, match="flushing the target failed"):
                convert.execute(convert.prepare(src, storage.make_target("raw", str(dest)),
                                                convert.ConvertOptions(verify=verify)))
            assert list(tmp_path.iterdir()) == []
    finally:
        scratch.close()
