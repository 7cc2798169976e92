"""The finalize run: check the target, create the VM, wait, start, verify; clean up on failure.

Order matters for "nothing half-created": every request is schema-checked and every
precondition (node, storage, bridges, vmid, converted volumes) is read before the first
write. After the VM exists, a failure removes what this run created (unless
``keep_failed``) and never touches anything it did not create: a VM holding volumes made
by ``hostside`` is stopped and left in place, because destroying it would free them.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from guestprep.errors import ConfigError, GuestprepError
from guestprep.proxmox.client import PveApiError, PveClient
from guestprep.finalize.config_builder import VmBuild, build_config
from guestprep.finalize.manifests import check_attachable, is_partial_name, load_manifests
from guestprep.handoff import IMPORT_NAME, Handoff, check_import_from
from guestprep.target_policy import BLOCK_STORAGE_TYPES

QEMU = "/nodes/{node}/qemu"
VM = "/nodes/{node}/qemu/{vmid}"


class BootNotVerified(GuestprepError):
    """The created VM did not boot as verified (stopped, no agent, MACs or addresses not restored)."""

    exit_code = 1


@dataclass
class FinalizeResult:
    vmid: int
    node: str
    build: VmBuild
    created: bool = False
    started: bool = False
    verified: dict[str, Any] = field(default_factory=dict)
    cleanup: str = ""
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {"vmid": self.vmid, "node": self.node, "created": self.created, "started": self.started,
                "verified": self.verified, "cleanup": self.cleanup, "dry_run": self.dry_run,
                "config": self.build.to_dict()}


@dataclass
class FlowOptions:
    dry_run: bool = False
    keep_failed: bool = False
    accept_blocked: bool = False
    task_timeout: float = 6 * 3600.0
    agent_timeout: float = 600.0
    agent_poll: float = 2.0
    strategy: str | None = None       # explicit --strategy; None: policy, else the evidence decides
    boot_settle: float = 180.0        # without a known agent: seconds of uptime taken as "booted"
    manifest_dirs: list[str] = field(default_factory=list)  # guestprep-host manifests; default: the hand-off's dir


class Finalizer:
    def __init__(self, client: PveClient, options: FlowOptions, say: Callable[[str], None] = lambda s: None,
                 checkpoint: Callable[[str], None] = lambda point: None):
        # checkpoint(point): called once each stage of the VM is in place ("created", "first_boot",
        # "detached"); the cutover's fault injection kills the process there (guestprep/cutover/machine.py)
        self.c, self.o, self.say, self.checkpoint = client, options, say, checkpoint

    # ------------------------------------------------------------------ checks before any write
    def _resolve_vmid(self, h: Handoff) -> int:
        want = h.policy.vmid
        if want is not None:
            taken = {r.get("vmid") for r in self.c.get("/cluster/resources", type="vm")}
            if want in taken:
                raise ConfigError(f"vmid {want} already exists in the cluster; refusing to touch it", where="policy: vmid")
            return want
        return int(self.c.get("/cluster/nextid"))

    def _check_node(self, node: str) -> None:
        nodes = {n.get("node"): n for n in self.c.get("/nodes")}
        if node not in nodes:
            raise ConfigError(f"node {node!r} is not in the cluster (nodes: {', '.join(sorted(nodes))})", where="policy: node")
        if nodes[node].get("status") not in (None, "online"):
            raise ConfigError(f"node {node!r} is {nodes[node].get('status')}", where="policy: node")

    @property
    def auth_user(self) -> str:
        """The identity Proxmox checks: a token is user@realm!name, never plain root@pam."""
        conn = self.c.conn
        return f"{conn.user}!{conn.token_name}" if conn.token_name else conn.user

    def _import_volumes(self, h: Handoff, node: str) -> dict[str, str]:
        """Disk label -> an existing 'import' volume holding the disk's import path.

        Recorded in the hand-off (policy import_storages), or found by Proxmox's own mount
        convention: a datastore mapped to /mnt/pve/<sid> where <sid> has content 'import'
        and the file sits in its import/ directory. Volume ids need no root@pam."""
        storages = {s["storage"]: s for s in self.c.get("/nodes/{node}/storage", {"node": node})}
        importable = {sid for sid, st in storages.items()
                      if st.get("active", 1) and "import" in str(st.get("content", "")).split(",")}
        listed: dict[str, set[str]] = {}

        def exists(volid: str) -> bool:
            sid = volid.split(":")[0]
            if sid not in listed:
                listed[sid] = {v.get("volid") for v in self.c.get("/nodes/{node}/storage/{storage}/content",
                                                                  {"node": node, "storage": sid}, content="import")}
            return volid in listed[sid]

        out: dict[str, str] = {}
        for loc in h.disks:
            if loc.volid or not loc.import_from:
                continue
            if loc.import_volid:
                sid = loc.import_volid.split(":")[0]
                if sid not in importable or not exists(loc.import_volid):
                    raise ConfigError(f"disk {loc.label}: import volume {loc.import_volid!r} is not on node {node} "
                                      f"(storage {sid!r} must be active with content 'import' and hold the file)",
                                      where="hand-off: disks")
                out[loc.label] = loc.import_volid
                continue
            root = h.policy.datastores.get(loc.datastore or "")
            parent, name = os.path.split(loc.import_from)
            if not root or parent != os.path.join(root, "import") or not IMPORT_NAME.fullmatch(name):
                continue
            sid = os.path.basename(root)
            if root == f"/mnt/pve/{sid}" and sid in importable and exists(f"{sid}:import/{name}"):
                out[loc.label] = f"{sid}:import/{name}"
        return out

    def _check_target(self, b: VmBuild, h: Handoff) -> None:
        node = b.node
        storages = {s["storage"]: s for s in self.c.get("/nodes/{node}/storage", {"node": node})}
        needed = {h.policy.storage} | {v.split(":")[0] for v in b.foreign_volumes}
        for sid in sorted(needed):
            st = storages.get(sid)
            if st is None:
                raise ConfigError(f"storage {sid!r} does not exist on node {node} (has: {', '.join(sorted(storages))})",
                                  where="policy: storage")
            if not st.get("active", 1):
                raise ConfigError(f"storage {sid!r} is not active on node {node}", where="policy: storage")
            if "images" not in str(st.get("content", "")).split(","):
                raise ConfigError(f"storage {sid!r} does not hold VM disk images (content={st.get('content')})",
                                  where="policy: storage")
        target = storages[h.policy.storage] if h.policy.storage in storages else {}
        if h.policy.format == "qcow2" and target.get("type") in BLOCK_STORAGE_TYPES:
            raise ConfigError(f"format qcow2 on storage {h.policy.storage!r} (type {target.get('type')}): it holds raw "
                              "volumes only (and qcow2 on ZFS is copy-on-write twice); use format raw",
                              where="policy: format")
        bridges = {n["iface"] for n in self.c.get("/nodes/{node}/network", {"node": node}, type="any_bridge")}
        for t in h.policy.network_map.values():
            if t.bridge not in bridges:
                raise ConfigError(f"bridge {t.bridge!r} does not exist on node {node} (has: {', '.join(sorted(bridges))})",
                                  where="policy: network_map")
        for volid in b.foreign_volumes:
            if is_partial_name(volid):
                check_attachable(volid, h, {}, {}, [])     # refused by name, before any lookup
        dirs = self.o.manifest_dirs or ([os.path.dirname(h.path)] if h.path else [])
        manifests = load_manifests(dirs) if b.foreign_volumes else {}
        for volid in b.foreign_volumes:
            sid = volid.split(":")[0]
            content = {v["volid"]: v for v in self.c.get("/nodes/{node}/storage/{storage}/content",
                                                           {"node": node, "storage": sid})}
            vol = content.get(volid)
            if vol is None:
                raise ConfigError(f"converted volume {volid!r} does not exist on node {node}", where="hand-off: disks")
            if vol.get("vmid") not in (None, b.vmid, str(b.vmid)):
                raise ConfigError(f"volume {volid!r} belongs to VM {vol.get('vmid')}, not {b.vmid}", where="hand-off: disks")
            check_attachable(volid, h, vol, manifests, dirs)

    def _validate(self, b: VmBuild) -> None:
        self.c.schema.validate("POST", QEMU, b.params, {"node": b.node})

    # ------------------------------------------------------------------ run
    def run(self, h: Handoff) -> FinalizeResult:
        for i, loc in enumerate(h.disks):
            if loc.import_from and not loc.volid:
                check_import_from(h, i)   # the paths this run will have Proxmox import
        # Validate with a placeholder id before the first call, then for real.
        first = build_config(h, h.policy.vmid or 100, strategy=self.o.strategy)
        self._validate(first)
        self._check_node(first.node)
        vmid = self._resolve_vmid(h)
        b = build_config(h, vmid, strategy=self.o.strategy, import_volids=self._import_volumes(h, first.node),
                         auth_user=self.auth_user)
        if b.blocked and not self.o.accept_blocked:
            raise ConfigError("; ".join(b.blocked) + " (re-run preflight/prepare, or --accept-blocked)", where="hand-off")
        self._validate(b)
        self._check_target(b, h)
        res = FinalizeResult(vmid=vmid, node=b.node, build=b, dry_run=self.o.dry_run)
        try:
            self.say(f"creating VM {vmid} on {b.node}")
            upid = self.c.call("POST", QEMU, {"node": b.node}, b.params)
            res.created = True
            self.c.wait_task(b.node, upid, f"create VM {vmid}", self.o.task_timeout)
            self.checkpoint("created")
            if self.o.dry_run or not h.policy.start:
                return res
            self._start(res)
            if not b.switch:
                res.verified = self._verify(b)
                return res
            agent = self._first_boot_judged(b)
            self.checkpoint("first_boot")
            self._switch_from_sata(b)
            res.verified = self._verify(b) if agent else self._wait_running(b)
            return res
        except GuestprepError as e:
            if res.created and not self.o.dry_run:
                res.cleanup = self._cleanup(b)
                e.message = f"{e.message}\n  cleanup: {res.cleanup}"
            raise

    def _first_boot_judged(self, b: VmBuild) -> bool:
        """sata-first's first boot: wait for the agent only when the facts show it installed; otherwise
        the Proxmox side (start task, running state, a clean ACPI shutdown) is all we have. Whether
        the agent was used."""
        agent = bool(b.strategy and b.strategy.agent_known)
        if agent:
            self._verify(b)
        else:
            self.say("sata-first: the guest agent is not known to be installed (facts): judging the first boot "
                     f"by the Proxmox start task and {self.o.boot_settle:.0f}s of running state, then a clean "
                     "ACPI shutdown")
            self._wait_running(b)
        return agent

    def _start(self, res: FinalizeResult) -> None:
        b = res.build
        self.say(f"starting VM {b.vmid}")
        upid = self.c.call("POST", f"{VM}/status/start", {"node": b.node, "vmid": b.vmid})
        res.started = True
        self.c.wait_task(b.node, upid, f"start VM {b.vmid}", self.o.task_timeout)

    def _wait_running(self, b: VmBuild) -> dict[str, Any]:
        """Without an agent: the VM stays running for boot_settle seconds (Proxmox's view only)."""
        pp = {"node": b.node, "vmid": b.vmid}
        start = time.monotonic()
        deadline = start + self.o.boot_settle + self.o.agent_timeout
        while True:
            st = self.c.get(f"{VM}/status/current", pp)
            if st.get("status") != "running":
                raise BootNotVerified(f"VM stopped during its first boot (status {st.get('status')!r})",
                                         where=f"VM {b.vmid}")
            uptime = st.get("uptime")
            up = float(uptime) if isinstance(uptime, (int, float)) else time.monotonic() - start
            if up >= self.o.boot_settle:
                return {"agent": "not checked (not known to be installed)", "boot": f"running for {up:.0f}s",
                        "macs": [], "addresses": []}
            if time.monotonic() > deadline:
                raise BootNotVerified("VM did not reach its settle time", where=f"VM {b.vmid}")
            self.c.sleep(self.o.agent_poll)

    def _verify(self, b: VmBuild) -> dict[str, Any]:
        """Guest agent answers; every source MAC is present; expected addresses are back."""
        pp = {"node": b.node, "vmid": b.vmid}
        deadline = time.monotonic() + self.o.agent_timeout
        last = ""
        while True:
            try:
                self.c.call("POST", f"{VM}/agent/ping", pp)
                break
            except PveApiError as e:
                last = e.message
            if time.monotonic() > deadline:
                raise BootNotVerified(f"guest agent did not answer within {self.o.agent_timeout:.0f}s ({last}): "
                                         "the guest may not have booted", where=f"VM {b.vmid}")
            self.c.sleep(self.o.agent_poll)
        ifaces = self.c.call("GET", f"{VM}/agent/network-get-interfaces", pp).get("result", [])
        macs = {str(i.get("hardware-address", "")).lower() for i in ifaces}
        addrs = {a.get("ip-address") for i in ifaces for a in i.get("ip-addresses") or []}
        missing_macs = [m for m in b.expected_macs if m not in macs]
        missing_addrs = [a for a in b.expected_addresses if a not in addrs]
        if missing_macs or missing_addrs:
            parts = []
            if missing_macs:
                parts.append(f"source MAC(s) not seen in the guest: {', '.join(missing_macs)}")
            if missing_addrs:
                parts.append(f"expected address(es) not restored: {', '.join(missing_addrs)}")
            raise BootNotVerified("; ".join(parts) + f" (guest reports {sorted(a for a in addrs if a)})",
                                     where=f"VM {b.vmid}")
        return {"agent": "ok", "macs": b.expected_macs, "addresses": sorted(a for a in addrs if a)}

    def _switch_from_sata(self, b: VmBuild) -> None:
        """sata-first phase 2: shut down, move the system disk to scsi0, drop the dummy disk."""
        s = b.switch
        assert s is not None
        pp = {"node": b.node, "vmid": b.vmid}
        self.say(f"sata-first: moving the system disk of VM {b.vmid} to {s.system_to}")
        upid = self.c.call("POST", f"{VM}/status/shutdown", pp, {"timeout": 600})
        self.c.wait_task(b.node, upid, f"shut down VM {b.vmid}", self.o.task_timeout)
        cfg = self.c.get(f"{VM}/config", pp)
        system_vol = str(cfg[s.system_from]).split(",")[0]
        dummy_vol = str(cfg[s.dummy_slot]).split(",")[0]
        upid = self.c.call("POST", f"{VM}/config", pp, {"delete": f"{s.system_from},{s.dummy_slot}"})
        self.c.wait_task(b.node, upid, "detach sata system disk")
        self.checkpoint("detached")
        cfg = self.c.get(f"{VM}/config", pp)
        unused_dummy = [k for k, v in cfg.items() if k.startswith("unused") and str(v).split(",")[0] == dummy_vol]
        self._attach_system(b, system_vol, unused_dummy)

    def _attach_system(self, b: VmBuild, system_vol: str, unused_dummy: list[str]) -> None:
        """sata-first's last change: the system disk on its final bus and boot order, the detached
        dummy's volume freed (one config call), then the start."""
        s, pp = b.switch, {"node": b.node, "vmid": b.vmid}
        assert s is not None
        params = {s.system_to: f"{system_vol},{s.disk_options}", "boot": s.boot}
        if unused_dummy:
            params["delete"] = ",".join(unused_dummy)
        upid = self.c.call("POST", f"{VM}/config", pp, params)
        self.c.wait_task(b.node, upid, f"attach system disk as {s.system_to}")
        upid = self.c.call("POST", f"{VM}/status/start", pp)
        self.c.wait_task(b.node, upid, f"start VM {b.vmid} on {s.system_to}", self.o.task_timeout)

    # ------------------------------------------------------------------ a copy whose creator was killed
    def switch_stage(self, h: Handoff, vmid: int) -> tuple[VmBuild, str]:
        """Where the sata-first switch of the existing copy ``vmid`` stands, read from its config:
        ``none`` (no switch in this build), ``done``, ``first_boot`` (the system disk still on
        sata0: its first boot is not known to have finished), ``detached`` (killed between the
        detach and the attach: the system disk is an unusedN), ``unknown`` (not a state this flow makes)."""
        first = build_config(h, vmid, strategy=self.o.strategy)
        b = build_config(h, vmid, strategy=self.o.strategy, import_volids=self._import_volumes(h, first.node),
                         auth_user=self.auth_user)
        s = b.switch
        if s is None:
            return b, "none"
        cfg = self.c.get(f"{VM}/config", {"node": b.node, "vmid": vmid})
        system_vol = str(b.params[s.system_from]).split(",")[0]

        def vol(key: str) -> str:
            return str(cfg.get(key, "")).split(",")[0]

        if vol(s.system_to) == system_vol and s.system_from not in cfg and cfg.get("boot") == s.boot:
            return b, "done"
        if vol(s.system_from) == system_vol:
            return b, "first_boot"
        if s.system_from not in cfg and s.system_to not in cfg and \
                system_vol in [vol(k) for k in cfg if k.startswith("unused")]:
            return b, "detached"
        return b, "unknown"

    def finish_switch(self, h: Handoff, vmid: int) -> str | None:
        """Finish the sata-first switch of a copy this flow created when the process running it was
        killed mid-way: what was done, None when nothing was left. Each stage is redone from what
        the VM shows (a first boot whose end is unknown is booted again: one more boot from SATA
        is harmless; skipping it could leave Windows without vioscsi bound)."""
        b, stage = self.switch_stage(h, vmid)
        if stage in ("none", "done"):
            return None
        s = b.switch
        assert s is not None
        pp = {"node": b.node, "vmid": vmid}
        system_vol = str(b.params[s.system_from]).split(",")[0]
        if stage == "first_boot":
            if self.c.get(f"{VM}/status/current", pp).get("status") != "running":
                self._start(FinalizeResult(vmid=vmid, node=b.node, build=b))
            self._first_boot_judged(b)
            self.checkpoint("first_boot")
            self._switch_from_sata(b)
            return f"first boot from {s.system_from} done again, then the system disk moved to {s.system_to}"
        if stage == "detached":
            cfg = self.c.get(f"{VM}/config", pp)
            handed = {str(v).split(",")[0] for k, v in b.params.items() if k != s.dummy_slot}
            # the detached dummy: the one unused volume this flow made (never a hand-off volume)
            dummies = [k for k, v in cfg.items() if k.startswith("unused")
                       and str(v).split(",")[0] not in handed | {system_vol}]
            self._attach_system(b, system_vol, dummies)
            return f"the system disk moved from unused to {s.system_to} (killed between detach and attach)"
        cfg = self.c.get(f"{VM}/config", pp)
        raise ConfigError(f"VM {vmid}: its sata-first switch is in a state guestprep does not make "
                          f"({s.system_from}={cfg.get(s.system_from)!r}, {s.system_to}={cfg.get(s.system_to)!r}, "
                          f"boot={cfg.get('boot')!r}); inspect it, then finish the switch by hand",
                          where=f"VM {vmid}")

    # ------------------------------------------------------------------ cleanup
    def _cleanup(self, b: VmBuild) -> str:
        if self.o.keep_failed:
            return f"VM {b.vmid} kept for inspection (--keep-failed)"
        pp = {"node": b.node, "vmid": b.vmid}
        try:
            exists = any(r.get("vmid") == b.vmid for r in self.c.get("/cluster/resources", type="vm"))
            if not exists:
                return f"Proxmox already removed the failed VM {b.vmid}; nothing left"
            status = self.c.get(f"{VM}/status/current", pp).get("status")
            if status == "running":
                upid = self.c.call("POST", f"{VM}/status/stop", pp)
                self.c.wait_task(b.node, upid, f"stop VM {b.vmid}")
            if b.foreign_volumes:
                return (f"VM {b.vmid} stopped and LEFT in place: it holds volumes this run did not create "
                        f"({', '.join(b.foreign_volumes)}) and destroying it would free them; inspect, then "
                        f"detach them or remove the VM yourself")
            # destroy-unreferenced-disks stays 0: unattached vm-N-* volumes may be hostside's, not ours
            upid = self.c.call("DELETE", VM, pp, {"purge": 1, "destroy-unreferenced-disks": 0})
            self.c.wait_task(b.node, upid, f"destroy VM {b.vmid}")
            return f"VM {b.vmid} and the disks this run created were removed"
        except GuestprepError as e:
            return f"cleanup of VM {b.vmid} FAILED ({e}); remove it by hand"
