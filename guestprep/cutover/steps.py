"""The cutover steps of one VM. Each is idempotent: ``check`` looks at the world and returns the
step's outputs when its post-condition already holds (nothing is done), else ``act`` does the
work and returns them. A controller killed between ``act`` and the journal's commit therefore
repeats nothing on resume: the post-condition is found and journaled.

VM changes (coexistence disk, shutdown, mark, power on) run through the operations engine
(``engine.run_one``), which plans, applies and journals them like `guestprep vm ...` does.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from guestprep.errors import GuestprepError, OperationError

from guestprep.cutover.journal import now
from guestprep.cutover.sides import NodeLink, Secrets, open_proxmox, open_vsphere, zipapp_path
from guestprep.cutover.wave import GATE_PASSES, VmPlan, Wave

VM_PATH = "/nodes/{node}/qemu/{vmid}"


class StepFailed(GuestprepError):
    exit_code = 1


# Fault injection for the kill -9 matrix: ``GUESTPREP_CUTOVER_CRASH_AFTER=<point>`` (or ``<vm>:<point>``)
# makes the process ``os._exit(137)`` there: a step's name (right after it acted, before the journal
# recorded it: guestprep/cutover/machine.py) or a stage inside finalize (``finalize.created``,
# ``finalize.first_boot``, ``finalize.detached``: guestprep/finalize/flow.py's checkpoints).
CRASH_ENV = "GUESTPREP_CUTOVER_CRASH_AFTER"


def crash_point(vm: str, point: str) -> None:
    want = os.environ.get(CRASH_ENV)
    if want and want in (point, f"{vm}:{point}"):
        os._exit(137)


@dataclass
class RunOptions:
    on_failure: str = "rollback"          # rollback | hold
    hard_power_off: bool = False
    shutdown_timeout: float = 300.0
    agent_timeout: float = 600.0
    tools_timeout: float = 600.0
    poll: float = 1.0
    accept_new_host_keys: bool = False
    console: bool = False                 # watch the copy's serial0 on its node (added as a socket if missing)


@dataclass
class Limits:
    """Semaphores shared by every VM job of a run: conversions per node and per datastore."""

    per_node: int | None = None
    per_datastore: int | None = None
    _sems: dict[str, threading.BoundedSemaphore] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def sem(self, key: str, n: int | None) -> threading.BoundedSemaphore | None:
        if not n:
            return None
        with self._lock:
            return self._sems.setdefault(key, threading.BoundedSemaphore(n))


class VmContext:
    """What the steps of one VM share: the plan, the journal, and lazily opened sides."""

    def __init__(self, wave: Wave, vm: VmPlan, journal, secrets: Secrets, options: RunOptions, limits: Limits,
                 say: Callable[[str], None]):
        self.wave, self.vm, self.journal, self.secrets = wave, vm, journal, secrets
        self.o, self.limits, self.say = options, limits, say
        self._vs = self._vm_obj = self._pve = self._node = None

    # ------------------------------------------------------------------ sides, opened when first needed
    @property
    def vsphere(self):
        if self._vs is None:
            self._vs = open_vsphere(self.wave, self.secrets)
        return self._vs

    @property
    def vm_object(self):
        from guestprep.vsphere.actions import find_vm

        if self._vm_obj is None:
            self._vm_obj = find_vm(self.vsphere, self.vm.moref)
        return self._vm_obj

    def facts(self):
        from guestprep.operations.vm import target

        return target.reread(self.vsphere, self.vm_object, f"vsphere {self.wave.vsphere['server']}")

    @property
    def pve(self):
        if self._pve is None:
            self._pve = open_proxmox(self.wave, self.o.poll)
        return self._pve

    @property
    def node(self) -> NodeLink:
        if self._node is None:
            self._node = NodeLink(self.wave.nodes[self.vm.node], self.wave_id, self.o.accept_new_host_keys)
        return self._node

    @property
    def wave_id(self) -> str:
        return self.wave.plan_hash[:16]

    def close(self) -> None:
        for side in (self._node, self._vs):
            if side is not None:
                try:
                    side.close()
                except Exception:
                    pass

    # ------------------------------------------------------------------ helpers
    def run_vm_op(self, op_id: str, options: dict[str, Any]):
        """One VM operation through the engine, journaled in the wave's state directory."""
        from guestprep.operations import engine

        facts = self.facts()
        plan, applied = engine.run_one(
            op_id, self.vsphere, facts, facts.name, options, apply=True,
            apply_options={"vm_object": self.vm_object, "server": self.wave.vsphere["server"], "moref": facts.moref,
                           "journal": str(self.wave.state_dir / "vm-journal.jsonl"), "poll": min(self.o.poll, 1.0)})
        return {"operation": op_id, "plan": plan.reason or [c.diff for c in plan.changes],
                "applied": applied.message if applied else None}

    def pp(self) -> dict[str, Any]:
        return {"node": self.vm.node, "vmid": self.vm.vmid}

    def target_vm(self) -> dict[str, Any] | None:
        """The Proxmox VM with our vmid: its status and whether it is the copy of our source."""
        found = [r for r in self.pve.get("/cluster/resources", type="vm") if r.get("vmid") == self.vm.vmid]
        if not found:
            return None
        node = found[0].get("node", self.vm.node)
        cfg = self.pve.get(VM_PATH + "/config", {"node": node, "vmid": self.vm.vmid})
        status = self.pve.get(VM_PATH + "/status/current", {"node": node, "vmid": self.vm.vmid}).get("status")
        uuid = (re.search(r"uuid=([0-9a-fA-F-]+)", str(cfg.get("smbios1", ""))) or [None, None])[1]
        ours = bool(uuid) and uuid.lower() == str(self.handoff().vm.uuid_bios or "").lower()
        return {"vmid": self.vm.vmid, "node": node, "status": status, "ours": ours, "name": cfg.get("name")}

    _handoff = None
    console_watch = None      # the serial console reader of the copy (--console), started with it

    def handoff(self):
        """The reviewed hand-off document; refused if its bytes are not the ones the wave names."""
        from guestprep.handoff import load_handoff

        if self._handoff is None:
            h = load_handoff(self.wave.handoff_path(self.vm))
            if h.sha256 != self.vm.handoff_sha256:
                raise StepFailed(f"hand-off {h.path} changed since the wave was planned (sha256 {h.sha256[:12]}, "
                                 f"wave says {self.vm.handoff_sha256[:12]})", where=self.vm.name)
            self._handoff = h
        return self._handoff

    def manifest_path(self, label: str) -> str:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", label)
        return f"{self.node.dir}/{self.vm.name}/{slug}.manifest.json"

    def local_manifests(self):
        """Where finalize keeps its copies of the node's manifests (a rehearsal keeps its own, outside the run's state)."""
        root = getattr(self, "manifests_root", None) or self.wave.state_dir / "manifests"
        return root / re.sub(r"[^A-Za-z0-9._-]+", "_", self.vm.name)

    def converted_disks(self) -> list[dict[str, Any]]:
        return [d for d in self.vm.disks if d.get("volid") and not d.get("skip")]


