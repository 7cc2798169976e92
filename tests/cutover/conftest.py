"""Real parts for the cutover: the govmomi simulator (source), the suite's sshd running
guestprep-host with real qemu-img (the node), the Proxmox API test server joined to that node's
disk (tests/cutover/pve_node.py). Each test takes its own simulated VM (``lab(VM, vmid)``)."""

from __future__ import annotations

import json
import os
import secrets as pysecrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.cutover.pve_node import PveNodeServer
from tests.vsphere import simulator as simlib

EXE = Path(sys.executable).with_name("guestprep")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    try:
        binary = simlib.build()
    except simlib.SimulatorUnavailable as exc:
        pytest.fail(f"vCenter simulator unavailable: {exc}")
    # 21 per pool: DC0_H0_VM0..20 and DC0_C0_RP0_VM0..20, one VM per test (the multi-VM waves use 8..11,
    # the rehearsal kill tests and the per-datastore test 12..15, the Windows kill tests H0 16..20)
    s = simlib.Simulator(binary, simlib.make_certs(tmp_path_factory.mktemp("cutover-vcsim")),
                         "pw-" + pysecrets.token_hex(8), vms_per_pool=21)
    yield s
    s.close()


@pytest.fixture(scope="session")
def vs(sim):

    s = sim.connect()
    yield s
    s.close()


@pytest.fixture(scope="session")
def zipapp(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zipapp") / "guestprep-host.pyz"
    subprocess.run([sys.executable, str(REPO / "tools" / "build_zipapp.py"), "--out", str(out)], check=True,
                   capture_output=True)
    return out


@pytest.fixture(scope="session")
def apidata() -> Path:
    path = REPO.parent / "shared" / "pve-api" / "apidata.json"
    if not path.is_file():
        pytest.fail(f"the Proxmox API schema is missing: {path}")
    return path


class Lab:
    """One simulated VM, its datastore file, a Proxmox node (API + sshd) and a planned wave."""

    def __init__(self, tmp: Path, sim, vs, sshd, apidata: Path, zipapp: Path, vm_name: str, vmid: int, ip: str):
        from guestprep.operations.vm import target
        from guestprep.vsphere.actions import find_vm, power_on
        from tests.vsphere.vsphere_support import set_guest

        self.tmp, self.sim, self.vs, self.vm_name, self.vmid, self.ip = tmp, sim, vs, vm_name, vmid, ip
        self.vm = find_vm(vs, vm_name)
        power_on(vs, self.vm)
        set_guest(vs, self.vm, toolsRunningStatus="guestToolsRunning", ipAddress=ip)
        _, facts = target.load(vs, vm_name, "test")
        disk = facts.disks[0]
        ds_name, rel = disk.datastore_path[1:].split("] ", 1)
        self.ds = tmp / ds_name
        src = self.ds / rel
        src.parent.mkdir(parents=True)
        self.raw = tmp / "disk.raw"
        with open(self.raw, "wb") as f:  # the simulator's disk size, with data to compare
            f.truncate(disk.capacity_bytes)
            f.seek(4096)
            f.write(f"guestprep {vm_name} ".encode() * 50)
        subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(self.raw), str(src)], check=True)
        self.mac = facts.nics[0].mac.lower()
        self.storage = tmp / "pve-local"
        self.pve = PveNodeServer(apidata, tmp, self.storage).start()
        self.pve.state.faults.guest_addresses[self.mac] = [ip]
        self.pve.state.task_delay = 0.02
        self.pve.state.agent_delay = 0.05
        self.token_id, self.token = next(iter(self.pve.state.tokens.items()))
        cfg = tmp / "storage.cfg"
        cfg.write_text(f"dir: local\n\tpath {self.storage}\n\tcontent images\n")
        self.fleet = tmp / "fleet.yaml"
        self.fleet.write_text(json.dumps({"guests": [{
            "name": vm_name, "address": sshd.host, "port": sshd.port, "user": "root", "key_file": str(sshd.user_key),
            "agent": False, "vars": {"vsphere_moref": facts.moref}}]}))
        self.waivers = tmp / "waivers.yaml"
        self.waivers.write_text(json.dumps({"waivers": [{
            "check": "*", "reason": "the test node is no VMware guest", "by": "tests", "expires": "2099-01-01"}]}))
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(json.dumps({
            "node": "pve1", "storage": "local", "storage_type": "dir", "format": "qcow2", "strategy": "direct",
            "network_map": {n.network: "vmbr0" for n in facts.nics}, "datastores": {ds_name: str(self.ds)},
            "expect_addresses": [ip],
            "cutover": {
                "proxmox": {"host": self.pve.host, "port": self.pve.port, "user": self.token_id.split("!")[0],
                            "token_name": self.token_id.split("!")[1], "token_secret_env": "PVE_TOKEN",
                            "ca": str(self.pve.ca)},
                "nodes": {"pve1": {"address": sshd.host, "port": sshd.port, "user": "root",
                                   "key_file": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                                   "workdir": str(tmp / "node-work"), "storage_cfg": str(cfg)}},
                "vms": {vm_name: {"vmid": vmid}}}}))
        self.known_hosts = sshd.known_hosts
        self.zipapp = zipapp
        self.wave = tmp / "wave.yaml"

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("GUESTPREP_CUTOVER_")}
        env.update(GUESTPREP_VSPHERE_PASSWORD=self.sim.password, PVE_TOKEN=self.token,
                   GUESTPREP_HOST_ZIPAPP=str(self.zipapp), GUESTPREP_STATE_DIR=str(self.tmp / "state"))
        env.update(extra)
        return env

    def gp(self, *args, env: dict | None = None, timeout: float = 300):
        return subprocess.run([str(EXE), *map(str, args)], env=env or self.env(), capture_output=True, text=True,
                              timeout=timeout, cwd=self.tmp, stdin=subprocess.DEVNULL)

    def plan(self):
        r = self.gp("cutover", "plan", "-i", self.fleet, "--policy", self.policy, "--out", self.wave,
                    "--waivers", self.waivers, "--known-hosts", self.known_hosts, "--guest-timeout", "120",
                    "--server", self.sim.server, "--user", self.sim.user, "--ca-bundle", self.sim.certs.ca_pem)
        assert r.returncode == 0, r.stdout + r.stderr
        return r

    def run(self, *extra, env: dict | None = None):
        return self.gp("cutover", "run", self.wave, "--poll", "0.05", "--agent-timeout", "5", *extra, env=env)

    def resume(self, *extra):
        return self.gp("cutover", "resume", self.wave, "--poll", "0.05", "--agent-timeout", "5", *extra)

    def status(self) -> dict:
        r = self.gp("cutover", "status", self.wave, "--json")
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    # the two sides, read directly (not through guestprep)
    def source(self) -> dict:
        from guestprep.vsphere import marks

        return {"power": str(self.vm.runtime.powerState), "marked": bool(marks.current(self.vm)),
                "field": marks.field_value(self.vs, self.vm)}

    def target(self) -> dict:
        st = self.pve.state
        vm = st.vms.get(self.vmid)
        return {"vms": self.pve.vms_with(self.vmid), "status": vm["status"] if vm else None,
                "volumes": self.pve.volumes_of(self.vmid),
                "files": sorted(p.name for p in (self.storage / "images").rglob("*") if p.is_file())}

    def close(self) -> None:
        self.pve.stop()


