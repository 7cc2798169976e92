"""Clear messages for VMware files opened the wrong way (issue 17): each case through the
real `guestprep-host` CLI, with real qemu-img behind it. A refusal names the file and the
cause, says what to do, exits 2 without a traceback or qemu's own text, and writes nothing;
where the advice is "open X instead" the test follows it and converts.

Each test failed before its fix (qemu assertion text, "descriptor has no createType",
"ESX vmfsSparse delta extent" without the word snapshot or the descriptor's name, a
descriptor read as a 512-byte raw disk, "/dev/shm/...: not a device")."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from hostside_support import host_cli, sh, write_descriptor

pytestmark = pytest.mark.integration

MiB = 1 << 20
SECTOR = 512


def _bad(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Assertion" not in r.stderr
    assert "qemu-img" not in r.stderr, r.stderr        # our words, not qemu's
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


def _refused_both_ways(src, tmp_path, *needles, extra=()):
    """inspect and convert refuse alike; convert leaves nothing behind."""
    _bad(host_cli("inspect", src, *extra), *needles)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    dest = out / "vm-1-disk-0.qcow2"
    _bad(host_cli("convert", src, *extra, "--to", "qcow2", "--dest", dest), *needles)
    assert list(out.iterdir()) == []


def _flat_disk(directory: Path, images, name="web01") -> tuple[Path, int]:
    flat = directory / f"{name}-flat.vmdk"
    sh("cp", "--sparse=always", images["mbr.raw"], flat)
    return flat, flat.stat().st_size // SECTOR


# ------------------------------------------------------------------ RDONLY / NOACCESS


@pytest.mark.parametrize("layout", ["one", "mixed"])
def test_rdonly_extents_are_explained_and_the_advice_converts(images, tmp_path, layout):
    """qemu reads only RW extents (block/vmdk.c, vmdk_parse_extents): with every extent
    RDONLY qemu 7.2 stopped on `Assertion s->num_extents failed`; with one of two it saw
    half the disk."""
    flat, sectors = _flat_disk(tmp_path, images)
    if layout == "one":
        lines = [f'RDONLY {sectors} FLAT "{flat.name}" 0']
    else:
        half = sectors // 2
        lines = [f'RW {half} FLAT "{flat.name}" 0',
                 f'RDONLY {sectors - half} FLAT "{flat.name}" {half}']
    desc = write_descriptor(tmp_path / "web01.vmdk", "twoGbMaxExtentFlat", lines)
    line = desc.read_text().splitlines().index(lines[-1]) + 1
    _refused_both_ways(desc, tmp_path, f"{desc}:{line}", "RDONLY", "read but never write",
                       "sed 's/^RDONLY /RW /' web01.vmdk > web01-rw.vmdk")
    # the advice, exactly as printed: a copy marked RW converts the same bytes
    with open(tmp_path / "web01-rw.vmdk", "wb") as f:
        subprocess.run(["sed", "s/^RDONLY /RW /", "web01.vmdk"], stdout=f, cwd=tmp_path,
                       check=True)
    dest = tmp_path / "out" / "copy.raw"
    r = host_cli("convert", tmp_path / "web01-rw.vmdk", "--to", "raw", "--dest", dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == Path(images["mbr.raw"]).read_bytes()


def test_noaccess_extent_is_refused_by_name(images, tmp_path):
    flat, sectors = _flat_disk(tmp_path, images)
    desc = write_descriptor(tmp_path / "web01.vmdk", "monolithicFlat",
                            [f'NOACCESS {sectors} FLAT "{flat.name}" 0'])
    _refused_both_ways(desc, tmp_path, "NOACCESS", "no access", str(desc))


def test_a_zero_extent_is_named_not_a_size_mismatch(images, tmp_path):
    """qemu skips extent lines without a file (vmdk_parse_extents): before, this said
    'qemu sees 67108864 bytes but the descriptor's extents add up to 68157440'."""
    flat, sectors = _flat_disk(tmp_path, images)
    lines = [f'RW {sectors} FLAT "{flat.name}" 0', "RW 2048 ZERO"]
    desc = write_descriptor(tmp_path / "web01.vmdk", "monolithicFlat", lines)
    line = desc.read_text().splitlines().index("RW 2048 ZERO") + 1
    _refused_both_ways(desc, tmp_path, f"{desc}:{line}", "ZERO extent", "no ZERO extents")


