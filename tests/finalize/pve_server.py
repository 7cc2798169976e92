"""An in-repo Proxmox VE API test server (HTTPS, ticket + API token auth).

It keeps an in-memory cluster (nodes, storages with volumes, bridges, VMs, tasks with
UPIDs and logs) and validates EVERY request against the full published schema
(../shared/pve-api/apidata.json), answering violations the way Proxmox does: HTTP 400
with ``{"errors": {param: message}, "data": null}``. Semantics the finalizer relies on
are modelled after qemu-server: VM creation allocates/imports volumes in a task and
removes them again if the task fails; deleting a drive slot of a VM moves the volume to
``unusedN``; deleting ``unusedN`` or destroying the VM frees volumes the VM owns.

Who may import from a filesystem path is modelled after PVE::Storage::check_volume_access
(proxmox/pve-storage src/PVE/Storage.pm, commit 0066560d):
``die "Only root can pass arbitrary filesystem paths." if $user ne 'root@pam';`` — the
user being the authenticated id, which for an API token is ``user@realm!name``, so even a
root@pam token is refused. qemu-server calls it for ``import-from`` (PVE/API2/Qemu.pm,
$check_storage_access). A volume of an ``import``-content storage (``sid:import/x.vmdk``,
files directly in ``<path>/import/``, PVE::Storage path_to_volume_id) is allowed instead.

Faults are injected through ``server.faults`` (see ``Faults``) so tests can drive the
error paths: API 4xx/5xx, a task failing midway, an expired ticket, a silent agent.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import re
import secrets
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from guestprep.proxmox.schema import Schema, load_full

DRIVE = re.compile(r"^(scsi|sata|ide|virtio|efidisk|tpmstate)\d+$")


# --------------------------------------------------------------------------- TLS


def make_tls(dirpath: Path) -> tuple[Path, Path, Path, str]:
    """A CA and a server cert for 127.0.0.1 -> (ca.pem, cert.pem, key.pem, sha256 fingerprint)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "guestprep test PVE CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve-test")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = dirpath / "ca.pem", dirpath / "cert.pem", dirpath / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    fp = cert.fingerprint(hashes.SHA256()).hex()
    return paths[0], paths[1], paths[2], ":".join(fp[i:i + 2] for i in range(0, len(fp), 2)).upper()


# --------------------------------------------------------------------------- state


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


@dataclass
class Volume:
    volid: str
    size: int
    format: str
    vmid: int | None


@dataclass
class Storage:
    id: str
    type: str = "zfspool"
    content: str = "images,rootdir"
    active: bool = True
    volumes: dict[str, Volume] = field(default_factory=dict)
    path: str | None = None        # file storages: <path>/import/ holds 'import' volumes

    def import_file(self, volid: str) -> Path | None:
        """``sid:import/name.vmdk`` -> the file, when this storage has content 'import'."""
        m = re.fullmatch(r"[^:]+:import/([a-zA-Z0-9\-.+=_]+\.(?:ova|ovf|qcow2|raw|vmdk))", volid)
        if not m or not self.path or "import" not in self.content.split(","):
            return None
        f = Path(self.path) / "import" / m.group(1)
        return f if f.is_file() else None


ROOT_ONLY_PATHS = "Only root can pass arbitrary filesystem paths."


@dataclass
class Task:
    upid: str
    node: str
    type: str
    id: str
    user: str
    finish_at: float
    on_done: Callable[["Task"], str | None]   # returns an error message to fail the task
    log: list[str] = field(default_factory=list)
    status: str = "running"
    exitstatus: str | None = None


@dataclass
class Faults:
    """Switches the tests flip to drive error paths."""

    http: dict[str, tuple[int, str]] = field(default_factory=dict)   # "POST /nodes/{node}/qemu" -> (status, message)
    task_fail: dict[str, str] = field(default_factory=dict)          # task type ("qmcreate", "qmstart") -> error
    agent_silent: bool = False                                      # guest agent never answers
    guest_addresses: dict[str, list[str]] = field(default_factory=dict)  # MAC (lower) -> IPs the guest reports
    guest_mac_override: str | None = None                           # guest reports this MAC instead