# --------------------------------------------------------------------------- the steps


@dataclass(frozen=True)
class Step:
    name: str
    check: Callable[[VmContext], dict[str, Any] | None]
    act: Callable[[VmContext], dict[str, Any]]
    source_down: bool = False     # once attempted, a failure needs the rollback/hold policy


def _never(ctx: VmContext) -> None:
    return None


def gate(ctx: VmContext) -> dict[str, Any]:
    v = ctx.vm
    verdict = v.gate.get("verdict")
    accepted = v.gate.get("accepted_by_reviewer")
    if accepted:  # a human wrote this into the reviewed wave: recorded, never implied
        if not (isinstance(accepted, dict) and accepted.get("by") and accepted.get("reason")):
            raise StepFailed("gate: accepted_by_reviewer needs 'by' and 'reason'", where=v.name)
    elif verdict not in GATE_PASSES:
        raise StepFailed(f"gate: preflight verdict {verdict!r} (blockers: {', '.join(v.gate.get('blockers') or []) or '?'})"
                         "; prepare the guest, or waive with a reason, and plan again", where=v.name)
    if not v.prepare_verified and not accepted:
        raise StepFailed("gate: preparation is not verified (an operation's check still fails); run "
                         "`guestprep prepare --apply` and plan again", where=v.name)
    facts = ctx.facts()
    if facts.name != v.name:
        raise StepFailed(f"gate: {v.moref} is now named {facts.name!r}, the wave says {v.name!r}", where=v.name)
    tgt = ctx.target_vm()
    if tgt is not None and not tgt["ours"]:
        raise StepFailed(f"gate: vmid {v.vmid} is taken on Proxmox by another VM ({tgt['name']!r}); refusing to "
                         "touch it", where=v.name)
    return {"verdict": verdict, "accepted_by_reviewer": accepted, "prepare_verified": v.prepare_verified,
            "source_power": facts.power_state, "tools": facts.tools_running,
            "finalize_dry_run": finalize_dry_run(ctx, bool(accepted))}


