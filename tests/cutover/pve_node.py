"""The Proxmox API test server (tests/finalize/pve_server.py) joined to its nodes' disks: the ``local``
dir storage of pve1 lists the volumes guestprep-host wrote under ``<path>/images/<vmid>/``, the
way Proxmox lists a dir storage's files, so finalize attaches what the node converted.

Several nodes (``nodes={"pve2": ("pve2-dir", path), ...}``): each node owns its own dir storage
with its own directory, the way a node-local storage of a cluster is (``nodes pve2`` in
storage.cfg; pve-storage's PVE/Storage/Plugin.pm marks it not shared, so every node has its own
files). The tests reach every node over the same sshd on 127.0.0.1; what tells them apart is the
node name, the storage.cfg each node's guestprep-host reads, and its work directory.

With ``boot=True`` (the booting lab) the node also runs its VMs: ``status/start`` launches QEMU
under TCG from the VM's stored configuration the way qemu-server does (``qm showcmd``-like, see
``showcmd``), ``agent/ping`` and ``agent/network-get-interfaces`` speak the QEMU guest agent
protocol over that QEMU's virtio-serial socket (guest-sync-delimited, then the command),
``status/stop`` and ``status/shutdown`` end it (QMP ``quit``, then SIGKILL), a NIC with
``link_down=1`` has its link set down over QMP right after start (as qemu-server does).
Differences from a real node, on purpose: TCG instead of KVM (``-cpu qemu64``), QEMU user
networking stands for the bridge, and the first serial port is always also written to
``<run_dir>/<vmid>.serial.log`` (evidence for the tests; a real VM without ``serial0`` has none).
A test-only deviation, opt-in per vmid (``ssh_forwards``): net0's user network forwards a loopback
port to the guest's port 22. On Proxmox net0 sits on vmbr0 and the controller reaches the guest at
its own address; QEMU's user network has no inbound path, so the forward stands for that route
(the post-phase preflight at verify and the tests' own checks log in through it).

Only wraps the server (its file is not edited): before each request the storage is re-read
from disk. Volumes the server itself allocates stay in memory as before.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tests.finalize.pve_server import ApiError, PveTestServer, Storage, Volume

VOLUME_FILE = re.compile(r"vm-(\d+)-disk-\d+\.(qcow2|raw)")
DRIVE_KEY = re.compile(r"(scsi|sata|ide|virtio)\d+")
QEMU = "qemu-system-x86_64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
NET_SLOT = 0x12   # qemu-server puts net0 at PCI slot 18 (the guest names it ens18), net1 at 19, ...
# q35: qemu-server reads /usr/share/qemu-server/pve-q35-4.0.cfg, whose DMI-to-PCI bridge at 1e.0 carries the
# PCI bridge "pci.0" where net0 sits at 0x12 (upstream proxmox/qemu-server pve-q35-4.0.cfg; plain q35 has no pci.0)
Q35_PCI_BRIDGES = ["-device", "i82801b11-bridge,id=pcidmi,bus=pcie.0,addr=0x1e",
                   "-device", "pci-bridge,id=pci.0,bus=pcidmi,addr=0x1,chassis_nr=1"]


@dataclass
class Deferred:
    """A handler's slow part (the guest agent's socket), run after the server's lock is released."""

    fn: Callable[[], Any]


def _opts(value: str) -> tuple[str, dict[str, str]]:
    parts = value.split(",")
    first = parts[0].split("=", 1)[1] if parts[0].startswith(("file=", "volume=")) else parts[0]
    return first, dict(p.split("=", 1) for p in parts[1:] if "=" in p)


class QgaError(Exception):
    pass


