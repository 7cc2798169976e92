"""The booting end-to-end lab: three simulated VMware VMs whose disks are the lab's Debian 12 guest,
unprepared (vmw_pvscsi only in its initramfs), prepared (`guestprep prepare --apply`) and its UEFI
sibling prepared (firmware=efi; GPT + ESP, booting on VMware only through its NVRAM entry), cached
by tests/cutover/lab_images.py, cut over to the Proxmox test node that really boots them (QEMU/TCG
from the stored config, the guest agent over its virtio-serial socket: tests/cutover/pve_node.py).

Two waves: the BIOS one (unprepared, prepared) and the UEFI one, run at the same time:
  rehearse   (the BIOS wave, both at once) the sources keep running; a temporary copy of each boots
             with its links down and is destroyed, the snapshot removed: "would boot: no"
             (unprepared), "yes" (prepared)
  run        (the three VMs at once, one TCG core each) the unprepared VM fails at verify
             (emergency shell on its console, no agent) and is rolled back (source on again, copy
             stopped and kept); the prepared VM ends verified, its agent answering with the
             guest's own address, after a post-phase preflight over SSH of the booted guest itself
             (the BIOS wave's options.post_preflight, its own inventory: 127.0.0.1:<the node's
             forward to the guest's port 22>, the host key prepare recorded; pve_node.py's
             ``ssh_forwards``); the UEFI VM ends verified, booted through OVMF and its efidisk0
             (a fresh vars store: the fallback loader prepare installed is what OVMF finds), and
             passes the same post-phase preflight on itself. Under TCG on a loaded machine the UEFI
             copy's sshd started minutes after its agent: verify waits for the SSH greeting
             (guestprep/cutover/postflight.py) before judging the guest once.

The gate: the fleet's preflight target is the suite's sshd container (no kernel), so the real
gate says `blocked`; the wave records a reviewer's acceptance, as in the other cutover tests.
The difference between the two outcomes comes from the disks alone.
Serial logs and the node's QEMU command lines: tests/artifacts/cutover-lab/.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.cutover import lab_images
from tests.cutover.conftest import EXE
from tests.cutover.pve_node import PveNodeServer

pytestmark = [pytest.mark.lab, pytest.mark.timeout(3600)]

UNPREPARED, PREPARED = "DC0_H0_VM6", "DC0_H0_VM7"     # the simulator VMs no other cutover test uses
UEFI = "DC0_C0_RP0_VM11"                              # ditto
VMIDS = {UNPREPARED: 9601, PREPARED: 9602, UEFI: 9603}
REHEARSAL_VMIDS = {UNPREPARED: 9901, PREPARED: 9902}
AGENT_TIMEOUT = 900   # TCG on a shared 2-core machine; the unprepared copy ends earlier (its console)
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "cutover-lab"
POST_PREFLIGHT_TIMEOUT = 900   # the collector's commands under TCG, three guests on two cores


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _virtual_size(image: Path) -> int:
    out = subprocess.run(["qemu-img", "info", "--output=json", str(image)], check=True, capture_output=True, text=True)
    return int(json.loads(out.stdout)["virtual-size"])


def shape_source(vs, vm, disk_bytes: int, mac: str, memory_mb: int = 1024, firmware: str = "bios") -> None:
    """The simulated VM as the lab guest is: its disk's size, the MAC its NIC name is pinned to, RAM to boot,
    its firmware (efi: the plan gives the copy OVMF and an efidisk0)."""
    from pyVmomi import vim

    from tests.vsphere.vsphere_support import reconfig

    devs = vm.config.hardware.device
    disk = next(d for d in devs if isinstance(d, vim.vm.device.VirtualDisk))
    nic = next(d for d in devs if isinstance(d, vim.vm.device.VirtualEthernetCard))
    disk.capacityInKB, disk.capacityInBytes = disk_bytes // 1024, disk_bytes
    nic.addressType, nic.macAddress = "manual", mac
    reconfig(vs, vm, vim.vm.ConfigSpec(memoryMB=memory_mb, firmware=firmware, deviceChange=[
        vim.vm.device.VirtualDeviceSpec(operation="edit", device=disk),
        vim.vm.device.VirtualDeviceSpec(operation="edit", device=nic)]))


class CutoverLab:
    def __init__(self, tmp: Path, sim, vs, sshd, apidata: Path, zipapp: Path):
        from guestprep.operations.vm import target
        from guestprep.vsphere.actions import find_vm, power_on
        from tests.vsphere.vsphere_support import set_guest

        self.tmp, self.sim, self.vs, self.zipapp = tmp, sim, vs, zipapp
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        disks = {UNPREPARED: lab_images.unprepared(ARTIFACTS), PREPARED: lab_images.prepared(ARTIFACTS),
                 UEFI: lab_images.prepared_uefi(ARTIFACTS)}
        self.storage = tmp / "pve-local"
        self.pve = PveNodeServer(apidata, tmp, self.storage, boot=True, run_dir=tmp / "qemu-server").start()
        # the booted guests reachable over SSH from the controller (test-only: pve_node.py's module doc)
        self.ssh_ports = {vmid: free_port() for vmid in VMIDS.values()}
        self.pve.ssh_forwards.update(self.ssh_ports)
        self.token_id, self.token = next(iter(self.pve.state.tokens.items()))
        self.vms, guests, networks, datastores = {}, [], {}, {}
        post_guests, self.guest_known_hosts = [], tmp / "guests.known_hosts"
        self.guest_key = tmp / "guest_id_ed25519"
        shutil.copy(disks[PREPARED].parent / "id_ed25519", self.guest_key)   # one key for every lab guest
        self.guest_key.chmod(0o600)
        known = ""
        for name, image in disks.items():
            vm = find_vm(vs, name)
            firmware = "efi" if name == UEFI else "bios"
            size = _virtual_size(image)
            shape_source(vs, vm, size, lab_images.LAB_MAC, firmware=firmware)
            power_on(vs, vm)
            set_guest(vs, vm, toolsRunningStatus="guestToolsRunning", ipAddress=lab_images.LAB_ADDRESS)
            _, facts = target.load(vs, name, "test")
            assert facts.disks[0].capacity_bytes == size and facts.firmware == firmware
            assert facts.nics[0].mac.lower() == lab_images.LAB_MAC
            port = self.ssh_ports[VMIDS[name]]
            post_guests.append({"name": name, "address": "127.0.0.1", "port": port, "user": "root", "os": "linux",
                                "key_file": str(self.guest_key), "agent": False})
            if name != UNPREPARED:   # it never boots; no login to trust
                known += lab_images.host_key_line(image, "127.0.0.1", port)
            ds_name, rel = facts.disks[0].datastore_path[1:].split("] ", 1)
            datastores[ds_name] = str(tmp / ds_name)
            src = tmp / ds_name / rel
            src.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run(["cp", "--sparse=always", str(image), str(src)], check=True)  # the cache stays untouched
            networks.update({n.network: "vmbr0" for n in facts.nics})
            self.vms[name] = vm
            guests.append({"name": name, "address": sshd.host, "port": sshd.port, "user": "root",
                           "key_file": str(sshd.user_key), "agent": False, "vars": {"vsphere_moref": facts.moref}})
        self.fleet = tmp / "fleet.yaml"
        self.fleet.write_text(json.dumps({"guests": guests}))
        # the post-phase preflight's inventory: each booted guest itself, through the node's forward
        self.post_fleet = tmp / "post-fleet.yaml"
        self.post_fleet.write_text(json.dumps({"guests": post_guests}))
        self.guest_known_hosts.write_text(known)
        self.waivers = tmp / "waivers.yaml"
        self.waivers.write_text(json.dumps({"waivers": [{
            "check": "*", "reason": "the preflight target is the test node, no VMware guest", "by": "tests",
            "expires": "2099-01-01"}]}))
        cfg = tmp / "storage.cfg"
        cfg.write_text(f"dir: local\n\tpath {self.storage}\n\tcontent images\n")
        policy = {
            "node": "pve1", "storage": "local", "storage_type": "dir", "format": "qcow2", "strategy": "direct",
            "network_map": networks, "datastores": datastores, "expect_addresses": [lab_images.LAB_ADDRESS],
            "cutover": {
                "proxmox": {"host": self.pve.host, "port": self.pve.port, "user": self.token_id.split("!")[0],
                            "token_name": self.token_id.split("!")[1], "token_secret_env": "PVE_TOKEN",
                            "ca": str(self.pve.ca)},
                "nodes": {"pve1": {"address": sshd.host, "port": sshd.port, "user": "root",
                                   "key_file": str(sshd.user_key), "known_hosts": str(sshd.known_hosts),
                                   "workdir": str(tmp / "node-work"), "storage_cfg": str(cfg),
                                   "qemu_run_dir": str(self.pve.run_dir)}},
                "vms": {n: {"vmid": v} for n, v in VMIDS.items()}}}
        policy["cutover"]["options"] = {"post_preflight": {
            "inventory": str(self.post_fleet), "known_hosts": str(self.guest_known_hosts),
            "timeout": POST_PREFLIGHT_TIMEOUT, "fail_on": "blocker"}}
        self.policy, self.policy_uefi = tmp / "policy.yaml", tmp / "policy-uefi.yaml"
        self.policy.write_text(json.dumps(policy))
        self.policy_uefi.write_text(json.dumps(policy))
        self.known_hosts, self.sshd_port = sshd.known_hosts, sshd.port
        self.wave, self.wave_uefi = tmp / "wave.yaml", tmp / "wave-uefi.yaml"

    def env(self) -> dict[str, str]:
        import os

        env = {k: v for k, v in os.environ.items() if not k.startswith("GUESTPREP_CUTOVER_")}
        env.update(GUESTPREP_VSPHERE_PASSWORD=self.sim.password, PVE_TOKEN=self.token,
                   GUESTPREP_HOST_ZIPAPP=str(self.zipapp), GUESTPREP_STATE_DIR=str(self.tmp / "state"))
        return env

    def gp(self, *args, timeout: float = 2400, tag: str = ""):
        t0 = time.monotonic()
        r = subprocess.run([str(EXE), *map(str, args)], env=self.env(), capture_output=True, text=True,
                           timeout=timeout, cwd=self.tmp, stdin=subprocess.DEVNULL)
        (ARTIFACTS / f"{args[1]}{tag}.out").write_text(f"# {time.monotonic() - t0:.0f} s, exit {r.returncode}\n"
                                                   f"{r.stdout}\n--- stderr\n{r.stderr}")
        return r

    def source(self, name: str) -> dict:
        from guestprep.cutover.rehearse import snapshot_tree
        from guestprep.vsphere import marks

        vm = self.vms[name]
        return {"power": str(vm.runtime.powerState), "tools": marks.tools_running(vm),
                "marked": bool(marks.current(vm)) or bool(marks.field_value(self.vs, vm)),
                "snapshots": bool(snapshot_tree(self.vs, vm))}

    def guest_ssh(self, name: str, command: str) -> subprocess.CompletedProcess:
        """A command in the booted copy of ``name`` (through the node's forward, its recorded host key)."""
        return subprocess.run(["ssh", "-p", str(self.ssh_ports[VMIDS[name]]), "-i", str(self.guest_key),
                               "-o", f"UserKnownHostsFile={self.guest_known_hosts}", "-o", "StrictHostKeyChecking=yes",
                               "-o", "BatchMode=yes", "-o", "ConnectTimeout=30", "root@127.0.0.1", command],
                              capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)

    def keep_evidence(self) -> None:
        for vmid in sorted({v for v, _ in self.pve.started}):
            log = self.pve.paths(vmid)["serial_log"]
            if log.exists():
                shutil.copy(log, ARTIFACTS / f"vm{vmid}-serial.log")
        (ARTIFACTS / "qemu-command-lines.txt").write_text(
            "".join(f"{vmid}: {' '.join(argv)}\n" for vmid, argv in self.pve.started))


@pytest.fixture(scope="module")
def clab(tmp_path_factory, sim, vs, sshd, apidata, zipapp):
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing (make test installs it as root)")
    lab = CutoverLab(tmp_path_factory.mktemp("cutover-lab"), sim, vs, sshd, apidata, zipapp)
    t0 = time.monotonic()
    try:
        for wave, policy, names in ((lab.wave, lab.policy, (UNPREPARED, PREPARED)), (lab.wave_uefi, lab.policy_uefi, (UEFI,))):
            r = lab.gp("cutover", "plan", "-i", lab.fleet, "--policy", policy, "--out", wave, *names,
                       "--waivers", lab.waivers, "--known-hosts", lab.known_hosts, "--guest-timeout", "120",
                       "--server", sim.server, "--user", sim.user, "--ca-bundle", sim.certs.ca_pem)
            assert r.returncode == 0, r.stdout + r.stderr
            doc = yaml.safe_load(wave.read_text())
            assert [vm["name"] for vm in doc["vms"]] == list(names)
            for vm in doc["vms"]:
                assert vm["gate"]["verdict"] == "unknown"   # the container node cannot tell; the reviewer accepts it
                vm["gate"]["accepted_by_reviewer"] = {"by": "tests", "reason": "preflight target is the test node"}
            wave.write_text(yaml.safe_dump(doc, sort_keys=False))
        lab.timings = {"plan": time.monotonic() - t0}

        t0 = time.monotonic()
        lab.rehearsal = lab.gp("cutover", "rehearse", lab.wave,   # the BIOS wave only: one boot fewer
                               "--console", "--parallel", "2", "--poll", "2",
                               "--agent-timeout", AGENT_TIMEOUT,
                               *[a for n, v in REHEARSAL_VMIDS.items() for a in ("--vmid", f"{n}={v}")])
        lab.timings["rehearse"] = time.monotonic() - t0
        lab.after_rehearsal = {n: lab.source(n) for n in lab.vms}
        lab.pve_after_rehearsal = {"vms": sorted(lab.pve.state.vms), "qemu": lab.pve.running_qemu(),
                                   "files": sorted(p.name for p in (lab.storage / "images").rglob("*") if p.is_file())}
        lab.rehearsal_configs = {v: dict(lab.pve.configs_at_start.get(v, {})) for v in REHEARSAL_VMIDS.values()}

        t0 = time.monotonic()
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:   # both waves at once: the UEFI copy boots beside the other two
            runs = [pool.submit(lab.gp, "cutover", "run", w, "--console", "--parallel", "2", "--poll", "2",
                                "--agent-timeout", AGENT_TIMEOUT, "--tools-timeout", "120", tag=tag)
                    for w, tag in ((lab.wave, ""), (lab.wave_uefi, "-uefi"))]
            lab.run, lab.run_uefi = (f.result() for f in runs)
        lab.timings["run"] = time.monotonic() - t0
        lab.uefi_firmware = lab.guest_ssh(UEFI, "test -d /sys/firmware/efi && efibootmgr")
        lab.status = json.loads(lab.gp("cutover", "status", lab.wave, "--json").stdout)
        lab.status["vms"] += json.loads(lab.gp("cutover", "status", lab.wave_uefi, "--json", tag="-uefi").stdout)["vms"]
        (ARTIFACTS / "timings.txt").write_text("".join(f"{k:10} {v:6.0f} s\n" for k, v in lab.timings.items()))
        yield lab
    finally:
        lab.keep_evidence()
        lab.pve.stop()


def _rehearsal(clab) -> dict:
    return {v["vm"]: v for v in json.loads((clab.tmp / "wave.yaml.rehearsal" / "report.json").read_text())["vms"]}


def test_rehearse_says_no_for_the_unprepared_guest_and_yes_for_the_prepared(clab):
    r = clab.rehearsal
    assert r.returncode == 1, r.stdout + r.stderr   # not every VM would boot
    assert f"{UNPREPARED}: would boot: no" in r.stdout, r.stdout + r.stderr
    assert f"{PREPARED}: would boot: yes" in r.stdout, r.stdout + r.stderr
    rep = _rehearsal(clab)
    bad, good = rep[UNPREPARED], rep[PREPARED]
    assert bad["would_boot"] is False
    assert any("emergency" in why.lower() or "did not answer" in why for why in bad["reasons"]), bad["reasons"]
    assert good["would_boot"] is True, good["reasons"]
    assert lab_images.LAB_ADDRESS in good["evidence"]["addresses"]
    assert lab_images.LAB_MAC in good["evidence"]["macs"]
    assert good["evidence"]["console"]["verdict"] == "login"


def test_rehearsal_copies_were_isolated_and_left_no_trace(clab):
    for name, vmid in REHEARSAL_VMIDS.items():
        cfg = clab.rehearsal_configs[vmid]
        assert cfg, f"the rehearsal of {name} never started VM {vmid}"
        nets = [v for k, v in cfg.items() if k.startswith("net")]
        assert nets and all("link_down=1" in v for v in nets), nets
        assert cfg["name"].startswith("rehearsal-") and "guestprep-rehearsal" in cfg["tags"]
    after = clab.pve_after_rehearsal
    assert not set(REHEARSAL_VMIDS.values()) & set(after["vms"]), after
    assert after["qemu"] == [] and after["files"] == [], after
    for name, src in clab.after_rehearsal.items():   # the sources kept running, untouched
        assert src == {"power": "poweredOn", "tools": True, "marked": False, "snapshots": False}, (name, src)
    for v in _rehearsal(clab).values():
        assert v["cleanup"]["vm"] == "destroyed" and v["cleanup"]["snapshot"] == "removed", v["cleanup"]
        assert v["source_power_before"] == v["source_power_after"] == "poweredOn"


def test_unprepared_cutover_fails_at_verify_and_is_rolled_back(clab):
    assert clab.run.returncode == 1, clab.run.stdout + clab.run.stderr
    vm = next(v for v in clab.status["vms"] if v["vm"] == UNPREPARED)
    assert vm["phase"] == "rolled_back", vm
    failed = [s for s in vm["steps"] if s["status"] == "failed"]
    assert [s["step"] for s in failed] == ["verify"], vm["steps"]
    assert "did not boot" in vm["error"] or "did not answer" in vm["error"], vm["error"]
    # the sides, read directly: the source runs again, unmarked; the copy is stopped and kept
    assert clab.source(UNPREPARED) == {"power": "poweredOn", "tools": True, "marked": False, "snapshots": False}
    vmid = VMIDS[UNPREPARED]
    assert clab.pve.state.vms[vmid]["status"] == "stopped"
    assert vmid not in clab.pve.running_qemu()
    assert clab.pve.volumes_of(vmid) == [f"local:{vmid}/vm-{vmid}-disk-0.qcow2"]
    # the console said why: the root disk never appeared (no virtio_scsi in its initramfs)
    log = clab.pve.serial_log(vmid)
    assert "Multi-User System" not in log and "login:" not in log


def test_prepared_cutover_ends_verified_with_its_agent_and_address(clab):
    vm = next(v for v in clab.status["vms"] if v["vm"] == PREPARED)
    assert vm["phase"] == "done", vm
    ver = vm["verification"]
    assert lab_images.LAB_ADDRESS in ver["addresses"] and lab_images.LAB_MAC in ver["macs"], ver
    assert ver["console"]["verdict"] == "login", ver["console"]
    assert vm["downtime_s"] is not None and vm["downtime_s"] > 0
    assert f"{PREPARED}: done" in clab.run.stdout
    assert clab.source(PREPARED)["power"] == "poweredOff" and clab.source(PREPARED)["marked"]
    vmid = VMIDS[PREPARED]
    assert clab.pve.state.vms[vmid]["status"] == "running" and vmid in clab.pve.running_qemu()
    # the node booted it from its stored config the way Proxmox does: VirtIO SCSI disk, VirtIO NIC, agent channel
    argv = " ".join(next(a for v, a in reversed(clab.pve.started) if v == vmid))
    assert "virtio-scsi-pci" in argv and f"virtio-net-pci,mac={lab_images.LAB_MAC.upper()}" in argv
    assert "name=org.qemu.guest_agent.0" in argv
    # and its agent answers now, through the API
    from tests.cutover.pve_node import qga

    assert qga(clab.pve.paths(vmid)["qga"], "guest-ping", timeout=30) == {}


def _verify_outputs(clab, name: str) -> dict:
    vm = next(v for v in clab.status["vms"] if v["vm"] == name)
    assert vm["phase"] == "done", vm
    return next(s for s in vm["steps"] if s["step"] == "verify")["outputs"]


def test_post_phase_preflight_ran_on_the_booted_guest_itself(clab):
    _assert_post_preflight_on_the_booted_guest(clab, PREPARED)


def _assert_post_preflight_on_the_booted_guest(clab, name: str) -> None:
    post = _verify_outputs(clab, name)["post_preflight"]
    assert post["service"]["ready"], post["service"]
    # the inventory entry is the node's forward to this copy's port 22, trusted only with the key
    # prepare recorded on VMware: reaching it at all means it was the booted guest, not the sshd container
    entry = next(g for g in json.loads(clab.post_fleet.read_text())["guests"] if g["name"] == name)
    assert entry["port"] == clab.pve.ssh_forwards[VMIDS[name]] != clab.sshd_port
    assert post["phase"] == "post" and post["guest"] == name and post["transport"] == "ssh", post
    assert post["address"] == "127.0.0.1" and post["error"] is None, post
    assert post["counts"].get("pass", 0) > 0 and post["counts"].get("unreachable", 0) == 0, post
    # no failing blocker on the booted copy (a check may say unknown: the collector's initramfs listing under TCG)
    assert post["readiness"] != "blocked" and not any(f["status"] == "fail" and f["severity"] == "blocker"
                                                      for f in post["findings"]), post
    assert post["fail_on"] == "blocker"


def test_uefi_cutover_boots_through_ovmf_and_its_efidisk(clab):
    assert clab.run_uefi.returncode == 0 and f"{UEFI}: done" in clab.run_uefi.stdout, \
        clab.run_uefi.stdout + clab.run_uefi.stderr
    ver = _verify_outputs(clab, UEFI)
    assert lab_images.LAB_ADDRESS in ver["addresses"] and lab_images.LAB_MAC in ver["macs"], ver
    assert ver["console"]["verdict"] == "login", ver["console"]
    vmid = VMIDS[UEFI]
    cfg = clab.pve.configs_at_start[vmid]   # what the plan asked of Proxmox for a firmware=efi source
    assert cfg.get("bios") == "ovmf" and cfg.get("machine") == "q35" and cfg.get("efidisk0"), cfg
    argv = next(a for v, a in reversed(clab.pve.started) if v == vmid)
    line = " ".join(argv)
    from tests.cutover.pve_node import OVMF_CODE

    assert f"if=pflash,unit=0,format=raw,readonly=on,file={OVMF_CODE}" in line
    assert f"if=pflash,unit=1,id=drive-efidisk0,format=raw,file={clab.pve.paths(vmid)['vars']}" in line
    assert "type=q35" in line
    # OVMF ran and booted the disk (its boot manager on the console), the guest sees EFI firmware
    log = clab.pve.serial_log(vmid)
    assert "BdsDxe: loading Boot" in log and "Linux version" in log, log[-2000:]
    fw = clab.uefi_firmware
    assert fw.returncode == 0 and "BootCurrent" in fw.stdout, fw.stdout + fw.stderr
    from tests.cutover.pve_node import qga

    assert qga(clab.pve.paths(vmid)["qga"], "guest-ping", timeout=30) == {}
    assert clab.source(UEFI)["power"] == "poweredOff" and clab.source(UEFI)["marked"]
    _assert_post_preflight_on_the_booted_guest(clab, UEFI)