def finalize_dry_run(ctx: VmContext, accepted: bool) -> dict[str, Any]:
    """The Proxmox VM config the finalize step will create, built now by finalize's own builder (read-only:
    no API write) and checked against the Proxmox API schema, while the source still runs: a config
    Proxmox would refuse fails the gate, not the night after the source went down."""
    from guestprep.finalize.config_builder import build_config
    from guestprep.finalize.flow import QEMU

    h = ctx.handoff()
    doc = replace(h, policy=replace(h.policy, start=ctx.vm.strategy == "sata-first"))   # as finalize() hands it
    try:
        b = build_config(doc, ctx.vm.vmid, strategy=None if ctx.vm.strategy == "auto" else ctx.vm.strategy)
    except GuestprepError as exc:
        raise StepFailed(f"gate: finalize cannot build the Proxmox VM config: {exc}; fix the source or the policy "
                         "and plan again", where=ctx.vm.name) from None
    if b.blocked and not accepted:   # finalize would refuse it the same way
        raise StepFailed(f"gate: finalize would refuse this VM: {'; '.join(b.blocked)}", where=ctx.vm.name)
    errors = ctx.pve.schema.errors("POST", QEMU, b.params, {"node": b.node})
    if errors:
        raise StepFailed("gate: the VM config finalize would create is invalid for the Proxmox API ("
                         + "; ".join(f"{k}: {v}" for k, v in sorted(errors.items()))
                         + "); fix the source or the policy and plan again", where=ctx.vm.name)
    return {"schema": "valid", "node": b.node, "vmid": ctx.vm.vmid, "keys": sorted(b.params),
            "findings": [f"{n.level}: {n.message}" for n in b.findings if n.level != "info"]}


def _coexist_absent(ctx: VmContext) -> dict[str, Any] | None:
    from guestprep.vsphere.coexist import is_marker_file

    if any(is_marker_file(d.datastore_path) for d in ctx.facts().disks):
        return None
    return {"coexistence_disk": "absent"}


def coexist_detach(ctx: VmContext) -> dict[str, Any]:
    return ctx.run_vm_op("vm.coexistence_disk_detach", {})


def _powered_off(ctx: VmContext) -> dict[str, Any] | None:
    if ctx.facts().power_state != "poweredOff":
        return None
    # After a crash between the shutdown and its journal entry, the source went off at the
    # latest when the first attempt started: downtime is counted from there (never less).
    earlier = [a["started_at"] for a in ctx.journal.attempts(ctx.vm.name) if a["step"] == "shutdown"]
    return {"powered_off_at": min(earlier) if earlier else now(), "already_off": True}


def shutdown(ctx: VmContext) -> dict[str, Any]:
    out = ctx.run_vm_op("vm.shutdown", {"timeout": ctx.o.shutdown_timeout, "hard": ctx.o.hard_power_off})
    out["powered_off_at"] = now()
    return out


def mark_text(ctx: VmContext) -> str:
    return (f"migrated to Proxmox {ctx.vm.node}/{ctx.vm.vmid} by guestprep cutover (wave {ctx.wave_id}); "
            "do not power on")


def _marked(ctx: VmContext) -> dict[str, Any] | None:
    from guestprep.vsphere import marks

    return {"mark": marks.current(ctx.vm_object)} if marks.current(ctx.vm_object) == \
        f"{marks.PREFIX} {mark_text(ctx)}" else None


def mark_source(ctx: VmContext) -> dict[str, Any]:
    from guestprep.vsphere import marks

    return ctx.run_vm_op("vm.cutover_mark", {"text": mark_text(ctx), "current": marks.current(ctx.vm_object)})


def _server(ctx: VmContext) -> tuple[str, int]:
    """vCenter/ESXi host and port from the wave's ``vsphere.server`` (``host``, ``host:port``, ``[v6]:port``)."""
    server = str(ctx.wave.vsphere["server"])
    m = re.fullmatch(r"\[([^\]]+)\](?::(\d+))?|([^:]+)(?::(\d+))?", server)
    if not m:
        return server, 443
    return (m.group(1) or m.group(3)), int(m.group(2) or m.group(4) or 443)


def disk_sources(ctx: VmContext) -> list[dict[str, Any]]:
    """Where the node reads each converted disk: through the datastore mounted on it
    (``policy.datastores``), else streamed from vSphere's ``/folder`` HTTPS URL of the disk's
    descriptor, with the controller's session cookie (never in the URL)."""
    from guestprep.vsphere.locator import folder_url

    h = ctx.handoff()
    out = []
    for d in ctx.converted_disks():
        m = re.fullmatch(r"\[([^\]]+)\]\s*(.+)", d.get("source") or "")
        root = h.policy.datastores.get(m.group(1)) if m else None
        entry = {"label": d["label"], "source": d.get("source"), "datastore": m.group(1) if m else None,
                 "node_path": f"{root.rstrip('/')}/{m.group(2)}" if m and root else None, "volid": d["volid"]}
        if m and not root:
            dc = h.vm.extra.get("datacenter_path") or h.vm.datacenter
            if not dc:
                raise StepFailed(f"{d['label']}: datastore {m.group(1)!r} is not mounted on node {ctx.vm.node} "
                                 "(policy.datastores) and the hand-off names no datacenter to stream it from",
                                 where=ctx.vm.name)
            host, port = _server(ctx)
            entry.update(read_by="https", url=folder_url(host, port, dc, m.group(1), m.group(2)))
        else:
            entry["read_by"] = "datastore mount"
        out.append(entry)
    return out