def qga(sock: Path, command: str, *, timeout: float = 5.0, expect_reply: bool = True) -> Any:
    """One guest agent command over the virtio-serial socket, the way qemu-server's agent calls do:
    0xFF to reset the agent's parser, guest-sync-delimited with a fresh id (the reply comes after a
    0xFF sentinel, so stale output of an earlier, abandoned call is skipped), then the command."""
    sync_id = int.from_bytes(os.urandom(4), "big") & 0x7FFFFFFF
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(str(sock))
            s.sendall(b"\xff" + json.dumps({"execute": "guest-sync-delimited", "arguments": {"id": sync_id}}).encode()
                      + b"\n")
            buf = b""
            while True:   # skip to the sentinel, then read the sync reply
                chunk = s.recv(4096)
                if not chunk:
                    raise QgaError("guest agent socket closed")
                buf += chunk
                if b"\xff" in buf:
                    buf = buf.rsplit(b"\xff", 1)[1]
                    while b"\n" not in buf:
                        more = s.recv(4096)
                        if not more:
                            raise QgaError("guest agent socket closed")
                        buf += more
                    line, buf = buf.split(b"\n", 1)
                    if json.loads(line).get("return") == sync_id:
                        break
            s.sendall(json.dumps({"execute": command}).encode() + b"\n")
            if not expect_reply:
                return None
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise QgaError("guest agent socket closed")
                buf += chunk
            reply = json.loads(buf.split(b"\n", 1)[0])
    except (OSError, ValueError) as e:   # socket.timeout is an OSError
        raise QgaError(f"got timeout" if isinstance(e, socket.timeout) else str(e)) from e
    if "error" in reply:
        raise QgaError(str(reply["error"].get("desc", reply["error"])))
    return reply.get("return")


def qmp(sock: Path, commands: list[dict[str, Any]], timeout: float = 5.0) -> None:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(sock))
        f = s.makefile("rwb")
        f.readline()  # greeting
        for cmd in [{"execute": "qmp_capabilities"}, *commands]:
            f.write(json.dumps(cmd).encode() + b"\n")
            f.flush()
            while True:
                line = f.readline()
                if not line:
                    return  # quit closes the socket
                msg = json.loads(line)
                if "return" in msg or "error" in msg:
                    if "error" in msg:
                        raise OSError(f"QMP {cmd['execute']}: {msg['error']}")
                    break


