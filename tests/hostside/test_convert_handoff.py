"""convert --handoff: the hand-off document written by the real `guestprep handoff` drives a
real conversion (qemu-img, small generated vmdk images; ZFS through the recording
stand-ins); the manifest carries the partition audit and the document's identity; bad
documents stop the run before anything is written."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hostside_support import build_gpt, build_mbr, need_tools, sh
from hostside import pvestorage
from hostside.errors import InputError, TargetRefused

pytestmark = pytest.mark.integration

MiB = 1 << 20
UUID = "421b4b87-e6b7-d881-07a0-c9d221cd3c6b"
GUESTPREP = Path(sys.executable).with_name("guestprep")


@pytest.fixture(scope="module")
def disks(tmp_path_factory):
    """A datastore directory with an MBR disk (NTFS at sector 63) as monolithicSparse and
    a GPT disk (ESP + XFS) as streamOptimized, plus the raw images they came from."""
    need_tools()
    root = tmp_path_factory.mktemp("handoff-disks")
    mbr, gpt = build_mbr(root), build_gpt(root)
    vmdir = root / "ds1" / "app01"
    vmdir.mkdir(parents=True)
    sh("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=monolithicSparse",
       mbr, vmdir / "app01.vmdk")
    sh("qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
       gpt, vmdir / "app01_1.vmdk")
    return {"ds1": root / "ds1", "mbr.raw": mbr, "gpt.raw": gpt}


def source_vm(extra_disk: bool = True) -> dict:
    def disk(i, path, **kw):
        return {"key": 2000 + i, "label": f"Hard disk {i + 1}", "controller_key": 1000,
                "unit_number": i, "capacity_bytes": 64 * MiB, "datastore_path": path, **kw}

    disks = [disk(0, "[ds1] app01/app01.vmdk", is_boot=True), disk(1, "[ds1] app01/app01_1.vmdk")]
    if extra_disk:
        disks.append(disk(2, "[ds1] app01/app01_2.vmdk", disk_mode="independent_persistent"))
    return {"name": "app01", "uuid_bios": UUID, "moref": "vm-42", "firmware": "bios",
            "controllers": [{"key": 1000, "kind": "pvscsi"}], "disks": disks,
            "nics": [{"label": "Network adapter 1", "model": "vmxnet3", "mac": "00:50:56:9b:5f:0d",
                      "network": "VM Network"}]}


class Node:
    """A scratch 'Proxmox node': storage.cfg with a dir storage and a zfspool (stand-ins)."""

    def __init__(self, root: Path, standins):
        self.root = root
        self.standins = standins
        self.dir_storage = root / "pve-local"
        (self.dir_storage / "images").mkdir(parents=True)
        self.cfg = root / "storage.cfg"
        self.cfg.write_text(
            "dir: local\n\tpath {p}\n\tcontent iso,vztmpl,images\n\n"
            "zfspool: local-zfs\n\tpool rpool/data\n\tblocksize 8k\n\tsparse 1\n\tcontent images,rootdir\n\n"
            "rbd: ceph\n\tpool vms\n\tcontent images\n".format(p=self.dir_storage))
        self.cwd = root / "cwd"
        self.cwd.mkdir()
        self.manifests = root / "manifests"     # $GUESTPREP_HOST_MANIFEST_DIR: zvol manifests
        self.manifests.mkdir()

    def handoff(self, disks, *, volumes=None, fmt="qcow2", name="app01.handoff.json") -> Path:
        """The hand-off as the controller writes it (the real `guestprep handoff`)."""
        vm_json = self.root / "app01-vm.json"
        vm_json.write_text(json.dumps(source_vm()))
        policy = self.root / "policy.yaml"
        vols = volumes if volumes is not None else {"Hard disk 1": "local:120/vm-120-disk-0.qcow2",
                                                    "Hard disk 2": "local-zfs:vm-120-disk-1"}
        policy.write_text(json.dumps({"node": "pve1", "storage": "local", "vmid": 120, "format": fmt,
                                      "datastores": {"ds1": str(disks["ds1"])}, "volumes": vols,
                                      "network_map": {"VM Network": "vmbr0"}}))
        out = self.root / name
        r = subprocess.run([str(GUESTPREP), "handoff", "app01", "--source-vm", str(vm_json), "--policy",
                            str(policy), "--out", str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        return out

    def host(self, *args, env=None):
        cfg = ["--storage-cfg", str(self.cfg)] if "--handoff" in args else []
        return subprocess.run([sys.executable, "-m", "hostside.cli", "convert", *map(str, args), *cfg,
                               "--progress", "none"],
                              capture_output=True, text=True, timeout=600, cwd=self.cwd,
                              env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]),
                                       GUESTPREP_HOST_MANIFEST_DIR=str(self.manifests),
                                       **(env or {})))

    def written(self) -> list[str]:
        """Everything a run could have created: files on the dir storage, zvols, manifests."""
        files = [str(p.relative_to(self.root)) for p in (self.dir_storage / "images").rglob("*")]
        zvols = [str(p.relative_to(self.root)) for p in (self.standins.dev).rglob("*") if p.is_file()]
        return sorted(files + zvols + [p.name for p in self.cwd.iterdir()]
                      + [p.name for p in self.manifests.iterdir()])

    def zfs_creates(self):
        return [c for c in self.standins.calls() if c[:2] == ["zfs", "create"]]


@pytest.fixture
def node(tmp_path, standins):
    return Node(tmp_path, standins)


def _same(a, b, fmt_b) -> bool:
    return subprocess.run(["qemu-img", "compare", "-F", fmt_b, str(a), str(b)],
                          capture_output=True).returncode == 0


def test_dry_run_plans_every_disk_and_creates_nothing(disks, node):
    doc = node.handoff(disks)
    r = node.host("--handoff", doc, "--dry-run")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert f"VM app01, uuid {UUID}" in out
    assert "Hard disk 1: " + str(disks["ds1"] / "app01/app01.vmdk") in out
    assert "-> local:120/vm-120-disk-0.qcow2 = qcow2 " + str(node.dir_storage / "images/120/vm-120-disk-0.qcow2") in out
    assert "-> local-zfs:vm-120-disk-1 = zvol rpool/data/vm-120-disk-1 (raw)" in out
    assert "Hard disk 3: skipped: independent (independent_persistent)" in out
    assert "IMG-PART-LEGACY-63 partition 1" in out          # the MBR disk's NTFS at sector 63
    assert "creates directory " + str(node.dir_storage / "images/120") in out
    assert "dry run: nothing was created" in out
    assert node.written() == [] and node.zfs_creates() == []
    plan = json.loads(node.host("--handoff", doc, "--dry-run", "--json").stdout)
    assert plan["dry_run"] and plan["handoff"]["vm_uuid"] == UUID
    assert [d["label"] for d in plan["disks"]] == ["Hard disk 1", "Hard disk 2", "Hard disk 3"]
    assert plan["disks"][1]["required_bytes"] > 0 and plan["disks"][2]["skipped"]
    assert node.written() == []


def test_convert_from_handoff_end_to_end(disks, node):
    doc = node.handoff(disks)
    r = node.host("--handoff", doc, "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    by_disk = {m["handoff"]["disk"]: m for m in result["disks"]}
    assert sorted(by_disk) == ["Hard disk 1", "Hard disk 2"]
    assert [s["label"] for s in result["skipped"]] == ["Hard disk 3"]

    # the data arrived, in the format and place the document names
    qcow = node.dir_storage / "images/120/vm-120-disk-0.qcow2"
    zvol = node.standins.dev / "zvol/rpool/data/vm-120-disk-1"
    assert _same(disks["mbr.raw"], qcow, "qcow2") and _same(disks["gpt.raw"], zvol, "raw")
    assert not _same(disks["mbr.raw"], zvol, "raw")        # negative control for the comparison
    assert by_disk["Hard disk 1"]["target"]["format"] == "qcow2"
    # zvol blocksize from storage.cfg (8k), not hostside's 16k default
    assert node.zfs_creates() == [["zfs", "create", "-s", "-V", str(400 * MiB), "-o", "volblocksize=8192",
                                   "rpool/data/guestprep-partial-vm-120-disk-1"]]

    # manifests on disk: the file target's beside it, the zvol's in the configured
    # directory ($GUESTPREP_HOST_MANIFEST_DIR), never the working directory
    assert Path(by_disk["Hard disk 2"]["manifest_path"]).parent == node.manifests
    assert Path(by_disk["Hard disk 1"]["manifest_path"]).parent == qcow.parent
    assert list(node.cwd.iterdir()) == []
    sha = hashlib.sha256(doc.read_bytes()).hexdigest()
    for label, m in by_disk.items():
        on_disk = json.loads(Path(m["manifest_path"]).read_text())
        assert on_disk["schema"] == "guestprep.host-manifest/2"
        h = on_disk["handoff"]
        assert (h["sha256"], h["vm_name"], h["vm_uuid"], h["moref"], h["disk"]) == (sha, "app01", UUID, "vm-42", label)
        assert h["volid"] == h["document_volid"] and h["warnings"] == []
        assert on_disk["verification"]["ok"] and on_disk["audit"]["performed"]
    mbr_audit = json.loads(Path(by_disk["Hard disk 1"]["manifest_path"]).read_text())["audit"]
    assert mbr_audit["firmware"] == "bios" and mbr_audit["table"]["scheme"] == "mbr"
    failing = {(f["check_id"], f["resource"]) for f in mbr_audit["failing"]}
    assert {("IMG-PART-LEGACY-63", "partition 1"), ("IMG-PART-ALIGN-4K", "partition 1")} <= failing
    assert not any(res == "partition 5" and cid == "IMG-PART-ALIGN-4K" for cid, res in failing)  # aligned one
    gpt_audit = json.loads(Path(by_disk["Hard disk 2"]["manifest_path"]).read_text())["audit"]
    assert gpt_audit["firmware"] == "uefi"
    assert {f["check_id"] for f in gpt_audit["failing"]} == {"IMG-FIRMWARE-UEFI"}   # info: needs OVMF

    # a second run refuses: targets exist, nothing is overwritten
    before = qcow.stat().st_mtime_ns
    again = node.host("--handoff", doc)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert qcow.stat().st_mtime_ns == before and len(node.zfs_creates()) == 1


def test_single_source_manifest_has_audit_and_no_handoff(disks, node):
    dest = node.root / "single.qcow2"
    r = node.host(disks["ds1"] / "app01/app01.vmdk", "--to", "qcow2", "--dest", dest, "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(Path(json.loads(r.stdout)["manifest_path"]).read_text())
    assert m["handoff"] is None
    assert "IMG-PART-LEGACY-63" in {f["check_id"] for f in m["audit"]["failing"]}


def test_flags_override_the_document(disks, node):
    doc = node.handoff(disks)
    # --to raw: the file volume becomes .raw, and the mismatch with the document is said
    r = node.host("--handoff", doc, "--disk", "Hard disk 1", "--to", "raw", "--json")
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["disks"][0]
    assert m["target"]["format"] == "raw" and m["handoff"]["volid"] == "local:120/vm-120-disk-0.raw"
    assert any("differs from the hand-off's volid" in w for w in m["handoff"]["warnings"])
    assert _same(disks["mbr.raw"], node.dir_storage / "images/120/vm-120-disk-0.raw", "raw")
    assert node.zfs_creates() == []                      # --disk: only that disk
    # --dest/--manifest name one target: refused for several disks
    r = node.host("--handoff", doc, "--to", "raw", "--dest", node.root / "x.raw")
    assert r.returncode == 2 and "choose one with --disk" in r.stderr
    # qcow2 onto the ZFS storage: refused by the storage rule, before anything is made
    r = node.host("--handoff", doc, "--disk", "Hard disk 2", "--to", "qcow2")
    assert r.returncode == 2 and "never qcow2 on ZFS" in r.stderr
    # --storage re-homes the document's volume name onto another storage
    r = node.host("--handoff", doc, "--disk", "Hard disk 2", "--storage", "local", "--dry-run", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["disks"][0]["volid"] == "local:120/vm-120-disk-1.qcow2"
    # a storage guestprep-host cannot write to is named
    r = node.host("--handoff", doc, "--disk", "Hard disk 2", "--storage", "ceph")
    assert r.returncode == 2 and "'ceph' is of type 'rbd'" in r.stderr
    assert node.zfs_creates() == []


def test_import_from_disks_are_left_to_finalize_unless_selected(disks, node):
    doc = node.handoff(disks, volumes={"Hard disk 1": "local:120/vm-120-disk-0.qcow2"})
    r = node.host("--handoff", doc, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "Hard disk 2: skipped: finalize imports it from " + str(disks["ds1"] / "app01/app01_1.vmdk") in r.stdout
    r = node.host("--handoff", doc, "--disk", "Hard disk 2", "--dry-run", "--json")
    job = json.loads(r.stdout)["disks"][0]
    # named like Proxmox does, skipping the number the document already uses
    assert job["volid"] == "local:120/vm-120-disk-1.qcow2"
    assert any("names no volume for this disk" in w for w in job["warnings"])


def test_a_failing_second_disk_keeps_the_first_and_says_so(disks, node, datastore):
    """Disk 2 streams from an HTTPS datastore that starts failing once disk 1 is done."""
    import threading
    import time

    doc = node.handoff(disks)
    sh("cp", "--sparse=always", disks["gpt.raw"], datastore.root / "app01_1-flat.vmdk")
    first_manifest = node.dir_storage / "images/120/vm-120-disk-0.qcow2.guestprep-manifest.json"
    stop = threading.Event()

    def break_datastore_after_disk_1():
        while not stop.is_set():
            if first_manifest.exists():
                datastore.fail_after = 0
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=break_datastore_after_disk_1, daemon=True)
    watcher.start()
    try:
        r = node.host("--handoff", doc, "--source", f"Hard disk 2={datastore.url('app01_1-flat.vmdk')}",
                      "--cookie-env", "VC_COOKIE", "--insecure", env={"VC_COOKIE": datastore.cookie})
    finally:
        stop.set()
        watcher.join()
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "disk 'Hard disk 2'" in r.stderr and "qemu-img convert failed" in r.stderr
    assert "converted before this failure (complete, verified, manifests kept): Hard disk 1" in r.stderr
    assert datastore.cookie.split("=", 1)[1].strip('"') not in r.stdout + r.stderr
    # disk 1 complete and verified; disk 2's zvol created and removed again; no manifest for it
    assert _same(disks["mbr.raw"], node.dir_storage / "images/120/vm-120-disk-0.qcow2", "qcow2")
    assert json.loads(first_manifest.read_text())["verification"]["ok"]
    assert len(node.zfs_creates()) == 1
    assert [c for c in node.standins.calls() if c[:2] == ["zfs", "destroy"]]
    assert not (node.standins.dev / "zvol/rpool/data/vm-120-disk-1").exists()
    assert not (node.standins.dev / "zvol/rpool/data/guestprep-partial-vm-120-disk-1").exists()
    assert list(node.cwd.iterdir()) == [] and list(node.manifests.iterdir()) == []


# --------------------------------------------------------------------------- bad documents


def _mutate(doc: Path, change) -> Path:
    data = json.loads(doc.read_text())
    change(data)
    bad = doc.with_name("bad.handoff.json")
    bad.write_text(json.dumps(data))
    return bad


def _del(path):
    def change(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        del d[last]
    return change


def _set(path, value):
    def change(d):
        *parents, last = path
        for p in parents:
            d = d[p]
        d[last] = value
    return change


BAD = {
    "missing policy": (_del(["policy"]), "bad.handoff.json: policy: missing"),
    "missing disk label": (_del(["disks", 1, "label"]), "bad.handoff.json: disks[1].label: missing"),
    "vmid wrong type": (_set(["policy", "vmid"], "120"), "bad.handoff.json: policy.vmid: must be an integer"),
    "volid wrong type": (_set(["disks", 0, "volid"], 7), "bad.handoff.json: disks[0].volid: must be a Proxmox volume id"),
    "format unknown": (_set(["policy", "format"], "vmdk"), "bad.handoff.json: policy.format: must be raw or qcow2"),
    "unknown version": (_set(["schema"], "guestprep.handoff/2"), "unknown document schema 'guestprep.handoff/2'"),
    "no schema": (_del(["schema"]), "bad.handoff.json: schema: unknown document schema None"),
    "disk not in source_vm": (_set(["disks", 0, "label"], "Hard disk 9"), "'Hard disk 9' is not a disk of source_vm"),
    "datastore not mapped": (_set(["policy", "datastores"], {}), "disks[0].source: datastore path '[ds1] app01/app01.vmdk' has no local path"),
    "storage not on node": (_set(["disks", 1, "volid"], "nas:vm-120-disk-1"), "storage 'nas' is not defined in"),
    "bad volume name": (_set(["disks", 0, "volid"], "local:vm-120-disk-0.qcow2"), "must be named <vmid>/vm-<vmid>-<name>"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_document_is_refused_before_anything_is_written(disks, node, case):
    change, expected = BAD[case]
    bad = _mutate(node.handoff(disks), change)
    r = node.host("--handoff", bad)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert expected in r.stderr and r.stderr.startswith("guestprep-host: error: ")
    assert "Traceback" not in r.stderr
    assert node.written() == [] and node.zfs_creates() == []


def test_absent_disk_path_stops_the_run_before_the_first_disk(disks, node, tmp_path):
    # the second disk's file is gone: the first (valid) disk must not be converted either
    ds = tmp_path / "ds-partial"
    (ds / "app01").mkdir(parents=True)
    os.link(disks["ds1"] / "app01/app01.vmdk", ds / "app01/app01.vmdk")
    doc = _mutate(node.handoff(disks), _set(["policy", "datastores"], {"ds1": str(ds)}))
    r = node.host("--handoff", doc)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "disk 'Hard disk 2'" in r.stderr and "disks[1]" in r.stderr
    assert str(ds / "app01/app01_1.vmdk") + ": no such file" in r.stderr
    assert node.written() == [] and node.zfs_creates() == []
    assert not (node.dir_storage / "images/120").exists()   # the directory it made is gone again


def test_not_json_and_absent_document(node, tmp_path):
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    for doc, expected in ((garbage, "not a JSON document"), (tmp_path / "nope.json", "no such hand-off document")):
        r = node.host("--handoff", doc)
        assert r.returncode == 2 and expected in r.stderr and str(doc) in r.stderr
    r = node.host(tmp_path / "x.vmdk", "--handoff", garbage)
    assert r.returncode == 2 and "either SRC or --handoff" in r.stderr


# --------------------------------------------------------------------------- storage.cfg


@pytest.mark.unit
def test_storage_cfg_parsing_and_placement():
    cfg = pvestorage.parse_storage_cfg(
        "# comment\ndir: local\n\tpath /var/lib/vz\n\tcontent iso,images\n\n"
        "lvmthin: local-lvm\n\tthinpool data\n\tvgname pve\n\tcontent rootdir,images\n\n"
        "zfspool: tank\n\tpool tank/vms\n\tcontent rootdir\n", "storage.cfg")
    assert set(cfg) == {"local", "local-lvm", "tank"}
    p = pvestorage.place(cfg["local-lvm"], "vm-120-disk-0", None, "x")
    assert (p.kind, p.dest, p.fmt) == ("lvmthin", "pve/data/vm-120-disk-0", "raw")
    p = pvestorage.place(cfg["local"], "120/vm-120-disk-0.qcow2", None, "x")
    assert (p.kind, p.dest) == ("qcow2", "/var/lib/vz/images/120/vm-120-disk-0.qcow2")
    with pytest.raises(TargetRefused, match="does not hold VM disk images"):
        pvestorage.storage_of(cfg, "tank", "x", "storage.cfg")
    with pytest.raises(InputError, match="must be named"):
        pvestorage.place(cfg["local"], "121/vm-120-disk-0.qcow2", None, "x")   # vmid mismatch
    with pytest.raises(InputError, match="must be named"):
        pvestorage.place(cfg["local-lvm"], "../vm-120-disk-0", None, "x")
    with pytest.raises(InputError, match="line 2: expected 'type: storage-id'"):
        pvestorage.parse_storage_cfg("dir: a\nbogus line\n", "storage.cfg")