def locate_disks(ctx: VmContext) -> dict[str, Any]:
    """Where the node reads each disk (a datastore mount, or HTTPS). The VM must still have the disks
    the wave was planned with."""
    h = ctx.handoff()
    from guestprep.vsphere.coexist import is_marker_file

    now_disks = {d.label: d.datastore_path for d in ctx.facts().disks if not is_marker_file(d.datastore_path)}
    planned = {d.label: d.source for d in h.disks}
    if now_disks != planned:
        raise StepFailed(f"the VM's disks changed since the wave was planned (now {now_disks}, planned {planned}); "
                         "plan the wave again", where=ctx.vm.name)
    return {"disks": disk_sources(ctx)}


def stream_trust(ctx: VmContext) -> tuple[list[str], list[str], dict[str, Any]]:
    """How the node verifies the server it streams from: the controller's own trust, passed on.
    Returns (environment for guestprep-host, its flags, what to record)."""
    from guestprep.vsphere.client import normalize_thumbprint

    vs = ctx.wave.vsphere
    if vs.get("insecure"):
        return [], ["--insecure"], {"tls": "not verified (the wave's vsphere.insecure)"}
    if vs.get("thumbprint"):
        pin = normalize_thumbprint(str(vs["thumbprint"]))
        return [f"GUESTPREP_HOST_TLS_SHA256={pin}"], [], {"tls": f"pinned certificate sha256 {pin}"}
    if vs.get("ca_bundle"):
        from pathlib import Path

        local = Path(str(vs["ca_bundle"])).expanduser()
        remote = f"{ctx.node.dir}/vsphere-ca.pem"
        ctx.node.ensure_dir(ctx.node.dir)
        ctx.node.put_file(local, remote)
        return [f"GUESTPREP_HOST_CA_FILE={remote}"], [], {"tls": f"verified against {local} (on the node: {remote})"}
    return [], [], {"tls": "verified against the node's system CA store"}


def _manifest_ok(ctx: VmContext, disk: dict[str, Any]) -> dict[str, Any] | None:
    """The node's manifest for this disk, if it proves a verified conversion of this hand-off."""
    m = ctx.node.read_json(ctx.manifest_path(disk["label"]))
    if not isinstance(m, dict):
        return None
    ho = m.get("handoff") or {}
    ok = ((m.get("verification") or {}).get("ok") is True and ho.get("sha256") == ctx.vm.handoff_sha256
          and ho.get("volid") == disk["volid"] and ho.get("disk") == disk["label"])
    if not ok:
        raise StepFailed(f"the manifest for {disk['label']} on node {ctx.vm.node} does not prove a verified "
                         f"conversion of this hand-off into {disk['volid']} ({ctx.manifest_path(disk['label'])}); "
                         "inspect it, remove the volume and the manifest, resume", where=ctx.vm.name)
    found = {"label": disk["label"], "volid": disk["volid"], "manifest": ctx.manifest_path(disk["label"]),
             "target": (m.get("target") or {}).get("path"), "digest": (m.get("target") or {}).get("digest")}
    if m.get("discarded_partial"):   # a killed conversion's leftover, removed before this one
        found["discarded_partial"] = m["discarded_partial"]
    return found


def _all_converted(ctx: VmContext) -> dict[str, Any] | None:
    found = [_manifest_ok(ctx, d) for d in ctx.converted_disks()]
    return {"disks": found} if all(found) else None