@pytest.mark.parametrize("create_type,extent,message", [
    # ESXi physical/virtual RDM descriptors (extent types as qemu's vmdk.c and VMware list)
    ("vmfsPassthroughRawDeviceMap", 'RW 209715200 VMFSRDM "db01-rdmp.vmdk"',
     "raw device mapping"),
    ("vmfsRawDeviceMap", 'RW 209715200 VMFSRAW "db01-rdm.vmdk"', "raw device mapping"),
    # Workstation's physical-disk descriptor names the host's disk
    ("fullDevice", 'RW 209715200 FLAT "\\\\.\\PhysicalDrive1" 0', "physical-disk passthrough"),
    ("partitionedDevice", 'RW 63 FLAT "/dev/sdb" 0', "physical-disk passthrough"),
])
def test_rdm_and_passthrough_descriptors_are_named_by_their_type(tmp_path, create_type,
                                                                 extent, message):
    """Before: "unsupported extent type 'VMFSRDM'" / "extent '/dev/sdb' is an absolute
    path": the extent line was judged before the createType said what the file is."""
    desc = write_descriptor(tmp_path / "db01.vmdk", create_type, [extent])
    line = desc.read_text().splitlines().index(f'createType="{create_type}"') + 1
    _refused_both_ways(desc, tmp_path, f"{desc}:{line}", message)


# ------------------------------------------------------------------ split sparse pieces


def test_each_piece_of_a_split_sparse_disk_names_its_descriptor(images, tmp_path):
    """qemu writes a (zero-filled) descriptor area into every piece; we read that as
    'descriptor has no createType'."""
    desc = Path(images["twoGbMaxExtentSparse"])
    pieces = sorted(desc.parent.glob(desc.stem + "-s0*.vmdk"))
    assert len(pieces) == 3
    text = desc.read_text().splitlines()
    for n, piece in enumerate(pieces, 1):
        line = next(i for i, t in enumerate(text, 1) if f'"{piece.name}"' in t)
        _refused_both_ways(piece, tmp_path, str(piece), f"extent {n} of 3",
                           f"twoGbMaxExtentSparse disk described by {desc} (line {line})",
                           f"Open the descriptor {desc} instead")
    # the advice: the descriptor itself converts
    dest = tmp_path / "whole.qcow2"
    assert host_cli("convert", desc, "--to", "qcow2", "--dest", dest).returncode == 0


def test_a_piece_without_its_descriptor_names_the_file_to_fetch(images, tmp_path):
    desc = Path(images["twoGbMaxExtentSparse"])
    alone = tmp_path / "alone"
    alone.mkdir()
    piece = alone / f"{desc.stem}-s002.vmdk"
    sh("cp", "--sparse=always", desc.parent / piece.name, piece)
    _refused_both_ways(piece, tmp_path, "split sparse disk", f"its descriptor is {desc.name}",
                       f"not in {alone}")


def test_a_vmware_style_piece_without_a_descriptor_area_names_its_place(images, tmp_path):
    """VMware's -s00N extents carry descriptorOffset 0 (VMware Virtual Disk Format 5.0,
    SparseExtentHeader): the same message as qemu's pieces, with the extent number."""
    src = Path(images["twoGbMaxExtentSparse"])
    for p in src.parent.glob(src.stem + "*"):
        sh("cp", "--sparse=always", p, tmp_path / p.name)
    piece = tmp_path / f"{src.stem}-s003.vmdk"
    with open(piece, "r+b") as f:       # descriptorOffset, descriptorSize (u64 at 28, 36)
        f.seek(28)
        f.write(struct.pack("<QQ", 0, 0))
    _refused_both_ways(piece, tmp_path, "extent 3 of 3", str(tmp_path / src.name))