@pytest.fixture
def lab(tmp_path, sim, vs, sshd, apidata, zipapp):
    made: list[Lab] = []

    def make(vm_name: str, vmid: int, ip: str = "10.0.0.42") -> Lab:
        d = tmp_path / vm_name
        d.mkdir()
        made.append(Lab(d, sim, vs, sshd, apidata, zipapp, vm_name, vmid, ip))
        return made[-1]

    yield make
    for lab_ in made:
        lab_.close()


def source_disk(vs, vm_name: str, root: Path) -> tuple[Any, Path]:
    """The simulated VM's disk as a file under ``root/<datastore>/``: a raw image of the simulator's
    size with data to compare, converted to VMDK. Returns (the VM's facts, the raw image)."""
    from guestprep.operations.vm import target

    _, facts = target.load(vs, vm_name, "test")
    disk = facts.disks[0]
    ds_name, rel = disk.datastore_path[1:].split("] ", 1)
    src = root / ds_name / rel
    src.parent.mkdir(parents=True)
    raw = root / f"{vm_name}.raw"
    with open(raw, "wb") as f:
        f.truncate(disk.capacity_bytes)
        f.seek(4096)
        f.write(f"guestprep {vm_name} ".encode() * 50)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "vmdk", str(raw), str(src)], check=True)
    return facts, raw