def convert(ctx: VmContext) -> dict[str, Any]:
    node, spec = ctx.node, ctx.wave.nodes[ctx.vm.node]
    pyz_sha = node.ensure_zipapp(zipapp_path())
    doc = f"{node.dir}/{ctx.vm.name}/handoff.json"
    node.ensure_dir(f"{node.dir}/{ctx.vm.name}")
    node.put_file(ctx.wave.handoff_path(ctx.vm), doc)
    sources = {d["label"]: d for d in disk_sources(ctx)}
    done, trust = [], None
    for disk in ctx.converted_disks():
        have = _manifest_ok(ctx, disk)
        if have:
            done.append(have)
            continue
        datastore = (re.fullmatch(r"\[([^\]]+)\].*", disk.get("source") or "") or [None, "?"])[1]
        sems = [s for s in (ctx.limits.sem(f"node:{ctx.vm.node}", ctx.limits.per_node),
                            ctx.limits.sem(f"ds:{datastore}", ctx.limits.per_datastore)) if s]
        # -I -S: the zipapp is stdlib-only; no site (its .pth walk) and no PYTHON* variables on the
        # node: ~6 ms less start-up per conversion (benchmarks/fixed_cost.py, zipapp-IS)
        # --discard-stale-partial: the manifest path is this wave's for this VM and disk, so a partial
        # target claimed under it (hostside/claim.py) is a killed conversion of this very disk
        argv = [spec.python, "-I", "-S", node.zipapp, "convert", "--handoff", doc, "--disk", disk["label"],
                "--manifest", ctx.manifest_path(disk["label"]), "--progress", "none", "--json",
                "--discard-stale-partial"]
        if spec.storage_cfg:
            argv += ["--storage-cfg", spec.storage_cfg]
        stdin, env, src = None, [], sources[disk["label"]]
        if src["read_by"] == "https":
            # the cookie travels on the SSH channel's stdin only: never argv, the journal or a file
            if trust is None:
                trust = stream_trust(ctx)
            env, flags, _ = trust
            argv += ["--source", f"{disk['label']}={src['url']}", "--cookie-stdin", *flags]
            stdin = (_session_cookie(ctx) + "\n").encode()
        for s in sems:
            s.acquire()
        try:
            ctx.say(f"converting {disk['label']} -> {disk['volid']} on {ctx.vm.node}"
                    + (" (streamed over HTTPS)" if stdin else ""))
            started, started_at = time.monotonic(), now()
            # tethered: if this controller dies, the node stops the conversion and removes its partial
            # target; a resume waits for that, and does nothing when the dying run had finished
            r = node.run_tethered(argv, lock=ctx.manifest_path(disk["label"]) + ".lock",
                                  done_if=ctx.manifest_path(disk["label"]), stdin_line=stdin, env=env,
                                  keepalive=(lambda: ctx.vsphere.si.content.sessionManager.currentSession)
                                  if stdin else None)   # the node reads with our session: keep it from idling out
            ended_at = now()   # inside the limits: the journal shows when each conversion held its node's turn
        finally:
            for s in reversed(sems):
                s.release()
        if r.rc == 75:   # hostside/watchdog.py EXIT_LOCKED
            raise StepFailed(f"another conversion of {disk['label']} still runs on node {ctx.vm.node}: "
                             f"{r.stderr.decode(errors='replace').strip()[-300:]}", where=ctx.vm.name)
        if r.rc != 0:
            tail = r.stderr.decode(errors="replace").strip().splitlines()[-3:]
            raise StepFailed(f"guestprep-host convert of {disk['label']} exited {r.rc}: {' / '.join(tail)}",
                             where=f"{ctx.vm.name} on node {ctx.vm.node}")
        have = _manifest_ok(ctx, disk)
        if not have:
            raise StepFailed(f"guestprep-host reported success but wrote no manifest for {disk['label']}",
                             where=ctx.vm.name)
        have["seconds"] = round(time.monotonic() - started, 2)
        have["started_at"], have["ended_at"] = started_at, ended_at
        have["read_by"] = src["read_by"]
        if stdin:
            have.update(url=src["url"], **trust[2])
        done.append(have)
    return {"disks": done, "zipapp_sha256": pyz_sha}


def _session_cookie(ctx: VmContext) -> str:
    from guestprep.vsphere.locator import cookie_header

    cookie = cookie_header(ctx.vsphere.cookie())
    if not cookie:
        raise StepFailed("the vSphere session has no cookie to stream the disks with", where=ctx.vm.name)
    return cookie


def _finalizer(ctx: VmContext):
    """guestprep's finalize flow for this VM, and its hand-off as the cutover gives it."""
    from guestprep.finalize.flow import Finalizer, FlowOptions

    h = ctx.handoff()
    sata_first = ctx.vm.strategy == "sata-first"
    # direct: create only; start and verify are this machine's steps (journaled, timed)
    doc = replace(h, policy=replace(h.policy, start=sata_first))
    accepted = bool(ctx.vm.gate.get("accepted_by_reviewer"))  # the gate's override covers finalize's own refusal
    flow = Finalizer(ctx.pve, FlowOptions(agent_timeout=ctx.o.agent_timeout, agent_poll=ctx.o.poll,
                                          accept_blocked=accepted, manifest_dirs=[str(ctx.local_manifests())],
                                          strategy=None if ctx.vm.strategy == "auto" else ctx.vm.strategy),
                     say=ctx.say, checkpoint=lambda point: crash_point(ctx.vm.name, f"finalize.{point}"))
    return flow, doc