def test_a_split_flat_piece_is_named_for_the_raw_path(images):
    """For image.inspect to call before reading a sniffed raw file (proposal h4-1): a
    -f002.vmdk is 2 GiB of a 4.5 GiB disk; a vmfs -flat.vmdk is the whole disk."""
    from hostside import vmdk
    from hostside.errors import InputError
    desc = Path(images["twoGbMaxExtentFlat"])
    piece = desc.parent / f"{desc.stem}-f002.vmdk"
    with pytest.raises(InputError, match=r"extent 2 of 3 of the twoGbMaxExtentFlat disk "
                                         rf"described by {desc} \(line 9\)"):
        vmdk.refuse_extent_piece(str(piece), str(piece))
    whole = Path(images["vmfs"]).parent / "gpt-vmfs-flat.vmdk"
    vmdk.refuse_extent_piece(str(whole), str(whole))      # no error: the whole disk


def test_a_change_tracking_file_is_named_for_the_raw_path(images, tmp_path):
    """ESXi with CBT: version=3 and changeTrackPath (VMware VDDK programming guide);
    the -ctk.vmdk holds block sequence numbers, not data."""
    from hostside import vmdk
    from hostside.errors import InputError
    flat, sectors = _flat_disk(tmp_path, images)
    (tmp_path / "web01-ctk.vmdk").write_bytes(bytes(4096))   # content does not matter
    desc = write_descriptor(tmp_path / "web01.vmdk", "vmfs",
                            [f'RW {sectors} VMFS "{flat.name}"'],
                            extra='# Change Tracking File\nchangeTrackPath="web01-ctk.vmdk"')
    line = desc.read_text().splitlines().index('changeTrackPath="web01-ctk.vmdk"') + 1
    ctk = str(tmp_path / "web01-ctk.vmdk")
    with pytest.raises(InputError, match=rf"changed-block-tracking file of {desc} "
                                         rf"\(its changeTrackPath, line {line}\)"):
        vmdk.refuse_extent_piece(ctk, ctk)
    vmdk.refuse_extent_piece(str(flat), str(flat))         # the disk's data: no error
    r = host_cli("inspect", desc, "--json")                # and the descriptor reads
    assert r.returncode == 0, r.stderr


def test_a_remote_split_piece_is_refused_as_a_piece(images, datastore, tmp_path):
    desc = Path(images["twoGbMaxExtentSparse"])
    sh("cp", "--sparse=always", desc.parent / f"{desc.stem}-s001.vmdk",
       datastore.root / "web01-s001.vmdk")
    r = host_cli("inspect", datastore.url("web01-s001.vmdk"), "--format", "vmdk",
                 "--cookie-env", "VC_COOKIE", "--insecure",
                 env={"VC_COOKIE": datastore.cookie})
    _bad(r, "without an embedded descriptor", "descriptor (.vmdk)")


# ------------------------------------------------------------------ ESXi snapshot deltas

# COWD as ESXi writes a vmfsSparse redo log (VMware Virtual Disk Format 1.1, "ESX Server
# Sparse Extents"; qemu/qemu block/vmdk.c, vmdk_open_vmfs_sparse): magic 'COWD', then
# little-endian u32 version 1, flags 3, capacity (sectors), grain size 1 sector, grain
# directory offset (sectors), directory entries, next free sector; a 4-sector header;
# grain tables of 4096 u32 entries (0: not in this layer, read the parent).
GT_ENTRIES = 4096


