"""convert: real qemu-img into qcow2/raw files, a loop device, and zvol/LVM-thin via
recording stand-ins; storage rules; verification; manifests; cleanup."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from hostside_support import blockdev, host_cli, is_root, sh
from hostside import cli, convert, image, remote, storage
from hostside.errors import VerificationFailed

pytestmark = pytest.mark.integration

MiB = 1 << 20


def _fingerprint(paths):
    """Content hash of small files and (size, mtime) of every file: sources never change."""
    out = {}
    for p in paths:
        st = os.stat(p)
        digest = None
        if st.st_size < 80 * MiB:
            digest = hashlib.sha256(Path(p).read_bytes()).hexdigest()
        out[p] = (st.st_size, st.st_mtime_ns, digest)
    return out


def _source_files(path):
    return sorted(str(p) for p in Path(path).parent.glob(Path(path).stem + "*"))


def _same(a, b, fmt_b):
    r = subprocess.run(["qemu-img", "compare", "-F", fmt_b, str(a), str(b)],
                       capture_output=True, text=True)
    return r.returncode == 0


@pytest.mark.parametrize("key", ["monolithicSparse", "streamOptimized", "monolithicFlat",
                                 "twoGbMaxExtentSparse", "twoGbMaxExtentFlat", "vmfs",
                                 "vmfsThin", "qcow2", "gpt.raw"])
@pytest.mark.parametrize("to", ["qcow2", "raw"])
def test_convert_every_input(images, tmp_path, key, to):
    src = images[key]
    before = _fingerprint(_source_files(src))
    dest = tmp_path / f"vm-100-disk-0.{to}"
    r = host_cli("convert", src, "--to", to, "--dest", dest, "--json", "--progress", "json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    ver = m["verification"]
    assert ver["ok"]
    if key == "streamOptimized":   # compressed grains have no file offset: qemu-img compare
        assert ver["method"] == "qemu-img compare" and ver["compare"]["rc"] == 0
    else:                          # data compared by offset, the rest zero by block status
        assert ver["method"] == "extent-compare/1" and ver["compared_bytes"] > 0
        assert ver["compared_bytes"] + ver["zero_by_block_status_bytes"] >= m["source"]["virtual_size"]
    if to == "qcow2":
        assert m["verification"]["check"]["corruptions"] == 0
    # independent check with plain qemu-img, and the pristine disk it was built from
    pristine = images["gpt.raw" if key in ("vmfs", "vmfsThin", "qcow2", "gpt.raw")
                      else "mbr.raw"]
    assert _same(pristine, dest, to)
    on_disk = json.loads(Path(m["manifest_path"]).read_text())
    assert on_disk["target"]["path"] == str(dest) and on_disk["source"]["format"]
    assert Path(m["manifest_path"]).parent == tmp_path
    cmd = m["command"]
    if to == "qcow2":    # formatted by this qemu-img convert (zero-init), no `create` first
        assert cmd[cmd.index("-O") + 1] == "qcow2" and cmd[-1] == str(dest) + ".partial"
        assert "-n" not in cmd and "--target-is-zero" not in cmd and "-S" in cmd
    else:
        assert "--target-is-zero" in cmd and "-n" in cmd and "-S" in cmd
    # files: qemu's flushes off (one per new qcow2 L2 table), one fsync of ours instead
    assert cmd[cmd.index("-t") + 1] == "unsafe"
    assert ("-W" in cmd) == (to == "raw")
    for k in ("inspect_s", "audit_s", "space_check_s", "convert_s", "verify_s", "manifest_s"):
        assert k in m["timings"]
    # the digest of the target as stored, computed in the verification pass
    assert m["target"]["digest"] == convert.target_digest(str(dest))
    events = [json.loads(x) for x in r.stderr.splitlines() if x.startswith("{")]
    pcts = [e["percent"] for e in events if e["event"] == "progress"]
    assert pcts and pcts[-1] == 100.0 and pcts == sorted(pcts)
    assert [e["phase"] for e in events if e["event"] == "phase"] == [
        "inspect", "audit", "space_check", "convert", "verify", "manifest"]
    assert events[-1]["event"] == "done" and set(events[-1]["timings"]) >= {"convert_s", "verify_s"}
    # sparse: the allocation follows the data, not the virtual size
    assert m["target"]["allocated_bytes"] < 200 * MiB
    assert _fingerprint(_source_files(src)) == before


def test_chain_through_top_image_and_compression(images, tmp_path):
    dest = tmp_path / "chain.qcow2"
    r = host_cli("convert", images["chain-delta"], "--to", "qcow2", "--dest", dest)
    assert r.returncode == 2 and not dest.exists()
    r = host_cli("convert", images["chain-delta"], "--chain", "--to", "qcow2", "--dest", dest,
                 "--compress")
    assert r.returncode == 0, r.stderr
    assert "verified: yes" in r.stdout
    # the delta's own write and the base's partitions are both there
    sh("qemu-io", "-f", "qcow2", "-c", "read -P 0xab 40M 1M", dest)
    assert _same(images["chain-delta"], dest, "qcow2")
    m = json.loads((tmp_path / "chain.qcow2.guestprep-manifest.json").read_text())
    assert "-c" in m["command"] and "-W" not in m["command"]
    assert len(m["source"]["chain"]) == 2


def test_existing_target_and_manifest_are_never_overwritten(images, tmp_path):
    dest = tmp_path / "taken.qcow2"
    dest.write_bytes(b"precious")
    r = host_cli("convert", images["mbr.raw"], "--to", "qcow2", "--dest", dest)
    assert r.returncode == 2 and "already exists" in r.stderr
    assert dest.read_bytes() == b"precious"
    d2 = tmp_path / "free.raw"
    Path(str(d2) + ".guestprep-manifest.json").write_text("{}")
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", d2)
    assert r.returncode == 2 and "manifest already exists" in r.stderr and not d2.exists()


def test_free_space_is_checked_before_starting(images, tmp_path):
    if not is_root():
        pytest.skip("needs root to mount a small tmpfs")
    data = tmp_path / "data.raw"
    data.write_bytes(os.urandom(8 * MiB))
    small = tmp_path / "small"
    small.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", small)
    try:
        r = host_cli("convert", data, "--to", "qcow2", "--dest", small / "d.qcow2")
        assert r.returncode == 2 and "free" in r.stderr
        assert list(small.iterdir()) == []
    finally:
        sh("umount", small)


def test_qcow2_on_zfs_is_refused_unless_overridden(images, tmp_path, monkeypatch, capsys):
    # ZFS cannot run here: only the filesystem-type lookup is replaced.
    monkeypatch.setattr(storage, "mount_fstype", lambda path: ("zfs", "/rpool/data"))
    dest = tmp_path / "d.qcow2"
    assert cli.main(["convert", str(images["mbr.raw"]), "--to", "qcow2", "--dest",
                     str(dest)]) == 2
    err = capsys.readouterr().err
    assert "never qcow2 on ZFS" in err and "--to zvol" in err and not dest.exists()
    assert cli.main(["convert", str(images["mbr.raw"]), "--to", "qcow2", "--dest", str(dest),
                     "--allow-qcow2-on-zfs"]) == 0
    assert "overridden" in capsys.readouterr().err
    # raw files on ZFS are fine
    assert cli.main(["convert", str(images["mbr.raw"]), "--to", "raw", "--dest",
                     str(tmp_path / "d.raw")]) == 0


def test_verify_catches_a_different_target(images, tmp_path):
    secrets = remote.SecretDir.create()
    try:
        src = image.inspect(str(images["mbr.raw"]), image.SourceOptions(), secrets)
        other = tmp_path / "other.raw"
        sh("cp", "--sparse=always", images["mbr.raw"], other)
        with open(other, "r+b") as f:
            f.seek(30 * MiB)
            f.write(b"bit rot")
        target = storage.FileTarget("raw", str(other))
        target.write_path = target.path   # verify reads what qemu wrote (before the rename)
        with pytest.raises(VerificationFailed, match="differs"):
            convert.verify(src, target)
        target = storage.FileTarget("raw", str(images["mbr.raw"]))  # negative control
        target.write_path = target.path
        assert convert.verify(src, target)["ok"]
    finally:
        secrets.close()


# --------------------------------------------------------------------------- loop device


@pytest.fixture
def loopdev(tmp_path):
    if not is_root():
        pytest.skip("loop devices need root")
    backing = tmp_path / "loop.img"
    with open(backing, "wb") as f:
        f.truncate(80 * MiB)
    dev = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True,
                         text=True)
    if dev.returncode != 0:
        pytest.skip(f"losetup failed: {dev.stderr.strip()}")
    yield dev.stdout.strip()
    subprocess.run(["losetup", "-d", dev.stdout.strip()])


def test_raw_onto_loop_device(images, tmp_path, loopdev):
    assert blockdev(loopdev)
    manifest = tmp_path / "loop.json"
    r = host_cli("convert", images["monolithicSparse"], "--to", "raw", "--dest", loopdev,
                 "--manifest", manifest, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    cmd = m["command"]
    assert cmd[cmd.index("-t") + 1] == "none"          # O_DIRECT on block targets
    assert "--target-is-zero" not in cmd               # an existing device is not known-zero
    assert m["target"]["block_device"] and m["verification"]["ok"]
    assert subprocess.run(["qemu-img", "compare", "-F", "raw", str(images["mbr.raw"]),
                           loopdev], capture_output=True).returncode == 0
    # the device now holds a partition table: a second run refuses to overwrite it
    r = host_cli("convert", images["mbr.raw"], "--to", "raw", "--dest", loopdev,
                 "--manifest", tmp_path / "again.json")
    assert r.returncode == 2 and "already holds data" in r.stderr
    r = host_cli("convert", images["gpt.raw"], "--to", "raw", "--dest", loopdev,
                 "--manifest", tmp_path / "small.json")
    assert r.returncode == 2 and "the image needs" in r.stderr


# --------------------------------------------------------------------------- ZFS / LVM-thin


def test_zvol_through_recording_zfs(images, standins):
    r = host_cli("convert", images["monolithicSparse"], "--to", "zvol", "--dest",
                 "rpool/data/vm-100-disk-0", "--manifest", standins.root / "m.json", "--json")
    assert r.returncode == 0, r.stderr
    calls = standins.calls()
    create = [c for c in calls if c[:2] == ["zfs", "create"]]
    # written under a temporary name, renamed only after verification
    assert create == [["zfs", "create", "-s", "-V", str(64 * MiB), "-o",
                       "volblocksize=16384", "rpool/data/guestprep-partial-vm-100-disk-0"]]
    assert [c for c in calls if c[:2] == ["zfs", "rename"]] == [
        ["zfs", "rename", "rpool/data/guestprep-partial-vm-100-disk-0", "rpool/data/vm-100-disk-0"]]
    # checks happen before the create: existence, space, pool layout
    names = [" ".join(c[:2]) for c in calls]
    assert names.index("zfs list") < names.index("zfs get") < names.index("zfs create") \
        < names.index("zfs rename")
    assert "zpool get" in names and "zpool status" in names
    dev = standins.dev / "zvol/rpool/data/vm-100-disk-0"
    assert _same(images["mbr.raw"], dev, "raw")
    m = json.loads(r.stdout)
    assert "--target-is-zero" in m["command"] and "-W" in m["command"]
    assert m["target"]["details"]["volblocksize"] == 16384
    # a second run must not touch the existing zvol
    r = host_cli("convert", images["mbr.raw"], "--to", "zvol", "--dest",
                 "rpool/data/vm-100-disk-0", "--manifest", standins.root / "m2.json")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert len([c for c in standins.calls() if c[:2] == ["zfs", "create"]]) == 1


def test_zvol_padding_warning_and_space_refusal(images, standins):
    status = ("  pool: tank\n state: ONLINE\nconfig:\n\n\tNAME        STATE\n"
              "\ttank        ONLINE\n\t  raidz1-0  ONLINE\n\t    /dev/sda  ONLINE\n"
              "\t    /dev/sdb  ONLINE\n\t    /dev/sdc  ONLINE\n\tlogs\n\t  /dev/nvme0n1 ONLINE\n"
              "\nerrors: No known data errors\n")
    standins.configure(zpool_status=status, ashift=12)
    r = host_cli("convert", images["mbr.raw"], "--to", "zvol", "--dest", "tank/vm-1-disk-0",
                 "--volblocksize", "8k", "--manifest", standins.root / "m.json", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    d = m["target"]["details"]
    assert (d["raidz_parity"], d["raidz_width"], d["ashift"]) == (1, 3, 12)
    assert d["padding_overhead"] == pytest.approx(1 / 3, abs=0.01)
    assert any("33%" in w and "raidz1 of 3 disks" in w for w in m["target"]["warnings"])
    standins.configure(zfs_available=1 * MiB)
    r = host_cli("convert", images["mbr.raw"], "--to", "zvol", "--dest", "tank/vm-2-disk-0")
    assert r.returncode == 2 and "available" in r.stderr
    assert not [c for c in standins.calls() if c[-1] == "tank/vm-2-disk-0" and c[1] == "create"]


def test_zvol_bad_names_never_reach_zfs(images, standins):
    for bad in ("-oops/x", "rpool", "rpool/../x", "rpool/a b", "rpool/x@snap"):
        r = host_cli("convert", images["mbr.raw"], "--to", "zvol", "--dest", bad)
        assert r.returncode == 2, bad
    assert standins.calls() == []


def test_lvmthin_through_recording_lvm(images, standins):
    r = host_cli("convert", images["vmfs"], "--to", "lvmthin", "--dest",
                 "pve/data/vm-101-disk-0", "--manifest", standins.root / "m.json", "--json")
    assert r.returncode == 0, r.stderr
    create = [c for c in standins.calls() if c[0] == "lvcreate"]
    assert create == [["lvcreate", "-q", "-V", f"{400 * MiB}b", "-T", "pve/data", "-n",
                       "guestprep-partial-vm-101-disk-0"]]
    assert [c for c in standins.calls() if c[0] == "lvrename"] == [
        ["lvrename", "-q", "pve", "guestprep-partial-vm-101-disk-0", "vm-101-disk-0"]]
    assert _same(images["gpt.raw"], standins.dev / "pve/vm-101-disk-0", "raw")
    m = json.loads(r.stdout)
    assert "--target-is-zero" in m["command"] and m["target"]["details"]["zeroing"]
    # a pool without zeroing: qemu must write the zeros itself
    standins.configure(pool_attr="twi-aot---")
    r = host_cli("convert", images["vmfs"], "--to", "lvmthin", "--dest",
                 "pve/data/vm-102-disk-0", "--manifest", standins.root / "m2.json", "--json")
    assert r.returncode == 0, r.stderr
    assert "--target-is-zero" not in json.loads(r.stdout)["command"]
    standins.configure(pool_attr="-wi-a-----")
    r = host_cli("convert", images["vmfs"], "--to", "lvmthin", "--dest", "pve/data/vm-103-disk-0")
    assert r.returncode == 2 and "not a thin pool" in r.stderr


def test_missing_qemu_img_is_exit_3(images, tmp_path):
    env = {"PATH": str(tmp_path)}  # nothing on PATH but python via sys.executable
    r = host_cli("convert", images["mbr.raw"], "--to", "zvol", "--dest", "rpool/d/vm-1-disk-0",
                 env=env)
    assert r.returncode == 3 and "qemu-img is not installed" in r.stderr


# --------------------------------------------------------------------------- pure helpers


@pytest.mark.parametrize("vbs,parity,width,ashift,expected", [
    (8192, 1, 3, 12, 1 / 3), (16384, 1, 3, 12, 0.0), (16384, 2, 6, 12, 0.0),
    (8192, 2, 6, 12, 1.0), (4096, 0, 0, 12, 0.0), (4096, 0, 0, 13, 1.0),
])
def test_raidz_overhead(vbs, parity, width, ashift, expected):
    got = storage.raidz_overhead(vbs, storage.PoolLayout(ashift, parity, width))
    assert got == pytest.approx(expected, abs=1e-6)


def test_parse_zpool_status_widest_raidz_only_data_vdevs():
    text = ("config:\n\n\tNAME STATE\n\tt ONLINE\n\t  raidz2-0 ONLINE\n\t    a x\n\t    b x\n"
            "\t    c x\n\t    d x\n\t  raidz2-1 ONLINE\n\t    e x\n\t    f x\n\t    g x\n"
            "\t    h x\n\t    i x\n\tcache\n\t  raidz3-9 x\n\t    j x\nerrors: none\n")
    assert storage.parse_zpool_status(text) == (2, 5)
    assert storage.parse_zpool_status("config:\n\tNAME\n\tt ONLINE\n\t  mirror-0\n") == (0, 0)