def own_mac(vs, vm, mac: str) -> None:
    """A MAC of its own for the VM's NIC: the simulator gives VMs of different hosts the same one, and
    the test node tells the guests apart by MAC (their addresses, its agent's answers)."""
    from pyVmomi import vim

    from tests.vsphere.vsphere_support import reconfig

    nic = next(d for d in vm.config.hardware.device if isinstance(d, vim.vm.device.VirtualEthernetCard))
    nic.addressType, nic.macAddress = "manual", mac
    reconfig(vs, vm, vim.vm.ConfigSpec(deviceChange=[vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)]))


class WaveLab:
    """Several simulated VMs in one wave, cut over to several Proxmox nodes of one test cluster.

    ``vms``: (VM name, vmid, node). Every node is the suite's sshd on 127.0.0.1 with its own name,
    its own dir storage (pve1: ``local``, others ``<node>-dir``, each in its own directory), its own
    storage.cfg (only its storage: guestprep-host there can write nowhere else) and work directory."""

    def __init__(self, tmp: Path, sim, vs, sshd, apidata: Path, zipapp: Path, vms: list[tuple[str, int, str]]):
        from guestprep.vsphere.actions import find_vm, power_on
        from tests.vsphere.vsphere_support import set_guest

        self.tmp, self.sim, self.vs, self.zipapp, self.known_hosts = tmp, sim, vs, zipapp, sshd.known_hosts
        tmp.mkdir()
        self.specs = {name: {"vmid": vmid, "node": node} for name, vmid, node in vms}
        node_names = sorted({node for _, _, node in vms} | {"pve1"})
        self.storages = {n: ("local" if n == "pve1" else f"{n}-dir", tmp / f"{n}-storage") for n in node_names}
        self.workdirs = {n: tmp / f"{n}-work" for n in node_names}
        self.pve = PveNodeServer(apidata, tmp, self.storages["pve1"][1],
                                 nodes={n: v for n, v in self.storages.items() if n != "pve1"}).start()
        self.pve.state.task_delay = 0.02
        self.pve.state.agent_delay = 0.05
        self.token_id, self.token = next(iter(self.pve.state.tokens.items()))
        guests, networks, datastores, per_vm = [], {}, {}, {}
        self.vms, self.raws = {}, {}
        for i, (name, vmid, node) in enumerate(vms):
            ip = f"10.0.1.{10 + i}"
            vm = find_vm(vs, name)
            own_mac(vs, vm, f"00:50:56:3f:01:{i + 1:02x}")
            power_on(vs, vm)
            set_guest(vs, vm, toolsRunningStatus="guestToolsRunning", ipAddress=ip)
            facts, self.raws[name] = source_disk(vs, name, tmp / "datastores")   # <ds>/<vm>/disk1.vmdk
            ds_name = facts.disks[0].datastore_path[1:].split("] ", 1)[0]
            datastores[ds_name] = str(tmp / "datastores" / ds_name)
            self.pve.state.faults.guest_addresses[facts.nics[0].mac.lower()] = [ip]
            networks.update({n.network: "vmbr0" for n in facts.nics})
            self.vms[name] = vm
            guests.append({"name": name, "address": sshd.host, "port": sshd.port, "user": "root",
                           "key_file": str(sshd.user_key), "agent": False, "vars": {"vsphere_moref": facts.moref}})
            per_vm[name] = {"vmid": vmid, "node": node, "storage": self.storages[node][0], "expect_addresses": [ip]}
        nodes = {}
        self.runs_log = tmp / "node-runs.log"
        for n, (sid, path) in self.storages.items():
            cfg = tmp / f"{n}-storage.cfg"
            cfg.write_text(f"dir: {sid}\n\tpath {path}\n\tcontent images\n\tnodes {n}\n")
            nodes[n] = {"address": sshd.host, "port": sshd.port, "user": "root", "key_file": str(sshd.user_key),
                        "known_hosts": str(sshd.known_hosts), "workdir": str(self.workdirs[n]), "storage_cfg": str(cfg),
                        "python": str(self._witness(n))}
        self.fleet = tmp / "fleet.yaml"
        self.fleet.write_text(json.dumps({"guests": guests}))
        self.waivers = tmp / "waivers.yaml"
        self.waivers.write_text(json.dumps({"waivers": [{
            "check": "*", "reason": "the test node is no VMware guest", "by": "tests", "expires": "2099-01-01"}]}))
        self.policy = tmp / "policy.yaml"
        self.policy.write_text(json.dumps({
            "node": "pve1", "storage": "local", "storage_type": "dir", "format": "qcow2", "strategy": "direct",
            "network_map": networks, "datastores": datastores,
            "cutover": {
                "proxmox": {"host": self.pve.host, "port": self.pve.port, "user": self.token_id.split("!")[0],
                            "token_name": self.token_id.split("!")[1], "token_secret_env": "PVE_TOKEN",
                            "ca": str(self.pve.ca)},
                "nodes": nodes, "vms": per_vm}}))
        self.wave = tmp / "wave.yaml"

    env, gp, plan, run, status = Lab.env, Lab.gp, Lab.plan, Lab.run, Lab.status

    def _witness(self, node: str) -> Path:
        """The node's python (the wave's ``nodes.<n>.python``): the real python3 with the real argv,
        each run's start and end written down on the node, so the tests see what really ran there and when."""
        script = self.tmp / f"{node}-python"
        script.write_text(f"""#!/bin/sh
# [-I -S ...] ZIPAPP convert --handoff WORKDIR/WAVE/VM/handoff.json ...: the VM is the handoff's directory
opts=""
while [ "${{1#-}}" != "$1" ]; do opts="$opts $1"; shift; done   # the interpreter's own options
cmd=$(printf %s "$2" | head -c 40 | tr -c 'a-z_-' '_')
vm=$(printf %s "$(basename "$(dirname "$4")")" | tr -c 'A-Za-z0-9_.-' '_')
vm=${{vm:-_}}   # not a conversion (python -c, -m): no hand-off argument
echo "{node} start $(date +%s.%N) $$ $cmd $vm" >> '{self.runs_log}'
# a 1 MiB conversion lasts ~0.3 s: too short for two nodes' runs to overlap reliably (CI saw the
# nodes interleave without touching); 2 s inside the recorded run makes parallelism observable
if [ "$cmd" = convert ]; then sleep 2; fi
python3 $opts "$@"
rc=$?
echo "{node} end $(date +%s.%N) $$ $cmd $vm" >> '{self.runs_log}'
exit $rc
""")
        script.chmod(0o755)
        return script

    def node_runs(self, command: str = "convert") -> dict[str, list[tuple[str, float, float]]]:
        """node -> (VM, start, end) of every guestprep-host ``command`` run on it, from the nodes' own record."""
        starts: dict[str, tuple[str, float]] = {}
        runs: dict[str, list[tuple[str, float, float]]] = {n: [] for n in self.storages}
        for line in self.runs_log.read_text().splitlines():
            node, what, at, pid, cmd, vm = line.split()
            if cmd != command:
                continue
            if what == "start":
                starts[pid] = (node, float(at))
            else:
                n, t0 = starts.pop(pid)
                runs[n].append((vm, t0, float(at)))
        assert not starts, f"runs that never ended: {starts}"
        return runs

    def volume(self, name: str) -> tuple[str, Path]:
        """The volume id the VM's disk is planned into and the file it must be on its node."""
        vmid, node = self.specs[name]["vmid"], self.specs[name]["node"]
        sid, path = self.storages[node]
        return f"{sid}:{vmid}/vm-{vmid}-disk-0.qcow2", path / "images" / str(vmid) / f"vm-{vmid}-disk-0.qcow2"

    def close(self) -> None:
        self.pve.stop()