class PveState:
    def __init__(self, schema: Schema):
        self.schema = schema
        self.lock = threading.RLock()
        self.nodes: dict[str, dict[str, Any]] = {
            "pve1": {"storages": {s.id: s for s in [Storage("local-zfs"), Storage("local", "dir", "iso,vztmpl,backup,images")]},
                     "bridges": ["vmbr0", "vmbr1"]},
            "pve2": {"storages": {"local-lvm": Storage("local-lvm", "lvmthin")}, "bridges": ["vmbr0"]},
        }
        self.vms: dict[int, dict[str, Any]] = {}
        self.tasks: dict[str, Task] = {}
        self.users = {"root@pam": "s3cret-pw"}
        self.tokens = {"root@pam!guestprep": "0b9f1c1e-2b8a-4bcb-9a1d-5a5ad1c5e001"}
        self.tickets: dict[str, float] = {}
        self.csrf: dict[str, str] = {}
        self.ticket_ttl = 7200.0
        self.task_delay = 0.05
        self.agent_delay = 0.1
        self.boot_uptime_offset = 0.0   # tests add seconds to the uptime a started VM reports
        self.faults = Faults()
        self.requests: list[tuple[str, str, dict]] = []
        self.rejected: list[tuple[str, str, dict]] = []

    # ------------------------------------------------------------------ helpers
    def storage(self, node: str, sid: str) -> Storage:
        st = self.nodes[node]["storages"].get(sid)
        if st is None:
            raise ApiError(500, f"storage '{sid}' does not exist")
        return st

    def find_volume(self, node: str, volid: str) -> Volume | None:
        sid, _, _ = volid.partition(":")
        st = self.nodes[node]["storages"].get(sid)
        return st.volumes.get(volid) if st else None

    def add_volume(self, node: str, sid: str, vmid: int | None, size: int, fmt: str = "raw", name: str | None = None) -> Volume:
        st = self.storage(node, sid)
        if name is None:
            n = 0
            while f"{sid}:vm-{vmid}-disk-{n}" in st.volumes:
                n += 1
            name = f"vm-{vmid}-disk-{n}"
        vol = Volume(f"{sid}:{name}", size, fmt, vmid)
        st.volumes[vol.volid] = vol
        return vol

    def free_volume(self, node: str, volid: str) -> None:
        sid = volid.split(":")[0]
        self.nodes[node]["storages"][sid].volumes.pop(volid, None)

    def volume_users(self, volid: str) -> list[int]:
        return [vmid for vmid, vm in self.vms.items()
                if any(isinstance(v, str) and v.split(",")[0] == volid for v in vm["config"].values())]

    def new_task(self, node: str, typ: str, vmid: int | str, user: str, on_done: Callable[[Task], str | None]) -> str:
        now = time.time()
        upid = f"UPID:{node}:{secrets.randbelow(1 << 22):08X}:{secrets.randbelow(1 << 30):08X}:{int(now):08X}:{typ}:{vmid}:{user}:"
        self.tasks[upid] = Task(upid, node, typ, str(vmid), user, now + self.task_delay, on_done)
        return upid

    def settle(self, task: Task) -> None:
        if task.status == "running" and time.time() >= task.finish_at:
            err = self.faults.task_fail.get(task.type)
            try:
                if err is None:
                    err = task.on_done(task)
            except ApiError as e:
                err = e.message
            task.status = "stopped"
            if err:
                task.log.append(f"TASK ERROR: {err}")
                task.exitstatus = err
                failed = getattr(task, "on_fail", None)
                if failed:
                    failed(task)
            else:
                task.log.append("TASK OK")
                task.exitstatus = "OK"


# --------------------------------------------------------------------------- API logic


