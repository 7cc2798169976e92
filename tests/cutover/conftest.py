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
    s = simlib.Simulator(binary, simlib.make_certs(tmp_path_factory.mktemp("cutover-vcsim")),
                         "pw-" + pysecrets.token_hex(8), vms_per_pool=8)
    yield s
    s.close()


@pytest.fixture(scope="session")
def vs(sim):
    from guestprep.vsphere.client import connect

    s = connect(sim.server, sim.user, sim.password, ca_bundle=str(sim.certs.ca_pem))
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