def _finalized(ctx: VmContext) -> dict[str, Any] | None:
    t = ctx.target_vm()
    if t is None:
        return None
    if not t["ours"]:
        raise StepFailed(f"vmid {ctx.vm.vmid} on Proxmox is not the copy of this VM ({t['name']!r}); refusing",
                         where=ctx.vm.name)
    if ctx.vm.strategy == "sata-first":
        # created, but the run that created it may have died inside its sata-first switch
        flow, doc = _finalizer(ctx)
        if flow.switch_stage(doc, t["vmid"])[1] not in ("none", "done"):
            return None
    return {"vmid": t["vmid"], "node": t["node"], "already": True}


def finalize(ctx: VmContext) -> dict[str, Any]:
    # a volume is attached only with its verified manifest, read again from the node now
    proofs = [_manifest_ok(ctx, d) for d in ctx.converted_disks()]
    missing = [d["label"] for d, p in zip(ctx.converted_disks(), proofs) if not p]
    if missing:
        raise StepFailed(f"no verified manifest for {', '.join(missing)} on node {ctx.vm.node}: not attaching",
                         where=ctx.vm.name)
    # finalize checks each volume against its manifest itself: hand it the node's, fetched now
    local = ctx.local_manifests()
    local.mkdir(parents=True, exist_ok=True)
    for d in ctx.converted_disks():
        dest = local / (re.sub(r"[^A-Za-z0-9._-]+", "_", d["label"]) + ".guestprep-manifest.json")
        ctx.node.conn.get(ctx.manifest_path(d["label"]), str(dest))
    flow, doc = _finalizer(ctx)
    t = ctx.target_vm()
    if t is not None:   # made by a run killed inside its sata-first switch (the check found it unfinished)
        done = flow.finish_switch(doc, t["vmid"])
        return {"vmid": t["vmid"], "node": t["node"], "created": False, "started": True, "resumed_switch": done,
                "manifests": [p["manifest"] for p in proofs if p], "strategy": ctx.vm.strategy,
                "strategy_reason": ctx.vm.gate.get("strategy_reason")}
    res = flow.run(doc)
    # the plan's strategy and why (finalize's own findings call any strategy handed to it "given explicitly")
    return {"vmid": res.vmid, "node": res.node, "created": res.created, "started": res.started,
            "manifests": [p["manifest"] for p in proofs if p], "findings": [f.message for f in res.build.findings],
            "strategy": ctx.vm.strategy, "strategy_reason": ctx.vm.gate.get("strategy_reason")}


def _running(ctx: VmContext) -> dict[str, Any] | None:
    st = ctx.pve.get(VM_PATH + "/status/current", ctx.pp()).get("status")
    return {"status": st, "already": True} if st == "running" else None


def ensure_console(ctx: VmContext) -> str | None:
    """--console: the copy gets ``serial0: socket`` (what `qm terminal` reads) unless it has a serial0."""
    if not ctx.o.console:
        return None
    cfg = ctx.pve.get(VM_PATH + "/config", ctx.pp())
    if cfg.get("serial0"):
        return str(cfg["serial0"])
    ctx.pve.call("PUT", VM_PATH + "/config", ctx.pp(), {"serial0": "socket"})
    return "socket (added)"


def start(ctx: VmContext) -> dict[str, Any]:
    serial = ensure_console(ctx)
    upid = ctx.pve.call("POST", VM_PATH + "/status/start", ctx.pp())
    ctx.pve.wait_task(ctx.vm.node, upid, f"start VM {ctx.vm.vmid}", 3600.0)
    if ctx.o.console:
        watch_console(ctx)
    return {"status": "running", "started_at": now(), **({"serial0": serial} if serial else {})}


def watch_console(ctx: VmContext):
    """Start reading the copy's serial console now (output nobody reads is lost)."""
    from guestprep.cutover.console import SERIAL_SOCKET, ConsoleWatch

    if getattr(ctx, "console_watch", None) is None:
        path = SERIAL_SOCKET.format(run_dir=ctx.wave.nodes[ctx.vm.node].qemu_run_dir.rstrip("/"), vmid=ctx.vm.vmid)
        ctx.console_watch = ConsoleWatch(ctx.node, path, ctx.o.agent_timeout).start()
    return ctx.console_watch