class PveApi:
    """Routes (method, concrete path) to handlers after auth and schema validation."""

    def __init__(self, state: PveState):
        self.s = state
        self.templates = sorted(
            ((tpl, re.compile("^" + re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(tpl)) + "$"))
             for tpl in state.schema.endpoints),
            key=lambda t: t[0].count("{"))
        # handler h_post__nodes__node__qemu serves "POST /nodes/{node}/qemu" (underscores collapsed)
        self.handlers = {re.sub(r"_+", "_", n).rstrip("_"): getattr(self, n) for n in dir(self) if n.startswith("h_")}

    def route(self, path: str) -> tuple[str, dict[str, str]]:
        for tpl, rx in self.templates:
            m = rx.match(path)
            if m:
                return tpl, {k: unquote(v) for k, v in m.groupdict().items()}
        raise ApiError(501, f"Method '{path}' not implemented")

    # ------------------------------------------------------------------ auth
    def authenticate(self, method: str, tpl: str, headers: Any) -> str:
        if tpl == "/access/ticket":
            return ""
        auth = headers.get("Authorization", "")
        m = re.fullmatch(r"PVEAPIToken=([^!]+![^=]+)=(.+)", auth)
        if m:
            if self.s.tokens.get(m.group(1)) != m.group(2):
                raise ApiError(401, "invalid token value!")
            return m.group(1)   # user@realm!tokenid: what Proxmox's permission checks compare
        cookie = headers.get("Cookie", "")
        cm = re.search(r"PVEAuthCookie=([^;]+)", cookie)
        if not cm:
            raise ApiError(401, "No ticket")
        ticket = unquote(cm.group(1))
        expiry = self.s.tickets.get(ticket)
        if expiry is None or time.time() > expiry:
            raise ApiError(401, "authentication failure")
        if method != "GET" and headers.get("CSRFPreventionToken") != self.s.csrf.get(ticket):
            raise ApiError(401, "Permission check failed (invalid csrf token)")
        return ticket.split(":")[1]

    # ------------------------------------------------------------------ entry
    def handle(self, method: str, path: str, params: dict[str, str], headers: Any) -> Any:
        with self.s.lock:
            tpl, path_params = self.route(path)
            if not self.s.schema.has(method, tpl):
                raise ApiError(501, f"Method '{method} {path}' not implemented")
            user = self.authenticate(method, tpl, headers)
            self.s.requests.append((method, tpl, dict(params)))
            errors = self.s.schema.errors(method, tpl, params, path_params)
            if errors:
                self.s.rejected.append((method, tpl, dict(params)))
                raise ApiError(400, "Parameter verification failed.", errors)
            fault = self.s.faults.http.get(f"{method} {tpl}")
            if fault:
                raise ApiError(fault[0], fault[1])
            node = path_params.get("node")
            if node is not None and node not in self.s.nodes:
                raise ApiError(595, f"no such cluster node '{node}'")
            if "vmid" in path_params and tpl != "/nodes/{node}/qemu":
                vmid = int(path_params["vmid"])
                if vmid not in self.s.vms or self.s.vms[vmid]["node"] != node:
                    raise ApiError(500, f"Configuration file 'nodes/{node}/qemu-server/{vmid}.conf' does not exist")
            name = re.sub(r"_+", "_", "h_" + re.sub(r"\W", "_", f"{method} {tpl}".lower())).rstrip("_")
            handler = self.handlers.get(name)
            if handler is None:
                raise ApiError(501, f"Method '{method} {tpl}' not implemented by the test server")
            return handler(user=user, params=params, **path_params)

    # ------------------------------------------------------------------ access
    def h_post__access_ticket(self, user, params):
        username = params["username"]
        if "@" not in username and params.get("realm"):
            username = f"{username}@{params['realm']}"
        pw = params["password"]
        ok = self.s.users.get(username) == pw or (pw in self.s.tickets and time.time() <= self.s.tickets[pw])
        if not ok:
            raise ApiError(401, "authentication failure")
        ticket = f"PVE:{username}:{secrets.token_hex(8).upper()}::{secrets.token_urlsafe(24)}"
        self.s.tickets[ticket] = time.time() + self.s.ticket_ttl
        self.s.csrf[ticket] = f"{secrets.token_hex(4).upper()}:{secrets.token_urlsafe(16)}"
        return {"username": username, "ticket": ticket, "CSRFPreventionToken": self.s.csrf[ticket], "cap": {}}

    def h_get__version(self, user, params):
        return {"version": "8.4.1", "release": "8.4", "repoid": "2a5fa54a8503f96d"}

    def h_get__nodes(self, user, params):
        return [{"node": n, "status": "online", "type": "node", "maxcpu": 16, "maxmem": 64 << 30} for n in self.s.nodes]

    # ------------------------------------------------------------------ cluster
    def h_get__cluster_nextid(self, user, params):
        if "vmid" in params:
            vmid = int(params["vmid"])
            if vmid in self.s.vms:
                raise ApiError(400, "Parameter verification failed.", {"vmid": f"VM {vmid} already exists"})
            return vmid
        vmid = 100
        while vmid in self.s.vms:
            vmid += 1
        return vmid

    def h_get__cluster_resources(self, user, params):
        out = [{"id": f"qemu/{v}", "type": "qemu", "vmid": v, "node": vm["node"], "name": vm["config"].get("name", ""),
                "status": vm["status"]} for v, vm in self.s.vms.items()]
        out += [{"id": f"node/{n}", "type": "node", "node": n, "status": "online"} for n in self.s.nodes]
        out += [{"id": f"storage/{n}/{s}", "type": "storage", "node": n, "storage": s, "status": "available"}
                for n, nd in self.s.nodes.items() for s in nd["storages"]]
        t = params.get("type")
        return [r for r in out if not t or r["type"] == ("qemu" if t == "vm" else t)]

    # ------------------------------------------------------------------ node
    def h_get__nodes__node__storage(self, user, params, node):
        return [{"storage": s.id, "type": s.type, "content": s.content, "active": int(s.active), "enabled": 1,
                 "shared": 0, "avail": 1 << 40, "total": 2 << 40, "used": 1 << 40}
                for s in self.s.nodes[node]["storages"].values()
                if not params.get("storage") or params["storage"] == s.id]

    def h_get__nodes__node__storage__storage__content(self, user, params, node, storage):
        st = self.s.storage(node, storage)
        out = [{"volid": v.volid, "size": v.size, "format": v.format, "vmid": v.vmid, "content": "images"}
               for v in st.volumes.values() if not params.get("vmid") or str(v.vmid) == params["vmid"]]
        if st.path and "import" in st.content.split(",") and (Path(st.path) / "import").is_dir():
            for f in sorted((Path(st.path) / "import").iterdir()):
                volid = f"{st.id}:import/{f.name}"
                if st.import_file(volid):
                    out.append({"volid": volid, "size": f.stat().st_size, "format": f.suffix[1:], "content": "import"})
        return [v for v in out if not params.get("content") or v["content"] == params["content"]]

    def h_get__nodes__node__network(self, user, params, node):
        return [{"iface": b, "type": "bridge", "active": 1, "autostart": 1} for b in self.s.nodes[node]["bridges"]
                if params.get("type") in (None, "bridge", "any_bridge", "any_local_bridge")]

    def h_get__nodes__node__qemu(self, user, params, node):
        return [{"vmid": v, "name": vm["config"].get("name", ""), "status": vm["status"]}
                for v, vm in self.s.vms.items() if vm["node"] == node]

    def h_get__nodes__node__tasks__upid__status(self, user, params, node, upid):
        t = self.s.tasks.get(upid)
        if t is None:
            raise ApiError(500, "no such task")
        self.s.settle(t)
        out = {"upid": t.upid, "node": t.node, "status": t.status, "type": t.type, "id": t.id, "user": t.user,
               "pid": 1234, "pstart": 1, "starttime": int(t.finish_at)}
        if t.exitstatus is not None:
            out["exitstatus"] = t.exitstatus
        return out

    def h_get__nodes__node__tasks__upid__log(self, user, params, node, upid):
        t = self.s.tasks.get(upid)
        if t is None:
            raise ApiError(500, "no such task")
        self.s.settle(t)
        start, limit = int(params.get("start", 0)), int(params.get("limit", 50))
        return [{"n": i + 1, "t": line} for i, line in enumerate(t.log)][start:start + limit]

    # ------------------------------------------------------------------ qemu: drives
    def _alloc_drive(self, node: str, vmid: int, key: str, value: str, created: list[str]) -> str:
        """STORAGE:SIZE / STORAGE:0,import-from=... / existing volid -> value with a real volid."""
        parts = value.split(",")
        file_ = parts[0].split("=", 1)[1] if parts[0].startswith(("file=", "volume=")) else parts[0]
        opts = dict(p.split("=", 1) for p in parts[1:] if "=" in p)
        if file_ in ("none", "cdrom") or file_.startswith("/"):
            return value
        sid, _, vol = file_.partition(":")
        st = self.s.storage(node, sid)
        if "images" not in st.content:
            raise ApiError(500, f"storage '{sid}' does not support vm images")
        fmt = opts.get("format", "raw")
        if re.fullmatch(r"\d+(\.\d+)?", vol):
            if "import-from" in opts:
                src = opts.pop("import-from")
                if src.startswith("/"):
                    size = self._image_size(src)
                elif self._import_file(node, src):
                    size = self._image_size(str(self._import_file(node, src)))
                else:
                    sv = self.s.find_volume(node, src)
                    if sv is None:
                        raise ApiError(500, f"import-from: volume '{src}' does not exist")
                    size = sv.size
            elif key.startswith(("efidisk", "tpmstate")):
                size = 4 << 20
            else:
                size = int(float(vol) * (1 << 30))
                if size == 0:
                    raise ApiError(500, f"{key}: size 0 needs 'import-from'")
            new = self.s.add_volume(node, sid, vmid, size, fmt)
            created.append(new.volid)
            rest = ",".join(f"{k}={v}" for k, v in opts.items() if k != "format")
            return new.volid + ("," + rest if rest else "")
        existing = self.s.find_volume(node, file_)
        if existing is None:
            raise ApiError(500, f"volume '{file_}' does not exist")
        users = [u for u in self.s.volume_users(file_) if u != vmid]
        if users:
            raise ApiError(500, f"volume '{file_}' is already used by VM {users[0]}")
        return value

    def _import_file(self, node: str, volid: str) -> Path | None:
        st = self.s.nodes[node]["storages"].get(volid.partition(":")[0])
        return st.import_file(volid) if st else None

    def _check_path_access(self, user: str, cfg: dict[str, str]) -> None:
        """PVE::Storage::check_volume_access for every path a drive names (file or import-from)."""
        for k, v in cfg.items():
            if not DRIVE.match(k):
                continue
            file_ = v.split(",")[0]
            file_ = file_.split("=", 1)[1] if file_.startswith(("file=", "volume=")) else file_
            src = re.search(r"(?:^|,)import-from=([^,]+)", v)
            for path in [file_] + ([src.group(1)] if src else []):
                if path.startswith("/") and user != "root@pam":
                    raise ApiError(500, ROOT_ONLY_PATHS)

    def _image_size(self, path: str) -> int:
        if not Path(path).is_file():
            raise ApiError(500, f"import-from: '{path}' does not exist")
        out = subprocess.run(["qemu-img", "info", "--output=json", path], capture_output=True, text=True)
        if out.returncode != 0:
            raise ApiError(500, f"import-from: cannot read '{path}': {out.stderr.strip()}")
        return int(json.loads(out.stdout)["virtual-size"])

    def _check_nets(self, node: str, cfg: dict[str, str]) -> None:
        for k, v in cfg.items():
            if re.fullmatch(r"net\d+", k):
                m = re.search(r"(?:^|,)bridge=([^,]+)", v)
                if m and m.group(1) not in self.s.nodes[node]["bridges"]:
                    raise ApiError(500, f"bridge '{m.group(1)}' does not exist")

    # ------------------------------------------------------------------ qemu: create/destroy
    def h_post__nodes__node__qemu(self, user, params, node):
        vmid = int(params["vmid"])
        if vmid in self.s.vms:
            raise ApiError(500, f"unable to create VM {vmid} - VM {vmid} already exists on node '{self.s.vms[vmid]['node']}'")
        cfg = {k: v for k, v in params.items() if k not in ("vmid", "start", "node")}
        self._check_path_access(user, cfg)
        self._check_nets(node, cfg)
        for k, v in cfg.items():  # fail fast like qemu-server's pre-checks
            if DRIVE.match(k):
                file_ = v.split(",")[0]
                sid = file_.split(":")[0]
                if not file_.startswith("/") and file_ not in ("none", "cdrom"):
                    self.s.storage(node, sid)
                if "import-from=" in v:
                    src = re.search(r"import-from=([^,]+)", v).group(1)
                    if src.startswith("/") and not Path(src).is_file():
                        raise ApiError(500, f"import-from: '{src}' does not exist")
                    if not src.startswith("/") and self._import_file(node, src) is None \
                            and self.s.find_volume(node, src) is None:
                        raise ApiError(500, f"import-from: volume '{src}' does not exist")
                elif not re.fullmatch(r"[^:]+:\d+(\.\d+)?", file_) and ":" in file_:
                    if self.s.find_volume(node, file_) is None:
                        raise ApiError(500, f"volume '{file_}' does not exist")
        vm = {"node": node, "config": {}, "status": "stopped", "lock": "create", "agent_up_at": None}
        self.s.vms[vmid] = vm
        created: list[str] = []

        def done(task: Task) -> str | None:
            for k, v in cfg.items():
                if DRIVE.match(k):
                    if "import-from=" in v:
                        task.log.append(f"importing disk '{re.search(r'import-from=([^,]+)', v).group(1)}' to VM {vmid} ...")
                    vm["config"][k] = self._alloc_drive(node, vmid, k, v, created)
                    task.log.append(f"{k}: {vm['config'][k].split(',')[0]}")
                else:
                    vm["config"][k] = v
            vm["lock"] = None
            return None

        def failed(task: Task) -> None:  # qemu-server removes what a failed create allocated
            for volid in created:
                self.s.free_volume(node, volid)
            self.s.vms.pop(vmid, None)
            task.log.append(f"unable to create VM {vmid} - cleaned up")

        upid = self.s.new_task(node, "qmcreate", vmid, user, done)
        self.s.tasks[upid].on_fail = failed  # type: ignore[attr-defined]
        return upid

    def h_delete__nodes__node__qemu__vmid(self, user, params, node, vmid):
        vmid = int(vmid)
        vm = self.s.vms[vmid]
        if vm["status"] == "running":
            raise ApiError(500, f"VM {vmid} is running - destroy failed")

        def done(task: Task) -> str | None:
            for k, v in vm["config"].items():
                if DRIVE.match(k) or k.startswith("unused"):
                    vol = self.s.find_volume(node, v.split(",")[0])
                    if vol and vol.vmid == vmid:
                        self.s.free_volume(node, vol.volid)
                        task.log.append(f"Removed volume '{vol.volid}'")
            if params.get("destroy-unreferenced-disks") in ("1", "true"):
                for st in self.s.nodes[node]["storages"].values():
                    for volid, vol in list(st.volumes.items()):
                        if vol.vmid == vmid:
                            self.s.free_volume(node, volid)
            self.s.vms.pop(vmid, None)
            return None

        return self.s.new_task(node, "qmdestroy", vmid, user, done)

    # ------------------------------------------------------------------ qemu: config
    def h_get__nodes__node__qemu__vmid_config(self, user, params, node, vmid):
        vm = self.s.vms[int(vmid)]
        return dict(vm["config"], digest=secrets.token_hex(20))

    def _update_config(self, node: str, vmid: int, params: dict[str, str]) -> None:
        vm = self.s.vms[vmid]
        cfg = vm["config"]
        if vm["status"] == "running":
            raise ApiError(500, "test server: hotplug not modelled, stop the VM first")
        for key in [k for k in params.get("delete", "").split(",") if k]:
            if key not in cfg:
                continue
            value = cfg.pop(key)
            if DRIVE.match(key):
                vol = value.split(",")[0]
                if self.s.find_volume(node, vol):
                    n = 0
                    while f"unused{n}" in cfg:
                        n += 1
                    cfg[f"unused{n}"] = vol
            elif key.startswith("unused"):
                vol = self.s.find_volume(node, value)
                if vol and vol.vmid == vmid:
                    self.s.free_volume(node, vol.volid)
        sets = {k: v for k, v in params.items() if k not in ("delete", "digest", "node", "vmid")}
        self._check_nets(node, sets)
        created: list[str] = []
        for k, v in sets.items():
            if DRIVE.match(k):
                vol = v.split(",")[0]
                for uk in [uk for uk, uv in cfg.items() if uk.startswith("unused") and uv == vol]:
                    del cfg[uk]
                cfg[k] = self._alloc_drive(node, vmid, k, v, created)
            else:
                cfg[k] = v

    def h_post__nodes__node__qemu__vmid_config(self, user, params, node, vmid):
        self._check_path_access(user, params)
        self._update_config(node, int(vmid), params)
        return self.s.new_task(node, "qmconfig", vmid, user, lambda t: None)

    def h_put__nodes__node__qemu__vmid_config(self, user, params, node, vmid):
        self._check_path_access(user, params)
        self._update_config(node, int(vmid), params)
        return None

    # ------------------------------------------------------------------ qemu: status
    def h_get__nodes__node__qemu__vmid_status_current(self, user, params, node, vmid):
        vm = self.s.vms[int(vmid)]
        up = vm.get("started_at")
        return {"vmid": int(vmid), "status": vm["status"], "qmpstatus": vm["status"], "name": vm["config"].get("name", ""),
                "uptime": int(time.time() - up) if up and vm["status"] == "running" else 0,
                "agent": 1 if vm["config"].get("agent", "").startswith(("1", "enabled=1")) else 0}

    def h_post__nodes__node__qemu__vmid_status_start(self, user, params, node, vmid):
        vm = self.s.vms[int(vmid)]
        if vm["status"] == "running":
            raise ApiError(500, f"VM {vmid} already running")

        def done(task: Task) -> str | None:
            boot = re.search(r"order=([^,;]+)", vm["config"].get("boot", ""))
            if not boot or boot.group(1) not in vm["config"]:
                return "no bootable device"
            vm["status"] = "running"
            vm["started_at"] = time.time() - self.s.boot_uptime_offset
            vm["agent_up_at"] = time.time() + self.s.agent_delay
            task.log.append(f"VM {vmid} started")
            return None

        return self.s.new_task(node, "qmstart", vmid, user, done)

    def _stop(self, node, vmid, user, typ):
        vm = self.s.vms[int(vmid)]

        def done(task: Task) -> str | None:
            vm["status"] = "stopped"
            vm["agent_up_at"] = None
            return None

        return self.s.new_task(node, typ, vmid, user, done)

    def h_post__nodes__node__qemu__vmid_status_stop(self, user, params, node, vmid):
        return self._stop(node, vmid, user, "qmstop")

    def h_post__nodes__node__qemu__vmid_status_shutdown(self, user, params, node, vmid):
        return self._stop(node, vmid, user, "qmshutdown")

    # ------------------------------------------------------------------ qemu: agent
    def _agent(self, vmid: str) -> dict[str, Any]:
        vm = self.s.vms[int(vmid)]
        if vm["status"] != "running":
            raise ApiError(500, f"VM {vmid} is not running")
        if not vm["config"].get("agent", "").startswith(("1", "enabled=1")):
            raise ApiError(500, "No QEMU guest agent configured")
        if self.s.faults.agent_silent or vm["agent_up_at"] is None or time.time() < vm["agent_up_at"]:
            raise ApiError(500, "QEMU guest agent is not running")
        return vm

    def h_post__nodes__node__qemu__vmid_agent_ping(self, user, params, node, vmid):
        self._agent(vmid)
        return {"result": {}}

    def h_get__nodes__node__qemu__vmid_agent_network_get_interfaces(self, user, params, node, vmid):
        vm = self._agent(vmid)
        ifaces = [{"name": "lo", "hardware-address": "00:00:00:00:00:00",
                   "ip-addresses": [{"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8}]}]
        for k in sorted(k for k in vm["config"] if re.fullmatch(r"net\d+", k)):
            mac = re.search(r"=([0-9A-Fa-f:]{17})", vm["config"][k]).group(1).lower()
            reported = self.s.faults.guest_mac_override or mac
            ips = self.s.faults.guest_addresses.get(mac, [])
            ifaces.append({"name": f"ens{18 + int(k[3:])}", "hardware-address": reported,
                           "ip-addresses": [{"ip-address": ip, "ip-address-type": "ipv6" if ":" in ip else "ipv4",
                                             "prefix": 24} for ip in ips]})
        return {"result": ifaces}


# --------------------------------------------------------------------------- HTTP


class _Handler(BaseHTTPRequestHandler):
    api: PveApi
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):  # quiet
        pass

    def _serve(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        params: dict[str, str] = dict(parse_qsl(url.query, keep_blank_values=True))
        ctype = self.headers.get("Content-Type", "")
        if body:
            if "json" in ctype:
                params.update({k: ("1" if v is True else "0" if v is False else str(v)) for k, v in json.loads(body).items()})
            else:
                params.update(parse_qsl(body.decode(), keep_blank_values=True))
        status, payload = 200, None
        try:
            if not url.path.startswith("/api2/json/"):
                raise ApiError(404, "not found")
            data = self.api.handle(method, url.path[len("/api2/json"):], params, self.headers)
            payload = {"data": data}
        except ApiError as e:
            status = e.status
            payload = {"data": None, **({"errors": e.errors} if e.errors else {}), "message": e.message}
        raw = json.dumps(payload).encode()
        reason = payload.get("message") if status != 200 else "OK"
        self.send_response(status, (reason or "").replace("\n", " ")[:200])
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self._serve("GET")

    def do_POST(self):
        self._serve("POST")

    def do_PUT(self):
        self._serve("PUT")

    def do_DELETE(self):
        self._serve("DELETE")


class PveTestServer:
    def __init__(self, apidata: Path, tls_dir: Path):
        self.state = PveState(load_full(str(apidata)))
        self.api = PveApi(self.state)
        self.ca, cert, key, self.fingerprint = make_tls(tls_dir)
        handler = type("H", (_Handler,), {"api": self.api})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def start(self) -> "PveTestServer":
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
