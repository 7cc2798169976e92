"""`guestprep handoff --server HOST --vm NAME`: the SourceVM is read from vCenter (the govmomi
simulator over TLS with a per-run CA), and the document it writes drives guestprep-host."""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vsphere import simulator as simlib

pytestmark = pytest.mark.integration

EXE = Path(sys.executable).with_name("guestprep")
VM = "DC0_H0_VM0"


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    try:
        binary = simlib.build()
    except simlib.SimulatorUnavailable as exc:
        pytest.skip(f"vCenter simulator unavailable: {exc}")
    certs = simlib.make_certs(tmp_path_factory.mktemp("handoff-vcsim-certs"))
    s = simlib.Simulator(binary, certs, "pw-" + pysecrets.token_hex(8), vms_per_pool=2)
    yield s
    s.close()


def gp(sim, *args, password=None, ca=True, cwd=None):
    env = dict(os.environ, GUESTPREP_VSPHERE_PASSWORD=password or sim.password)
    conn = ["--server", sim.server, "--user", sim.user] + (["--ca-bundle", str(sim.certs.ca_pem)] if ca else [])
    return subprocess.run([str(EXE), *map(str, args), *conn], env=env, capture_output=True, text=True,
                          timeout=120, cwd=cwd, stdin=subprocess.DEVNULL)


def test_handoff_reads_the_vm_from_vcenter(sim, tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"node": "pve1", "storage": "local", "vmid": 130,
                                  "datastores": {"LocalDS_0": str(tmp_path / "LocalDS_0")},
                                  "volumes": {"disk-202-0": "local:130/vm-130-disk-0.qcow2"}}))
    out = tmp_path / "vm.handoff.json"
    r = gp(sim, "handoff", "--vm", VM, "--policy", policy, "--out", out)
    assert r.returncode == 0, r.stderr
    doc = json.loads(out.read_text())
    assert doc["schema"] == "guestprep.handoff/1"
    assert doc["origin"]["kind"] == "vsphere" and doc["origin"]["server"] == sim.server
    # the same record `guestprep vm facts` prints (the path --source-vm took before)
    facts = gp(sim, "vm", "facts", VM)
    assert facts.returncode == 0, facts.stderr
    assert doc["source_vm"] == json.loads(facts.stdout)
    assert doc["origin"]["moref"] == doc["source_vm"]["moref"]
    # checked against the simulator through pyVmomi directly, not through our mapping
    from pyVmomi import vim

    session = sim.connect()
    try:
        view = session.si.RetrieveContent().viewManager.CreateContainerView(
            session.si.RetrieveContent().rootFolder, [vim.VirtualMachine], True)
        real = next(v for v in view.view if v.name == VM)
        macs = sorted(d.macAddress for d in real.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
        files = sorted(d.backing.fileName for d in real.config.hardware.device if isinstance(d, vim.vm.device.VirtualDisk))
        uuid = real.config.uuid
        view.DestroyView()
    finally:
        session.close()
    assert sorted(n["mac"] for n in doc["source_vm"]["nics"]) == macs
    assert sorted(d["source"] for d in doc["disks"]) == files
    assert doc["source_vm"]["uuid_bios"] == uuid
    assert doc["disks"][0]["volid"] == "local:130/vm-130-disk-0.qcow2"
    assert sim.password not in out.read_text() and sim.password not in r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("qemu-img") is None, reason="qemu-img missing")
def test_vcenter_handoff_drives_the_host_side(sim, tmp_path):
    """Controller -> document -> node: the document fetched from vCenter converts the disk."""
    ds = tmp_path / "LocalDS_0"
    (ds / VM).mkdir(parents=True)
    raw = tmp_path / "disk.raw"
    with open(raw, "wb") as f:
        f.truncate(1 << 20)   # the simulator's disk is 1 MiB
        f.seek(4096)
        f.write(b"guestprep" * 100)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(raw), str(ds / VM / "disk1.vmdk")],
                   check=True)
    storage = tmp_path / "pve-local"
    (storage / "images").mkdir(parents=True)
    cfg = tmp_path / "storage.cfg"
    cfg.write_text(f"dir: local\n\tpath {storage}\n\tcontent images\n")
    policy = tmp_path / "policy.yaml"
    policy.write_text(json.dumps({"storage": "local", "vmid": 130, "datastores": {"LocalDS_0": str(ds)},
                                  "volumes": {"disk-202-0": "local:130/vm-130-disk-0.qcow2"}}))
    out = tmp_path / "vm.handoff.json"
    assert gp(sim, "handoff", VM, "--policy", policy, "--out", out).returncode == 0
    r = subprocess.run([sys.executable, "-m", "hostside.cli", "convert", "--handoff", str(out), "--storage-cfg",
                        str(cfg), "--progress", "none", "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)["disks"][0]
    target = storage / "images/130/vm-130-disk-0.qcow2"
    assert m["target"]["path"] == str(target) and m["verification"]["ok"]
    assert subprocess.run(["qemu-img", "compare", "-F", "qcow2", str(raw), str(target)]).returncode == 0
    assert m["handoff"]["vm_name"] == VM and m["handoff"]["vm_uuid"] == json.loads(out.read_text())["source_vm"]["uuid_bios"]


def test_handoff_server_errors_leave_no_document(sim, tmp_path):
    out = tmp_path / "vm.handoff.json"
    cases = [
        (gp(sim, "handoff", "--vm", VM, "--out", out, password="wrong-" + sim.password), 3, "login"),
        (gp(sim, "handoff", "--vm", VM, "--out", out, ca=False), 3, "certificate"),
        (gp(sim, "handoff", "--vm", "no-such-vm", "--out", out), 2, "no-such-vm"),
        (gp(sim, "handoff", "--out", out), 2, "which VM"),
        (gp(sim, "handoff", "other", "--vm", VM, "--out", out), 2, "given twice"),
        (gp(sim, "handoff", VM, "--source-vm", tmp_path / "x.json", "--out", out), 2, "exactly one of"),
    ]
    for r, code, words in cases:
        assert r.returncode == code, (r.args, r.stdout, r.stderr)
        assert words.lower() in (r.stdout + r.stderr).lower(), (r.args, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr
        assert sim.password not in r.stdout + r.stderr
    assert not out.exists()
    # vSphere options without --server are a usage error, not silently ignored
    vm_json = tmp_path / "vm.json"
    vm_json.write_text(json.dumps({"name": "x", "disks": [], "controllers": []}))
    r = subprocess.run([str(EXE), "handoff", "x", "--source-vm", str(vm_json), "--user", "u", "--out", str(out)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--user only applies with --server" in r.stdout + r.stderr
    assert not out.exists()