def verify(ctx: VmContext, post_preflight: bool = True) -> dict[str, Any]:
    """agent/ping answers; network-get-interfaces shows every source MAC and expected address; with the
    wave's ``options.post_preflight``, a post-phase preflight of the guest (guestprep/cutover/postflight.py).
    A rehearsal passes ``post_preflight=False``: its copy's links are down, the address is the source's."""
    from guestprep.proxmox.client import PveApiError

    pp, deadline = ctx.pp(), time.monotonic() + ctx.o.agent_timeout
    last = ""
    watch = watch_console(ctx) if ctx.o.console else None   # after a resume: from now on
    while True:
        try:
            ctx.pve.call("POST", VM_PATH + "/agent/ping", pp)
            first_answer = now()
            break
        except PveApiError as e:
            last = e.message
        if watch is not None and watch.failed_boot:   # an emergency shell never starts the agent
            r = watch.result or {}
            raise StepFailed(f"the copy did not boot: its serial console shows {r.get('line')!r} (the guest agent "
                             f"did not answer: {last}); console tail: {r.get('tail', '')[-1500:]}",
                             where=f"{ctx.vm.name} (VM {ctx.vm.vmid})")
        if time.monotonic() > deadline:
            raise StepFailed(f"the guest agent did not answer within {ctx.o.agent_timeout:g}s ({last}): the copy "
                             "may not have booted", where=f"{ctx.vm.name} (VM {ctx.vm.vmid})")
        time.sleep(ctx.o.poll)
    while True:  # addresses come up after the agent: keep asking until the same deadline
        ifaces = ctx.pve.call("GET", VM_PATH + "/agent/network-get-interfaces", pp).get("result", [])
        macs = {str(i.get("hardware-address", "")).lower() for i in ifaces}
        addrs = sorted({a.get("ip-address") for i in ifaces for a in i.get("ip-addresses") or [] if a.get("ip-address")})
        missing = [m for m in ctx.vm.expected_macs if m not in macs] + \
                  [a for a in ctx.vm.expected_addresses if a not in addrs]
        if not missing:
            break
        if time.monotonic() > deadline:
            raise StepFailed(f"not seen in the guest: {', '.join(missing)} (it reports {addrs})",
                             where=f"{ctx.vm.name} (VM {ctx.vm.vmid})")
        time.sleep(ctx.o.poll)
    out = {"agent_first_answer_at": first_answer, "macs": sorted(macs - {"00:00:00:00:00:00"}), "addresses": addrs,
           "expected_addresses": ctx.vm.expected_addresses}
    if watch is not None:   # evidence: the login prompt usually follows the agent's start by seconds
        out["console"] = watch.wait(max(0.0, min(60.0, deadline - time.monotonic()))) or {"verdict": "still reading"}
    spec = ctx.wave.post_preflight() if post_preflight else None
    if spec is not None:
        from guestprep.cutover import postflight

        ctx.say("post-phase preflight of the guest ...")
        out["post_preflight"], failing = postflight.run(ctx.wave, ctx.vm.name, spec)
        if failing:
            raise StepFailed(f"post-phase preflight: {len(failing)} open finding(s) at or above {spec['fail_on']}: "
                             + "; ".join(failing[:5]) + (" ..." if len(failing) > 5 else ""),
                             where=f"{ctx.vm.name} (VM {ctx.vm.vmid})")
    return out


STEPS: dict[str, Step] = {s.name: s for s in (
    Step("gate", _never, gate),
    Step("coexist_detach", _coexist_absent, coexist_detach),
    Step("shutdown", _powered_off, shutdown, source_down=True),
    Step("mark_source", _marked, mark_source, source_down=True),
    Step("locate_disks", _never, locate_disks, source_down=True),
    Step("convert", _all_converted, convert, source_down=True),
    Step("finalize", _finalized, finalize, source_down=True),
    Step("start", _running, start, source_down=True),
    Step("verify", _never, verify, source_down=True),
)}


# --------------------------------------------------------------------------- after a failure


def _target_stopped(ctx: VmContext) -> dict[str, Any] | None:
    t = ctx.target_vm()
    if t is None:
        return {"target": "absent"}
    return {"target": "stopped", "kept": True} if t["status"] == "stopped" else None


def stop_target(ctx: VmContext) -> dict[str, Any]:
    """Stop the copy and keep it: its volumes were made by guestprep-host, not by this VM's creation."""
    t = ctx.target_vm()
    if t is not None and not t["ours"]:
        raise StepFailed(f"vmid {ctx.vm.vmid} is not the copy of this VM; not touching it", where=ctx.vm.name)
    upid = ctx.pve.call("POST", VM_PATH + "/status/stop", ctx.pp())
    ctx.pve.wait_task(ctx.vm.node, upid, f"stop VM {ctx.vm.vmid}", 600.0)
    return {"target": "stopped", "kept": True}


def _unmarked(ctx: VmContext) -> dict[str, Any] | None:
    from guestprep.vsphere import marks

    return {"mark": None} if not marks.current(ctx.vm_object) and \
        not marks.field_value(ctx.vsphere, ctx.vm_object) else None