@pytest.fixture
def wave_lab(tmp_path, sim, vs, sshd, apidata, zipapp):
    made: list[WaveLab] = []

    def make(vms: list[tuple[str, int, str]]) -> WaveLab:
        made.append(WaveLab(tmp_path / f"wave{len(made)}", sim, vs, sshd, apidata, zipapp, vms))
        return made[-1]

    yield make
    for w in made:
        w.close()


def accept_gate(lab_: Lab) -> None:
    """What a reviewer does to a wave whose gate cannot pass here: this test node is a container
    without a kernel, so LNX-INITRAMFS-VIRTIO/LNX-KERNEL-VIRTIO cannot tell (`unknown`: not a pass,
    not waivable), and the gate does not pass an unknown guest.
    The acceptance is written into the wave, with who and why, before the run binds its hash."""
    import yaml

    doc = yaml.safe_load(lab_.wave.read_text())
    for vm in doc["vms"]:
        assert vm["gate"]["verdict"] == "unknown"  # the real gate did not pass it; the reviewer overrides it
        vm["gate"]["accepted_by_reviewer"] = {"by": "tests", "reason": "container node: no kernel to check"}
    lab_.wave.write_text(yaml.safe_dump(doc, sort_keys=False))


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one instant (the multi-node and per-datastore limits' measure)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, d in edges:   # an end sorts before a start at the same instant: touching is not overlapping
        now += d
        peak = max(peak, now)
    return peak