class PveNodeServer(PveTestServer):
    def __init__(self, apidata: Path, tls_dir: Path, storage_dir: Path, *, boot: bool = False,
                 run_dir: Path | None = None, memory_cap_mb: int = 1024,
                 nodes: dict[str, tuple[str, Path]] | None = None):
        super().__init__(apidata, tls_dir)
        self.storage_dir = storage_dir
        # node -> (its dir storage, the storage's directory); pve1's 'local' always
        self.node_storages: dict[str, tuple[str, Path]] = {"pve1": ("local", storage_dir), **(nodes or {})}
        for node, (sid, path) in self.node_storages.items():
            (path / "images").mkdir(parents=True, exist_ok=True)
            entry = self.state.nodes.setdefault(node, {"storages": {}, "bridges": ["vmbr0"]})
            entry["storages"][sid] = Storage(sid, "dir", "images,iso", path=str(path))
        self.boot = boot
        self.run_dir = run_dir or (tls_dir / "qemu-server")
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.memory_cap_mb = memory_cap_mb
        self.procs: dict[int, subprocess.Popen] = {}
        self.started: list[tuple[int, list[str]]] = []   # every QEMU command line, in order
        self.configs_at_start: dict[int, dict[str, str]] = {}   # the stored config each VM was last started from
        self.ssh_forwards: dict[int, int] = {}   # vmid -> loopback port forwarded to net0's guest port 22 (module doc)
        inner = self.api.handle

        def handle(method, path, params, headers):
            with self.state.lock:
                self._sync_from_disk()
            result = inner(method, path, params, headers)
            return result.fn() if isinstance(result, Deferred) else result

        self.api.handle = handle  # the HTTP handler calls api.handle
        free = self.state.free_volume

        def free_volume(node: str, volid: str) -> None:  # a dir storage's volume is its file
            free(node, volid)
            sid, _, name = volid.partition(":")
            own = self.node_storages.get(node)
            if own and own[0] == sid and re.fullmatch(r"\d+/vm-\d+-disk-\d+\.(?:qcow2|raw)", name):
                (own[1] / "images" / name).unlink(missing_ok=True)

        self.state.free_volume = free_volume
        if boot:
            self._install_boot_handlers()

    def _sync_from_disk(self) -> None:
        for node, (sid, path) in self.node_storages.items():
            st = self.state.nodes[node]["storages"][sid]
            for f in (path / "images").glob("*/*"):
                m = VOLUME_FILE.fullmatch(f.name)
                if not m or f.parent.name != m.group(1):
                    continue  # temporary (.partial) names are not volumes yet
                volid = f"{sid}:{m.group(1)}/{f.name}"
                if volid not in st.volumes:  # Proxmox lists a volume's virtual size
                    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(f)], check=True,
                                                     capture_output=True, text=True).stdout)
                    st.volumes[volid] = Volume(volid, int(info["virtual-size"]), m.group(2), int(m.group(1)))
            # a volume whose file is gone (destroyed through the API, or by hand) is gone
            for volid in [v for v in st.volumes
                          if re.fullmatch(rf"{re.escape(sid)}:(\d+)/vm-\d+-disk-\d+\.(qcow2|raw)", v)]:
                if not (path / "images" / volid.split(":", 1)[1]).is_file():
                    st.volumes.pop(volid, None)

    # what a test asserts: how many VMs and volumes exist for a vmid
    def vms_with(self, vmid: int) -> list[int]:
        return [v for v in self.state.vms if v == vmid]

    def volumes_of(self, vmid: int, node: str = "pve1") -> list[str]:
        return sorted(v.volid for st in self.state.nodes[node]["storages"].values()
                      for v in st.volumes.values() if v.vmid == vmid)

    def node_of(self, vmid: int) -> str | None:
        vm = self.state.vms.get(vmid)
        return vm["node"] if vm else None

    # ------------------------------------------------------------------ the booting node
    def paths(self, vmid: int) -> dict[str, Path]:
        r = self.run_dir
        return {"qga": r / f"{vmid}.qga", "qmp": r / f"{vmid}.qmp", "serial": r / f"{vmid}.serial0",
                "serial_log": r / f"{vmid}.serial.log", "stderr": r / f"{vmid}.qemu-stderr", "vars": r / f"{vmid}.efivars.fd"}

    def volume_file(self, volid: str, node: str = "pve1") -> tuple[Path, str]:
        sid, _, name = volid.partition(":")
        st = self.state.nodes[node]["storages"].get(sid)
        if st is None or not st.path or not re.fullmatch(r"\d+/vm-\d+-disk-\d+\.(qcow2|raw)", name):
            raise ApiError(500, f"volume '{volid}' has no file on test node {node} (only its dir storage has)")
        f = Path(st.path) / "images" / name
        if not f.is_file():
            raise ApiError(500, f"volume '{volid}' does not exist")
        return f, name.rsplit(".", 1)[1]

    def showcmd(self, vmid: int) -> list[str]:
        """The QEMU command line for a VM's stored configuration, as qemu-server builds it (TCG here)."""
        cfg = self.state.vms[vmid]["config"]
        p = self.paths(vmid)
        machine = "q35" if str(cfg.get("machine", "")).startswith("q35") else "pc"
        sockets, cores = int(cfg.get("sockets", 1)), int(cfg.get("cores", 1))
        memory = min(int(cfg.get("memory", 512)), self.memory_cap_mb)
        argv = [QEMU, "-name", f"{cfg.get('name', f'vm{vmid}')},debug-threads=on", "-nodefaults",
                "-accel", "tcg", "-machine", f"type={machine}", "-cpu", "qemu64",
                "-smp", f"{sockets * cores},sockets={sockets},cores={cores},maxcpus={sockets * cores}",
                "-m", str(memory), "-display", "none", "-no-shutdown",
                "-chardev", f"socket,id=qmp,path={p['qmp']},server=on,wait=off", "-mon", "chardev=qmp,mode=control"]
        m = re.search(r"uuid=([0-9a-fA-F-]{36})", str(cfg.get("smbios1", "")))
        if m:
            argv += ["-uuid", m.group(1), "-smbios", f"type=1,uuid={m.group(1)}"]
        if machine == "q35":
            argv += Q35_PCI_BRIDGES
        if cfg.get("bios") == "ovmf":
            argv += ["-drive", f"if=pflash,unit=0,format=raw,readonly=on,file={OVMF_CODE}"]
            efi = cfg.get("efidisk0")
            if not efi:
                raise ApiError(500, "bios=ovmf without efidisk0: qemu-server would use a temporary EFI vars disk")
            vol, _ = _opts(efi)
            try:
                vars_file, vfmt = self.volume_file(vol, self.state.vms[vmid]["node"])
            except ApiError:   # allocated by this server in memory: its vars live in the run dir
                vars_file, vfmt = p["vars"], "raw"
                if not vars_file.exists():
                    shutil.copy(OVMF_VARS, vars_file)
            argv += ["-drive", f"if=pflash,unit=1,id=drive-efidisk0,format={vfmt},file={vars_file}"]
        # serial: the socket qemu-server makes for serial0=socket; always logged here (see module doc)
        if str(cfg.get("serial0", "")) == "socket":
            argv += ["-chardev", f"socket,id=serial0,path={p['serial']},server=on,wait=off,logfile={p['serial_log']}"]
        else:
            argv += ["-chardev", f"file,id=serial0,path={p['serial_log']}"]
        argv += ["-device", "isa-serial,chardev=serial0"]
        # the guest agent's channel
        if str(cfg.get("agent", "")).startswith(("1", "enabled=1")):
            argv += ["-chardev", f"socket,path={p['qga']},server=on,wait=off,id=qga0",
                     "-device", "virtio-serial,id=qga0",
                     "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
        # disks
        order = (re.search(r"order=([^,;]+(?:;[^,;]+)*)", str(cfg.get("boot", ""))) or [None, ""])[1].split(";")
        scsihw = cfg.get("scsihw", "lsi")
        if scsihw == "virtio-scsi-pci" and any(re.fullmatch(r"scsi\d+", k) for k in cfg):
            argv += ["-device", "virtio-scsi-pci,id=scsihw0"]
        for key in sorted((k for k in cfg if DRIVE_KEY.fullmatch(k)), key=lambda k: (k[:4], int(re.sub(r"\D", "", k)))):
            vol, o = _opts(cfg[key])
            if vol in ("none", "cdrom") or o.get("media") == "cdrom":
                continue
            f, fmt = self.volume_file(vol, self.state.vms[vmid]["node"])
            cache = o.get("cache", "none")
            cache_opts = {"none": "cache.direct=on,cache.no-flush=off", "writeback": "cache.direct=off",
                          "writethrough": "cache.direct=off,cache.writeback=off", "directsync": "cache.direct=on,cache.writeback=off",
                          "unsafe": "cache.direct=off,cache.no-flush=on"}.get(cache, "cache.direct=on")
            drive = f"file={f},if=none,id=drive-{key},format={fmt},aio=threads,{cache_opts}"
            if o.get("discard") == "on":
                drive += ",discard=unmap,detect-zeroes=unmap"
            argv += ["-drive", drive]
            boot = f",bootindex={100 + order.index(key)}" if key in order else ""
            rot = ",rotation_rate=1" if o.get("ssd") == "1" else ""
            n = int(re.sub(r"\D", "", key))
            if key.startswith("scsi"):
                if scsihw == "virtio-scsi-single":
                    ctl = f"virtioscsi{n}"
                    iot = ""
                    if o.get("iothread") == "1":
                        argv += ["-object", f"iothread,id=iothread-{ctl}"]
                        iot = f",iothread=iothread-{ctl}"
                    argv += ["-device", f"virtio-scsi-pci,id={ctl}{iot}"]
                    bus = f"{ctl}.0"
                elif scsihw == "virtio-scsi-pci":
                    bus = "scsihw0.0"
                else:
                    raise ApiError(500, f"test node: scsihw {scsihw!r} not modelled")
                argv += ["-device", f"scsi-hd,bus={bus},channel=0,scsi-id=0,lun={n if scsihw == 'virtio-scsi-pci' else 0},"
                                    f"drive=drive-{key},id={key}{rot}{boot}"]
            elif key.startswith("sata"):
                argv += ["-device", "ahci,id=ahci0"] if "ahci0" not in " ".join(argv) else []
                argv += ["-device", f"ide-hd,bus=ahci0.{n},drive=drive-{key},id={key}{rot}{boot}"]
            elif key.startswith("virtio"):
                argv += ["-device", f"virtio-blk-pci,drive=drive-{key},id={key}{boot}"]
            else:
                argv += ["-device", f"ide-hd,bus=ide.{n // 2},unit={n % 2},drive=drive-{key},id={key}{boot}"]
        # NICs: the bridge is QEMU user networking here
        for key in sorted((k for k in cfg if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
            model_mac, o = cfg[key].split(",")[0], dict(x.split("=", 1) for x in cfg[key].split(",")[1:] if "=" in x)
            model, _, mac = model_mac.partition("=")
            device = {"virtio": "virtio-net-pci", "e1000": "e1000", "vmxnet3": "vmxnet3", "rtl8139": "rtl8139"}.get(model)
            if device is None:
                raise ApiError(500, f"test node: NIC model {model!r} not modelled")
            n = int(key[3:])
            fwd = f",hostfwd=tcp:127.0.0.1:{self.ssh_forwards[vmid]}-:22" if n == 0 and vmid in self.ssh_forwards else ""
            argv += ["-netdev", f"user,id={key}{fwd}",
                     "-device", f"{device},mac={mac},netdev={key},bus=pci.0,addr={hex(NET_SLOT + n)},id={key}"]
        return argv

    def _install_boot_handlers(self) -> None:
        api, st = self.api, self.state
        base_start = api.handlers["h_post_nodes_node_qemu_vmid_status_start"]

        def start(user, params, node, vmid):
            upid = base_start(user=user, params=params, node=node, vmid=vmid)
            task = st.tasks[upid]
            marked_running = task.on_done

            def done(t) -> str | None:
                err = marked_running(t)
                if err:
                    return err
                try:
                    self._launch(int(vmid))
                except ApiError as e:
                    st.vms[int(vmid)]["status"] = "stopped"
                    return f"start failed: {e.message}"
                t.log.append(f"QEMU started: {' '.join(self.started[-1][1])}")
                return None

            task.on_done = done
            return upid

        def stopper(typ):
            def stop(user, params, node, vmid):
                vm = st.vms[int(vmid)]

                def done(t) -> str | None:
                    self._kill(int(vmid))
                    vm["status"] = "stopped"
                    vm["agent_up_at"] = None
                    return None

                return st.new_task(node, typ, vmid, user, done)
            return stop

        def agent(command):
            def call(user, params, node, vmid):
                vm = st.vms[int(vmid)]
                if vm["status"] != "running":
                    raise ApiError(500, f"VM {vmid} is not running")
                if not str(vm["config"].get("agent", "")).startswith(("1", "enabled=1")):
                    raise ApiError(500, "No QEMU guest agent configured")
                sock = self.paths(int(vmid))["qga"]

                def slow():
                    try:
                        return {"result": qga(sock, command)}
                    except QgaError as e:   # qemu-server's wording
                        raise ApiError(500, f"VM {vmid} qmp command '{command}' failed - {e}")
                return Deferred(slow)
            return call

        api.handlers["h_post_nodes_node_qemu_vmid_status_start"] = start
        api.handlers["h_post_nodes_node_qemu_vmid_status_stop"] = stopper("qmstop")
        api.handlers["h_post_nodes_node_qemu_vmid_status_shutdown"] = stopper("qmshutdown")
        api.handlers["h_post_nodes_node_qemu_vmid_agent_ping"] = agent("guest-ping")
        api.handlers["h_get_nodes_node_qemu_vmid_agent_network_get_interfaces"] = agent("guest-network-get-interfaces")

    def _launch(self, vmid: int) -> None:
        argv = self.showcmd(vmid)
        p = self.paths(vmid)
        for k in ("qga", "qmp", "serial", "serial_log"):
            p[k].unlink(missing_ok=True)
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=open(p["stderr"], "wb"), start_new_session=True)
        deadline = time.monotonic() + 30
        while not p["qmp"].exists():   # QEMU is up once its QMP socket is
            if proc.poll() is not None or time.monotonic() > deadline:
                self._reap(proc)
                raise ApiError(500, f"QEMU exited: {p['stderr'].read_text(errors='replace').strip()[-500:]}")
            time.sleep(0.05)
        self.procs[vmid] = proc
        self.started.append((vmid, argv))
        cfg = self.state.vms[vmid]["config"]
        self.configs_at_start[vmid] = dict(cfg)
        down = [k for k in cfg if re.fullmatch(r"net\d+", k) and "link_down=1" in str(cfg[k])]
        if down:
            qmp(p["qmp"], [{"execute": "set_link", "arguments": {"name": k, "up": False}} for k in down])

    @staticmethod
    def _reap(proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)

    def _kill(self, vmid: int) -> None:
        proc = self.procs.pop(vmid, None)
        if proc is None:
            return
        try:
            qmp(self.paths(vmid)["qmp"], [{"execute": "quit"}], timeout=3)
            proc.wait(timeout=10)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass
        self._reap(proc)

    def running_qemu(self) -> list[int]:
        return sorted(v for v, p in self.procs.items() if p.poll() is None)

    def serial_log(self, vmid: int) -> str:
        try:
            return self.paths(vmid)["serial_log"].read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        for vmid in list(self.procs):
            self._kill(vmid)
        super().stop()