def unmark_source(ctx: VmContext) -> dict[str, Any]:
    from guestprep.vsphere import marks

    return ctx.run_vm_op("vm.cutover_unmark", {"current": marks.current(ctx.vm_object),
                                               "field": marks.field_value(ctx.vsphere, ctx.vm_object)})


def _source_up(ctx: VmContext) -> dict[str, Any] | None:
    from guestprep.vsphere import marks

    vm = ctx.vm_object
    if str(vm.runtime.powerState) == "poweredOn" and marks.tools_running(vm):
        return {"source": "poweredOn", "tools": "running"}
    return None


def power_on_source(ctx: VmContext) -> dict[str, Any]:
    from guestprep.vsphere import marks

    out = ctx.run_vm_op("vm.power_on", {})
    deadline = time.monotonic() + ctx.o.tools_timeout
    while not marks.tools_running(ctx.vm_object):
        if time.monotonic() > deadline:
            raise OperationError(f"powered on, but VMware Tools did not report running within "
                                 f"{ctx.o.tools_timeout:g}s", where=ctx.vm.name)
        time.sleep(min(ctx.o.poll, 1.0))
    out.update(source="poweredOn", tools="running")
    return out


def reclaim_partials(ctx: VmContext, wait: float = 120.0) -> list[str]:
    """Remove what a converter killed outright left on the node under its temporary name: for each
    disk whose conversion started there, wait for the conversion's lock (a converter whose controller
    died may still be stopping: its watchdog removes the partial itself), then run `guestprep-host
    reclaim` under that lock (it removes only what the claim beside the manifest proves, and only
    when the claim's process is gone: hostside/claim.py). Returns the partials removed."""
    import json

    removed = []
    for d in ctx.converted_disks():
        manifest = ctx.manifest_path(d["label"])
        if ctx.node.run(["test", "-e", manifest + ".lock"]).rc != 0:
            continue   # never started on the node
        ctx.node.ensure_zipapp(zipapp_path())
        argv = [ctx.wave.nodes[ctx.vm.node].python, "-I", "-S", ctx.node.zipapp, "reclaim", "--manifest", manifest,
                "--json"]
        r = ctx.node.run_tethered(argv, lock=manifest + ".lock", wait=wait, timeout=300.0)
        if r.rc == 75:   # hostside/watchdog.py EXIT_LOCKED
            raise StepFailed(f"a conversion of {d['label']} still runs on node {ctx.vm.node} after {wait:g} s: "
                             f"{r.stderr.decode(errors='replace').strip()[-300:]}", where=ctx.vm.name)
        if r.rc != 0:
            raise StepFailed(f"guestprep-host reclaim for {d['label']} exited {r.rc}: "
                             f"{r.stderr.decode(errors='replace').strip()[-300:]}", where=f"node {ctx.vm.node}")
        try:
            doc = json.loads(r.stdout)
        except ValueError:
            raise StepFailed(f"guestprep-host reclaim for {d['label']} printed no JSON",
                             where=f"node {ctx.vm.node}") from None
        if doc.get("removed"):
            removed.append(str(doc.get("partial")))
    return removed


def _nothing_to_reclaim(ctx: VmContext) -> dict[str, Any] | None:
    """Only a conversion that was attempted and never finished can have left a partial target."""
    attempts = [a for a in ctx.journal.attempts(ctx.vm.name) if a["step"] == "convert"]
    if not attempts:
        return {"partials": "none (no conversion started)"}
    if ctx.journal.done_outputs(ctx.vm.name, "convert") is not None:
        return {"partials": "none (every disk converted and verified)"}
    return None


def reclaim_after_failed_convert(ctx: VmContext) -> dict[str, Any]:
    """Last in a rollback, once the source runs again (its downtime must not wait for the node): a
    conversion that died on the node leaves no multi-GB partial behind. A node that cannot be reached
    does not undo the rollback: the step records what is left and how a human removes it."""
    try:
        return {"partials_removed": reclaim_partials(ctx)}
    except (GuestprepError, OSError) as exc:
        manifests = [ctx.manifest_path(d["label"]) for d in ctx.converted_disks()]
        left = (f"not checked: {exc}; on node {ctx.vm.node} run `guestprep-host reclaim --manifest M` for "
                + ", ".join(manifests))
        ctx.say(f"warning: a partial target may be left: {left}")
        return {"partials_removed": [], "partials_left": left}


ROLLBACK: tuple[Step, ...] = (Step("rollback_stop_target", _target_stopped, stop_target),
                              Step("rollback_unmark_source", _unmarked, unmark_source),
                              Step("rollback_power_on_source", _source_up, power_on_source),
                              Step("rollback_reclaim_partials", _nothing_to_reclaim, reclaim_after_failed_convert))
HOLD: tuple[Step, ...] = (Step("hold_stop_target", _target_stopped, stop_target),)
