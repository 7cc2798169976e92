"""A wave of four VMs across two Proxmox nodes, under --parallel and --per-node.

Real parts as in the other cutover tests (the govmomi simulator, the suite's sshd as both nodes
running guestprep-host with real qemu-img, the Proxmox API test server with two nodes that own
one dir storage each: tests/cutover/pve_node.py). What is proven, from the journal and from the
two sides read directly:

* each VM is converted on the node that owns its target storage: the volume file is in that
  node's directory only, the manifest in that node's work directory only, the Proxmox VM on that
  node, the bytes equal the source disk;
* ``--per-node 1``: no two conversions on one node overlap, while the two nodes do convert at the
  same time. The journal says so: the convert step records each disk's conversion start and end
  (``started_at``/``ended_at``, taken while the conversion holds its node's turn). The nodes'
  own record cross-checks it (each node's python is a wrapper that writes down when each
  guestprep-host run started and ended: WaveLab.node_runs): every node run lies inside the
  journal's span for that disk;
* ``--parallel 3``: at no moment are more than three VMs in flight (a VM's interval: its first
  step attempt's start to its last one's end), and three are, so the limit is what held the
  fourth back.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess

import pytest

from tests.cutover.conftest import accept_gate, most_at_once

pytestmark = pytest.mark.integration

VMS = [("DC0_H0_VM8", 9301, "pve1"), ("DC0_C0_RP0_VM8", 9302, "pve2"),
       ("DC0_H0_VM9", 9303, "pve1"), ("DC0_C0_RP0_VM9", 9304, "pve2")]
STEPS = ["gate", "shutdown", "mark_source", "locate_disks", "convert", "finalize", "start", "verify"]
def _t(stamp: str) -> float:
    return dt.datetime.fromisoformat(stamp).timestamp()


def overlap(a: tuple[float, float], b: tuple[float, float]) -> float:
    return min(a[1], b[1]) - max(a[0], b[0])


def test_wave_converts_on_the_owning_node_within_parallel_and_per_node(wave_lab):
    w = wave_lab(VMS)
    w.plan()
    accept_gate(w)
    r = w.run("--parallel", "3", "--per-node", "1")
    assert r.returncode == 0, r.stdout + r.stderr
    for name, _, _ in VMS:
        assert f"{name}: done" in r.stdout
    vms = {v["vm"]: v for v in w.status()["vms"]}

    for name, vmid, node in VMS:
        vm = vms[name]
        assert vm["phase"] == "done" and vm["target"]["node"] == node
        assert [s["step"] for s in vm["steps"] if s["status"] == "done"] == STEPS   # each exactly once
        volid, file = w.volume(name)
        other = next(n for n in w.storages if n != node)
        # the Proxmox side, read directly: the VM on its node with its node's volume
        assert w.pve.node_of(vmid) == node and w.pve.state.vms[vmid]["status"] == "running"
        assert w.pve.volumes_of(vmid, node) == [volid] and w.pve.volumes_of(vmid, other) == []
        assert w.pve.state.vms[vmid]["config"]["scsi0"].startswith(volid)
        # converted there: the file in that node's storage and nowhere else, the manifest in its work dir
        assert file.is_file() and not list(w.storages[other][1].glob(f"images/{vmid}/*"))
        assert list(w.workdirs[node].glob(f"*/{name}/*.manifest.json"))
        assert not list(w.workdirs[other].glob(f"*/{name}/*"))
        assert subprocess.run(["qemu-img", "compare", "-q", "-F", "qcow2", str(w.raws[name]), str(file)]).returncode == 0
        convert = next(s for s in vm["steps"] if s["step"] == "convert")
        assert [d["volid"] for d in convert["outputs"]["disks"]] == [volid]

    # --per-node 1, from the journal: the conversions of one node one after the other, both nodes at once
    journaled = {n: [] for n in w.storages}
    for name, _, node in VMS:
        disk, = next(s for s in vms[name]["steps"] if s["step"] == "convert")["outputs"]["disks"]
        journaled[node].append((_t(disk["started_at"]), _t(disk["ended_at"])))
    for node, spans in journaled.items():
        assert len(spans) == 2 and overlap(*spans) <= 0, (node, journaled)
    assert max(overlap(a, b) for a in journaled["pve1"] for b in journaled["pve2"]) > 0, journaled

    # the nodes' own record agrees
    runs = w.node_runs("convert")
    by_node = {n: [(a, b) for _, a, b in spans] for n, spans in runs.items()}
    for node, spans in by_node.items():
        assert len(spans) == 2, runs
        assert overlap(*spans) <= 0, (node, runs)
    assert max(overlap(a, b) for a in by_node["pve1"] for b in by_node["pve2"]) > 0, runs
    # each VM's conversion ran on its node inside the span the journal records for its disk (which
    # also counts the SSH session's command start), inside its convert step
    for name, _, node in VMS:
        step = next(s for s in vms[name]["steps"] if s["step"] == "convert")
        disk = step["outputs"]["disks"][0]
        (a, b), = [(a, b) for vm, a, b in runs[node] if vm == name]
        assert _t(disk["started_at"]) <= a + 0.001 and b <= _t(disk["ended_at"]) + 0.001, (name, disk, a, b)
        assert _t(step["started"]) <= _t(disk["started_at"]) and _t(disk["ended_at"]) <= _t(step["ended"])
        assert b - a <= disk["seconds"] + 0.05

    # --parallel 3: never four VMs in flight, and three were
    flight = [(_t(v["steps"][0]["started"]), _t(v["steps"][-1]["ended"])) for v in vms.values()]
    assert most_at_once(flight) == 3, flight

    # the report's per-node view: what each node took
    report = json.loads((w.tmp / "wave.yaml.state" / "report.json").read_text())
    nodes = {n["node"]: n for n in report["nodes"]}
    assert sorted(nodes) == ["pve1", "pve2"]
    for node in ("pve1", "pve2"):
        mine = [name for name, _, n in VMS if n == node]
        assert nodes[node]["vms"] == mine and nodes[node]["phases"] == {"done": 2}
        assert nodes[node]["disks_converted"] == 2
        assert nodes[node]["downtime_s"]["max"] == max(vms[m]["downtime_s"] for m in mine)
    junit = (w.tmp / "wave.yaml.state" / "junit.xml").read_text()
    for name, _, node in VMS:
        assert f'<testsuite name="cutover {name}" hostname="{node}"' in junit
