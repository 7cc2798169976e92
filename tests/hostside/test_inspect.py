"""inspect on every VMDK subformat, chains, raw/qcow2, and the bad inputs of the issue."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess

import pytest

from hostside_support import host_cli, is_root, sh, write_descriptor

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.mark.parametrize("kind,create_type,extents", [
    ("monolithicSparse", "monolithicSparse", 1),
    ("streamOptimized", "streamOptimized", 1),
    ("monolithicFlat", "monolithicFlat", 1),
    ("twoGbMaxExtentSparse", "twoGbMaxExtentSparse", 3),
    ("twoGbMaxExtentFlat", "twoGbMaxExtentFlat", 3),
    ("vmfs", "vmfs", 1),
    ("vmfsThin", "vmfsThin", 1),
])
def test_inspect_every_subformat(images, kind, create_type, extents):
    r = host_cli("inspect", images[kind], "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["format"] == "vmdk"
    v = doc["vmdk"]
    assert v["create_type"] == create_type
    assert len(v["extents"]) == extents
    assert v["parent_cid"] == "ffffffff"
    assert doc["virtual_size"] == v["virtual_size"]
    expected = (4608 if kind.startswith("twoGb") else 400 if kind.startswith("vmfs") else 64)
    assert doc["virtual_size"] == expected * MiB
    assert doc["actual_size"] > 0
    for e in v["extents"]:
        assert os.path.dirname(e["path"]) == str(images["root"])


def test_inspect_human_output_lists_extents(images):
    r = host_cli("inspect", images["twoGbMaxExtentFlat"])
    assert r.returncode == 0
    assert r.stdout.count("extent RW FLAT") == 3 and "CID" in r.stdout


def test_raw_and_qcow2(images):
    for key, fmt in (("gpt.raw", "raw"), ("qcow2", "qcow2")):
        doc = json.loads(host_cli("inspect", images[key], "--json").stdout)
        assert doc["format"] == fmt and doc["virtual_size"] == 400 * MiB


def test_snapshot_chain_refused_then_accepted(images):
    r = host_cli("inspect", images["chain-delta"], "--json")
    assert r.returncode == 2
    assert "snapshot (delta) disk" in r.stderr and "--chain" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    r = host_cli("inspect", images["chain-delta"], "--chain", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [os.path.basename(p) for p in doc["chain"]] == ["chain-delta.vmdk",
                                                             "chain-base.vmdk"]
    assert doc["vmdk"]["parent"]["cid"] == doc["vmdk"]["parent_cid"]


def test_broken_chain_cid_mismatch(images, tmp_path):
    base = tmp_path / "chain-base.vmdk"
    delta = tmp_path / "chain-delta.vmdk"
    shutil.copyfile(images["chain-base"], base)
    shutil.copyfile(images["chain-delta"], delta)
    sh("qemu-io", "-f", "vmdk", "-c", "write -P 1 0 64k", base)  # new CID on the parent
    r = host_cli("inspect", delta, "--chain")
    assert r.returncode == 2 and "chain is broken" in r.stderr


# --------------------------------------------------------------------------- bad inputs


def _bad(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    for n in needles:
        assert n in r.stderr, r.stderr


def test_extent_pointing_outside_directory(tmp_path):
    d = tmp_path / "vm"
    d.mkdir()
    desc = write_descriptor(d / "evil.vmdk", "vmfs", ['RW 16 VMFS "../../etc/shadow"'])
    _bad(host_cli("inspect", desc), "evil.vmdk:", "outside")
    # a symlink beside the descriptor that leads out is caught too
    os.symlink("/etc/passwd", d / "link-flat.vmdk")
    desc = write_descriptor(d / "sym.vmdk", "vmfs", ['RW 1 VMFS "link-flat.vmdk"'])
    _bad(host_cli("inspect", desc), "outside")


def test_wrong_sizes(tmp_path, images):
    flat = tmp_path / "small-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(MiB)
    desc = write_descriptor(tmp_path / "small.vmdk", "vmfs", ['RW 4096 VMFS "small-flat.vmdk"'])
    _bad(host_cli("inspect", desc), "small.vmdk:", "needs 2097152")
    # a sparse extent whose header capacity disagrees with the descriptor
    s = tmp_path / "s-s001.vmdk"
    sh("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicSparse", s, "1M")
    desc = write_descriptor(tmp_path / "s.vmdk", "twoGbMaxExtentSparse",
                            ['RW 4096 SPARSE "s-s001.vmdk"'])
    _bad(host_cli("inspect", desc), "holds 2048 sectors but the descriptor says 4096")


def test_truncated_sparse_vmdk(tmp_path, images):
    t = tmp_path / "trunc.vmdk"
    shutil.copyfile(images["monolithicSparse"], t)
    os.truncate(t, os.path.getsize(t) // 2)
    _bad(host_cli("inspect", t), "trunc.vmdk", "past the end of the file")
    os.truncate(t, 300)
    _bad(host_cli("inspect", t), "truncated")
    os.truncate(t, 60)
    _bad(host_cli("inspect", t), "truncated sparse header")


def test_missing_extent(tmp_path):
    desc = write_descriptor(tmp_path / "m.vmdk", "monolithicFlat", ['RW 16 FLAT "m-flat.vmdk" 0'])
    _bad(host_cli("inspect", desc), "m-flat.vmdk", "missing")


def test_corrupted_grain_table(tmp_path, images):
    c = tmp_path / "gt.vmdk"
    shutil.copyfile(images["monolithicSparse"], c)
    with open(c, "r+b") as f:
        hdr = f.read(512)
        gd_offset = struct.unpack_from("<Q", hdr, 56)[0]
        f.seek(gd_offset * 512)
        first_gt = struct.unpack("<I", f.read(4))[0]
        f.seek(first_gt * 512 + 8)  # third grain table entry of the first table
        f.write(struct.pack("<I", 0x7FFFFFF0))
    _bad(host_cli("inspect", c), "corrupted grain table")
    with open(c, "r+b") as f:  # and a grain directory entry pointing nowhere
        f.seek(gd_offset * 512)
        f.write(struct.pack("<I", 0x7FFFFFF0))
    _bad(host_cli("inspect", c), "corrupted grain directory")


def test_empty_directory_nonexistent(tmp_path):
    e = tmp_path / "empty.vmdk"
    e.touch()
    _bad(host_cli("inspect", e), "empty")
    _bad(host_cli("inspect", tmp_path), "directory")
    _bad(host_cli("inspect", tmp_path / "nope.vmdk"), "no such file")


@pytest.mark.parametrize("tail,ok", [
    (b"\0\n" + b"\0" * 37, True),     # what qemu-img 7.2 left, byte for byte (see below)
    (b"\0" * 40, True),                 # the ordinary sector padding
    (b"\0RW 8 VMFS \"other-flat.vmdk\"\n", False),   # text qemu would silently skip
], ids=["qemu-cid-race-tail", "sector-padding", "hidden-extent-after-nul"])
def test_a_descriptor_ends_at_a_nul_only_when_nothing_follows(tmp_path, tail, ok):
    """qemu-img convert -o subformat=twoGbMaxExtentFlat, with the machine busy, once wrote
    a descriptor ending 'ddb.toolsVersion = "2147483647"\\n\\0\\n\\0...' (two of its
    concurrent first writes each rewrote the CID: block/vmdk.c vmdk_write_cid). CI refused
    qemu's own output as 'NUL bytes'; qemu reads the text up to the first NUL."""
    flat = tmp_path / "d-flat.vmdk"
    flat.write_bytes(b"\0" * 4096)
    desc = write_descriptor(tmp_path / "d.vmdk", "vmfs", ['RW 8 VMFS "d-flat.vmdk"'])
    with open(desc, "ab") as f:
        f.write(tail)
    r = host_cli("inspect", desc, "--json")
    if ok:
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["virtual_size"] == 4096
    else:
        _bad(r, "d.vmdk", "NUL")