def write_cowd(path: Path, sectors: int, writes: dict[int, bytes], *, version=1, grain=1):
    l1_entries = -(-sectors // (GT_ENTRIES * grain))
    l1_sectors = -(-(l1_entries * 4) // SECTOR)
    l1 = [0] * l1_entries
    tables: dict[int, list[int]] = {}
    nxt = 4 + l1_sectors
    for s in sorted({s // GT_ENTRIES for s in writes}):
        l1[s] = nxt
        tables[s] = [0] * GT_ENTRIES
        nxt += GT_ENTRIES * 4 // SECTOR
    data = b""
    for s, block in sorted(writes.items()):
        tables[s // GT_ENTRIES][s % GT_ENTRIES] = nxt
        data += block
        nxt += 1
    header = b"COWD" + struct.pack("<10I", version, 3, sectors, grain, 4, l1_entries, nxt,
                                   0, 0, 0)
    with open(path, "wb") as f:
        f.write(header.ljust(4 * SECTOR, b"\0"))
        f.write(struct.pack(f"<{l1_entries}I", *l1).ljust(l1_sectors * SECTOR, b"\0"))
        for t in sorted(tables):
            f.write(struct.pack(f"<{GT_ENTRIES}I", *tables[t]))
        f.write(data)
    return path


@pytest.fixture
def esxi_snapshot(images, tmp_path):
    """web01.vmdk (vmfs) <- web01-000001.vmdk (vmfsSparse) over web01-000001-delta.vmdk,
    one 512-byte write at 5 MiB in the snapshot."""
    ds = tmp_path / "ds"
    ds.mkdir()
    flat, sectors = _flat_disk(ds, images)
    write_descriptor(ds / "web01.vmdk", "vmfs", [f'RW {sectors} VMFS "{flat.name}"'],
                     cid="aaaa0001")
    at = 5 * MiB // SECTOR
    delta = write_cowd(ds / "web01-000001-delta.vmdk", sectors, {at: b"\xab" * SECTOR})
    top = write_descriptor(ds / "web01-000001.vmdk", "vmfsSparse",
                           [f'RW {sectors} VMFSSPARSE "{delta.name}"'], cid="aaaa0002",
                           parent_cid="aaaa0001", extra='parentFileNameHint="web01.vmdk"')
    expected = bytearray(Path(images["mbr.raw"]).read_bytes())
    expected[at * SECTOR:(at + 1) * SECTOR] = b"\xab" * SECTOR
    return {"dir": ds, "delta": delta, "top": top, "expected": bytes(expected)}


def test_an_esxi_delta_opened_directly_names_the_snapshot_descriptor(esxi_snapshot, tmp_path):
    snap = esxi_snapshot
    _refused_both_ways(snap["delta"], tmp_path, str(snap["delta"]), "ESXi snapshot",
                       "-delta.vmdk", f"its descriptor {snap['top']} instead",
                       "--chain")
    # the advice: the descriptor with --chain gives the disk the VM sees
    dest = tmp_path / "out" / "web01.raw"
    r = host_cli("convert", snap["top"], "--chain", "--to", "raw", "--dest", dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == snap["expected"]


def test_an_esxi_delta_copied_alone_names_the_descriptor_to_fetch(esxi_snapshot, tmp_path):
    alone = tmp_path / "alone"
    alone.mkdir()
    delta = alone / esxi_snapshot["delta"].name
    shutil.copyfile(esxi_snapshot["delta"], delta)
    _refused_both_ways(delta, tmp_path, "ESXi snapshot", "its descriptor is web01-000001.vmdk",
                       f"not in {alone}")


def test_an_old_workstation_cowd_disk_is_not_called_an_esxi_delta(tmp_path):
    """Same magic, VMware 3.x header (version 3, 128-sector grains; sherpya/vdk
    inc/cowdisk.h): qemu would read it with ESXi's table size."""
    disk = write_cowd(tmp_path / "old.vmdk", 8192, {}, version=3, grain=128)
    _refused_both_ways(disk, tmp_path, "2.x-3.x", "version 3", "vmware-vdiskmanager")
    assert "data of an ESXi snapshot" not in host_cli("inspect", disk).stderr


# ------------------------------------------------------------------ descriptor layout

VMWARE_BODY = ('version=1\nencoding="UTF-8"\nCID=fffffffe\nparentCID=ffffffff\n'
               'isNativeSnapshot="no"\ncreateType="vmfs"\n\n# Extent description\n'
               'RW {sectors} VMFS "web01-flat.vmdk"\n\n# The Disk Data Base\n#DDB\n\n'
               'ddb.adapterType = "lsilogic"\nddb.thinProvisioned = "1"\n')


@pytest.mark.parametrize("start,note", [
    ("\n\n# Disk DescriptorFile\n", "2 blank line(s) before '# Disk DescriptorFile'"),
    ("\r\n# Disk DescriptorFile\r\n", "1 blank line(s)"),
    ("", "no '# Disk DescriptorFile' first line"),
    ("# written by hand\n\n", "no '# Disk DescriptorFile'"),
])
def test_a_descriptor_vmware_reads_is_converted_not_read_as_raw(images, tmp_path, start,
                                                                  note):
    """VMware reads a text file as a descriptor when its first setting after blank and
    comment lines is version=; before, a blank first line made it a 512-byte raw disk."""
    flat, sectors = _flat_disk(tmp_path, images)
    body = VMWARE_BODY.format(sectors=sectors)
    if "\r\n" in start:
        body = body.replace("\n", "\r\n")
    desc = tmp_path / "web01.vmdk"
    desc.write_bytes((start + body).encode())
    r = host_cli("inspect", desc, "--json")
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["format"] == "vmdk" and info["virtual_size"] == flat.stat().st_size
    assert any(note in n for n in info["vmdk"]["notes"]), info["vmdk"]
    dest = tmp_path / "out.raw"
    r = host_cli("convert", desc, "--to", "raw", "--dest", dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == Path(images["mbr.raw"]).read_bytes()
    # and it is VMware metadata for --format raw, as any descriptor is
    _bad(host_cli("inspect", desc, "--format", "raw"), "--raw-despite-vmdk-header")


def test_a_descriptor_whose_first_setting_is_not_version_names_the_line(images, tmp_path):
    _, sectors = _flat_disk(tmp_path, images)
    body = VMWARE_BODY.format(sectors=sectors).replace("version=1\n", "")
    desc = tmp_path / "web01.vmdk"
    desc.write_text("\n" + body.replace('createType="vmfs"\n', "")
                    + 'createType="vmfs"\nversion=1\n')
    _refused_both_ways(desc, tmp_path, f"{desc}:2", "first setting is 'encoding=",
                       "'# Disk DescriptorFile' on line 1, version=1 on line 2")


def test_vmware_layout_blank_lines_between_sections_read_once(images, tmp_path):
    """qemu 7.2 counts an extent line twice after a blank line; qemu reads our copy, so
    VMware's layout (blank lines around the extents, CRLF) converts exactly."""
    flat, sectors = _flat_disk(tmp_path, images)
    body = VMWARE_BODY.format(sectors=sectors).replace("# Extent description\n", "\n")
    desc = tmp_path / "web01.vmdk"
    desc.write_bytes(("# Disk DescriptorFile\n" + body).replace("\n", "\r\n").encode())
    dest = tmp_path / "out.qcow2"
    r = host_cli("convert", desc, "--to", "qcow2", "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["source"]["virtual_size"] == flat.stat().st_size


def test_a_descriptor_saved_by_notepad_with_a_byte_order_mark_converts(images, tmp_path):
    """Before: "unparseable descriptor line '\\ufeff# Disk DescriptorFile'"."""
    flat, sectors = _flat_disk(tmp_path, images)
    desc = tmp_path / "web01.vmdk"
    desc.write_bytes(b"\xef\xbb\xbf# Disk DescriptorFile\r\n"
                     + VMWARE_BODY.format(sectors=sectors).replace("\n", "\r\n").encode())
    dest = tmp_path / "out.raw"
    r = host_cli("convert", desc, "--to", "raw", "--dest", dest)
    assert r.returncode == 0, r.stderr
    assert dest.read_bytes() == Path(images["mbr.raw"]).read_bytes()


def _workstation_descriptor(directory: Path, images, encoding: str) -> Path:
    """Workstation on Windows writes the host's code page into encoding= and the names in
    it; copied to Linux, the file names themselves are UTF-8."""
    flat = directory / "café-flat.vmdk"
    sh("cp", "--sparse=always", images["mbr.raw"], flat)
    sectors = flat.stat().st_size // SECTOR
    desc = directory / "café.vmdk"
    desc.write_bytes(
        b'# Disk DescriptorFile\r\nversion=1\r\nencoding="' + encoding.encode()
        + b'"\r\nCID=1234abcd\r\nparentCID=ffffffff\r\ncreateType="monolithicFlat"\r\n\r\n'
        b'# Extent description\r\nRW ' + str(sectors).encode()
        + b' FLAT "' + "café-flat.vmdk".encode("cp1252") + b'" 0\r\n')
    return desc


def test_a_windows_1252_descriptor_finds_its_non_ascii_extent(images, tmp_path):
    """Before: "extent file 'caf\\ufffd-flat.vmdk' is missing" (read as UTF-8)."""
    desc = _workstation_descriptor(tmp_path, images, "windows-1252")
    dest = tmp_path / "out.qcow2"
    r = host_cli("convert", desc, "--to", "qcow2", "--dest", dest)
    assert r.returncode == 0, r.stderr
    assert subprocess.run(["qemu-img", "compare", "-F", "qcow2", str(images["mbr.raw"]),
                           str(dest)], capture_output=True).returncode == 0


def test_a_file_name_its_declared_encoding_cannot_read_names_both_lines(images, tmp_path):
    desc = _workstation_descriptor(tmp_path, images, "UTF-8")
    _refused_both_ways(desc, tmp_path, f"{desc}:9", "not valid UTF-8",
                       "the encoding the descriptor declares on line 3")


# ------------------------------------------------------------------ memory-backed targets


@pytest.fixture
def shm_dir():
    """A directory on /dev/shm, the tmpfs every Linux node has (systemd, docker alike)."""
    from hostside import storage
    if storage.mount_fstype("/dev/shm")[0] != "tmpfs":
        pytest.fail("/dev/shm is not a tmpfs here: this test needs one", pytrace=False)
    d = Path("/dev/shm") / f"guestprep-test-{os.getpid()}"
    d.mkdir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("to", ["qcow2", "raw"])
def test_a_file_target_on_tmpfs_converts_with_a_warning(images, tmp_path, shm_dir, to):
    """/dev/shm/x.qcow2 was refused as 'not a device' (the /dev/ prefix), raw as 'no such
    block device'. A tmpfs is a directory: the copy works, and the plan, stderr and the
    manifest say why it does not belong there (RAM, gone at reboot)."""
    src = tmp_path / "small.raw"
    with open(src, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(MiB)
        f.write(b"guestprep" * 100)
    dest = shm_dir / f"vm-1-disk-0.{to}"
    r = host_cli("convert", src, "--to", to, "--dest", dest)
    assert r.returncode == 0, r.stderr
    assert f"warning: {shm_dir} is on tmpfs" in r.stderr
    m = json.loads(Path(f"{dest}.guestprep-manifest.json").read_text())
    warning = next(w for w in m["target"]["warnings"] if "tmpfs" in w)
    assert "memory" in warning and "reboot" in warning and str(shm_dir) in warning
    assert m["target"]["details"]["filesystem"] == "tmpfs"
    assert m["verification"]["ok"]


@pytest.mark.parametrize("to,message", [("qcow2", "not a device path"),
                                        ("raw", "no such block device")])
def test_a_missing_device_path_is_still_a_device_path(tmp_path, images, to, message):
    _bad(host_cli("convert", images["mbr.raw"], "--to", to, "--dest", "/dev/guestprep-none"),
         message, "/dev/guestprep-none")
    assert not os.path.exists("/dev/guestprep-none.partial")


def test_memory_available_reads_meminfo(tmp_path):
    from hostside import storage
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:  1000 kB\nMemAvailable:  300 kB\nSwapFree:  20 kB\n")
    assert storage.memory_available(str(meminfo)) == 320 * 1024
    meminfo.write_text("MemTotal:  1000 kB\n")              # kernels before 3.14
    assert storage.memory_available(str(meminfo)) is None
    assert storage.memory_available() > 0                    # this machine's


def test_a_split_flat_piece_opened_directly_names_its_descriptor(images, tmp_path):
    desc = Path(images["twoGbMaxExtentFlat"])
    piece = desc.parent / f"{desc.stem}-f002.vmdk"
    _refused_both_ways(piece, tmp_path, "extent 2 of 3", f"described by {desc} (line 9)")