def test_garbage_descriptor(tmp_path):
    g = tmp_path / "g.vmdk"
    g.write_text("# Disk DescriptorFile\nthis is not a descriptor line\n")
    _bad(host_cli("inspect", g), "g.vmdk:2", "unparseable")


def test_unreadable_source(tmp_path, images):
    src = tmp_path / "secret.raw"
    shutil.copyfile(images["mbr.raw"], src)
    src.chmod(0o600)
    if is_root():
        # root reads anything: run the tool as nobody, like an unprivileged operator
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv missing")
        tmp_path.chmod(0o755)
        r = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                            os.sys.executable, "-m", "hostside.cli", "inspect", str(src)],
                           capture_output=True, text=True,
                           env=dict(os.environ, HOME="/nonexistent"))
    else:
        src.chmod(0)
        r = host_cli("inspect", src)
    _bad(r, "secret.raw", "permission denied")


def test_qemu_reads_our_validated_descriptor_not_the_original(tmp_path):
    """qemu 7.2 counts an extent twice when a blank line precedes it. qemu now only ever
    reads our validated copy of a descriptor (no blank lines, absolute checked extent
    paths), so it sees exactly the extents we parsed; sizes are still cross-checked."""
    flat = tmp_path / "q-flat.vmdk"
    with open(flat, "wb") as f:
        f.truncate(4096)
    desc = tmp_path / "q.vmdk"
    desc.write_text('# Disk DescriptorFile\nversion=1\nCID=1234abcd\nparentCID=ffffffff\n'
                    'createType="vmfs"\n\nRW 8 VMFS "q-flat.vmdk"\n')
    r = host_cli("inspect", desc, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["virtual_size"] == 4096


def test_qcow2_backing_file_must_sit_beside_it(tmp_path):
    outside = tmp_path / "outside"
    inside = tmp_path / "vm"
    outside.mkdir()
    inside.mkdir()
    sh("qemu-img", "create", "-q", "-f", "raw", outside / "base.raw", "1M")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "../outside/base.raw", "-F", "raw",
       inside / "top.qcow2")
    _bad(host_cli("inspect", inside / "top.qcow2"), "backing file", "--chain")
    _bad(host_cli("inspect", inside / "top.qcow2", "--chain"), "lies outside")
    sh("qemu-img", "create", "-q", "-f", "raw", inside / "base.raw", "1M")
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw",
       inside / "ok.qcow2")
    assert host_cli("inspect", inside / "ok.qcow2", "--chain").returncode == 0
