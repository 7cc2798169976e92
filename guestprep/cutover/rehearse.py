"""`cutover rehearse`: boot a copy of each VM on Proxmox while the source keeps running, then
remove every trace of it. "Would boot: yes/no", with the evidence, per VM.

Per VM: a vSphere snapshot (the base disks stop changing: the running VM writes to the delta),
the snapshot's base disks converted on the target node by guestprep-host (the wave's own
hand-off with a temporary vmid, name ``rehearsal-<vm>`` and tag ``guestprep-rehearsal``;
manifests in the node's ``<wave>/<vm>.rehearsal/`` directory, never the real run's), finalize
(volumes attached only with their verified manifests), every NIC ``link_down=1`` before the first
start (the copy has the source's MACs and addresses: it must not meet the network), start,
verify (the guest agent answers and reports the source's MACs and expected addresses; with
``--console`` also a login prompt on the serial console, and an emergency shell there ends the
wait at once). Then, whatever happened: stop and destroy the temporary VM with its volumes,
remove the snapshot, remove the node's rehearsal directory. The source's power is never touched.

Nothing here is journaled in the wave's journal: a rehearsal changes nothing the run relies on.
Its report: ``<wave>.rehearsal/report.json``.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from guestprep.cutover import steps
from guestprep.cutover.journal import now
from guestprep.cutover.sides import Secrets
from guestprep.cutover.steps import VM_PATH, Limits, RunOptions, StepFailed, VmContext
from guestprep.cutover.wave import VmPlan, Wave

TAG = "guestprep-rehearsal"
SCHEMA = "guestprep.cutover-rehearsal/1"


@dataclass
class RehearsalResult:
    vms: list[dict[str, Any]]
    report: str

    @property
    def exit_code(self) -> int:
        return 0 if self.vms and all(v["would_boot"] for v in self.vms) else 1


def out_dir(wave: Wave) -> Path:
    return wave.path.parent / (wave.path.name + ".rehearsal")


def _retarget(volid: str, vmid: int, tmp: int) -> str:
    return re.sub(rf"(?<![0-9]){vmid}(?![0-9])", str(tmp), volid)


def rehearsal_plan(wave: Wave, vm: VmPlan, tmp_vmid: int, directory: Path) -> VmPlan:
    """The wave's hand-off of ``vm``, re-aimed at a temporary VM; written beside the report."""
    src = wave.handoff_path(vm)
    doc = json.loads(src.read_text())
    pol = doc["policy"]
    pol["vmid"] = tmp_vmid
    pol["name"] = f"rehearsal-{vm.name}"
    pol["tags"] = [t for t in pol.get("tags") or [] if t != TAG] + [TAG]
    pol["start"] = False
    pol["volumes"] = {k: _retarget(v, vm.vmid, tmp_vmid) for k, v in (pol.get("volumes") or {}).items()}
    for d in doc.get("disks") or []:
        if d.get("volid"):
            d["volid"] = _retarget(d["volid"], vm.vmid, tmp_vmid)
    gf = doc.get("guest_facts")
    if isinstance(gf, dict) and gf.get("path") and not Path(gf["path"]).is_absolute():
        gf["path"] = str((src.parent / gf["path"]).resolve())
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{vm.name}.handoff.json"
    raw = json.dumps(doc, indent=1, sort_keys=True).encode()
    path.write_bytes(raw)
    disks = [dict(d, volid=_retarget(d["volid"], vm.vmid, tmp_vmid)) if d.get("volid") else dict(d) for d in vm.disks]
    return replace(vm, name=f"{vm.name}.rehearsal", vmid=tmp_vmid, handoff=str(path.resolve()),
                   handoff_sha256=hashlib.sha256(raw).hexdigest(), disks=disks)


def snapshot_tree(session: Any, vm_obj: Any) -> list[Any]:
    """The VM's snapshot tree, read through the property collector: an absent tree is an empty list
    (reading ``vm.snapshot`` directly when it is unset crashes the request in govmomi's simulator)."""
    from pyVmomi import vim, vmodl

    PC = vmodl.query.PropertyCollector
    spec = PC.FilterSpec(objectSet=[PC.ObjectSpec(obj=vm_obj, skip=False)],
                         propSet=[PC.PropertySpec(type=vim.VirtualMachine, pathSet=["snapshot"])])
    for o in session.content.propertyCollector.RetrieveContents([spec]) or []:
        for p in o.propSet or []:
            if p.name == "snapshot" and p.val is not None:
                return list(p.val.rootSnapshotList or [])
    return []


def _find_snapshot(session: Any, vm_obj: Any, name: str) -> Any | None:
    stack = snapshot_tree(session, vm_obj)
    while stack:
        s = stack.pop()
        if s.name == name:
            return s.snapshot
        stack.extend(s.childSnapshotList or [])
    return None


class Rehearsal:
    def __init__(self, wave: Wave, vm: VmPlan, secrets: Secrets, options: RunOptions, say: Callable[[str], None],
                 vmid: int | None):
        self.wave, self.vm, self.o, self.say = wave, vm, options, say
        self.base = VmContext(wave, vm, None, secrets, options, Limits(), say)
        self.secrets, self.want_vmid = secrets, vmid
        self.ctx: VmContext | None = None
        self.ev: dict[str, Any] = {"vm": vm.name, "would_boot": False, "started_at": now(), "steps": [],
                                   "reasons": [], "cleanup": {}}

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        t0 = time.monotonic()
        rec: dict[str, Any] = {"step": name, "started_at": now()}
        self.ev["steps"].append(rec)
        try:
            out = fn()
            rec.update(status="done", outputs=out)
            return out
        except Exception as exc:
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            rec["seconds"] = round(time.monotonic() - t0, 2)

    def run(self) -> dict[str, Any]:
        from guestprep.vsphere import actions

        b = self.base
        snap_name = f"guestprep-rehearsal-{b.wave_id}-{int(time.time())}"
        try:
            facts = b.facts()
            self.ev["source_power_before"] = facts.power_state
            tmp = self.want_vmid or int(b.pve.get("/cluster/nextid"))
            self.ev["vmid"] = tmp
            plan = rehearsal_plan(self.wave, self.vm, tmp, out_dir(self.wave) / "handoffs")
            self.ctx = ctx = VmContext(self.wave, plan, None, self.secrets, self.o, Limits(), self.say)
            self.step("snapshot", lambda: actions.snapshot(b.vsphere, b.vm_object, snap_name, quiesce=facts.tools_running,
                                                           description="guestprep cutover rehearsal: base disks frozen "
                                                                       "while they are converted; removed afterwards"))
            self.ev["snapshot"] = snap_name
            self.step("locate_disks", lambda: steps.locate_disks(ctx))
            self.step("convert", lambda: steps.convert(ctx))
            self.step("finalize", lambda: steps.finalize(ctx))
            self.step("links_down", lambda: self.links_down(ctx))
            self.step("start", lambda: steps.start(ctx))
            self.ev["evidence"] = self.step("verify", lambda: self.verify(ctx))
            self.ev["would_boot"] = True
        except Exception as exc:
            self.ev["reasons"].append(str(exc) if isinstance(exc, StepFailed) else f"{type(exc).__name__}: {exc}")
        finally:
            self.cleanup(snap_name)
            self.ev["finished_at"] = now()
            try:
                self.ev["source_power_after"] = b.facts().power_state
            except Exception as exc:
                self.ev["source_power_after"] = f"unknown ({exc})"
            for c in (self.ctx, b):
                if c is not None:
                    c.close()
        return self.ev

    def links_down(self, ctx: VmContext) -> dict[str, Any]:
        """Every NIC link_down=1 before the first start: the copy has the source's MACs and addresses."""
        cfg = ctx.pve.get(VM_PATH + "/config", ctx.pp())
        nets = {k: v for k, v in cfg.items() if re.fullmatch(r"net\d+", k)}
        change = {k: v + ",link_down=1" for k, v in nets.items() if "link_down=1" not in str(v)}
        if change:
            ctx.pve.call("PUT", VM_PATH + "/config", ctx.pp(), change)
        after = ctx.pve.get(VM_PATH + "/config", ctx.pp())
        bad = [k for k in nets if "link_down=1" not in str(after.get(k, ""))]
        if bad:
            raise StepFailed(f"could not set link_down=1 on {', '.join(bad)}: not starting the copy",
                             where=self.vm.name)
        return {k: after[k] for k in sorted(nets)}

    def verify(self, ctx: VmContext) -> dict[str, Any]:
        out = steps.verify(ctx, post_preflight=False)   # links down: the address answering is the source's
        if self.o.console:   # configured: a login prompt must show too
            w = ctx.console_watch
            res = w.wait(max(5.0, self.o.agent_timeout)) if w else None
            if not res or res.get("verdict") != "login":
                raise StepFailed(f"the agent answered, but the serial console shows no login prompt "
                                 f"({(res or {}).get('verdict', 'not read')}): {(res or {}).get('tail', '')[-800:]}",
                                 where=self.vm.name)
            out["console"] = res
        return out

    def cleanup(self, snap_name: str) -> None:
        c, b, rec = self.ctx, self.base, self.ev["cleanup"]
        if c is not None and self.ev.get("vmid"):
            try:
                t = c.target_vm()
                if t is None:
                    rec["vm"] = "never created"
                else:
                    if not str(t["name"] or "").startswith("rehearsal-"):
                        raise StepFailed(f"vmid {c.vm.vmid} is {t['name']!r}, not this rehearsal's VM: not touching it")
                    if t["status"] == "running":
                        c.pve.wait_task(c.vm.node, c.pve.call("POST", VM_PATH + "/status/stop", c.pp()),
                                        f"stop VM {c.vm.vmid}", 600.0)
                    upid = c.pve.call("DELETE", VM_PATH, c.pp(), {"purge": 1, "destroy-unreferenced-disks": 1})
                    c.pve.wait_task(c.vm.node, upid, f"destroy VM {c.vm.vmid}", 600.0)
                    rec["vm"] = "destroyed"
                left = [d["volid"] for d in c.converted_disks() if self._volume_exists(c, d["volid"])]
                rec["volumes_left"] = left
                if left:
                    self.ev["reasons"].append(f"volumes left after the rehearsal: {', '.join(left)}")
            except Exception as exc:
                rec["vm"] = f"cleanup failed: {exc}"
                self.ev["reasons"].append(f"the temporary VM {self.ev.get('vmid')} could not be removed: {exc}")
            try:
                r = c.node.run(["rm", "-rf", "--", f"{c.node.dir}/{c.vm.name}"])
                rec["node_dir"] = "removed" if r.rc == 0 else r.stderr.decode(errors="replace")[-300:]
            except Exception as exc:
                rec["node_dir"] = f"not removed: {exc}"
            # finalize's local copies of the rehearsal's manifests
            shutil.rmtree(self.wave.state_dir / "manifests" / re.sub(r"[^A-Za-z0-9._-]+", "_", c.vm.name),
                          ignore_errors=True)
        if self.ev.get("snapshot"):
            try:
                snap = _find_snapshot(b.vsphere, b.vm_object, snap_name)
                if snap is not None:
                    # the VM's snapshot tree is the truth, not the task (govmomi's simulator names the
                    # snapshot as the task's entity, which pyVmomi cannot read)
                    snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
                    deadline = time.monotonic() + 120
                    while _find_snapshot(b.vsphere, b.vm_object, snap_name) is not None and time.monotonic() < deadline:
                        time.sleep(1)
                rec["snapshot"] = "removed" if _find_snapshot(b.vsphere, b.vm_object, snap_name) is None \
                    else "still there"
            except Exception as exc:
                rec["snapshot"] = f"not removed: {exc}"
            if rec.get("snapshot") != "removed":
                self.ev["reasons"].append(f"snapshot {snap_name!r} is still on the source: {rec['snapshot']}")

    @staticmethod
    def _volume_exists(c: VmContext, volid: str) -> bool:
        sid = volid.split(":", 1)[0]
        content = c.pve.get("/nodes/{node}/storage/{storage}/content", {"node": c.vm.node, "storage": sid})
        return any(v.get("volid") == volid for v in content)


def rehearse_wave(wave: Wave, names: list[str], secrets: Secrets, options: RunOptions, *, parallel: int,
                  vmids: dict[str, int] | None, say: Callable[[str, str], None]) -> RehearsalResult:
    """``say(vm, text)`` is called from the VMs' threads at once: it must be thread-safe."""
    from types import SimpleNamespace

    from guestprep.runner import run_guests

    chosen = [wave.vm(n) for n in names] if names else list(wave.vms)
    if not wave.state_dir.is_dir():   # finalize keeps its copies of the manifests there (private, as `run` makes it)
        wave.state_dir.mkdir(mode=0o700)
    def job(item, interrupt):   # ``say`` is thread-safe: the command's _say prints one line under its lock
        return Rehearsal(wave, item.plan, secrets, options, lambda text, vm=item.name: say(vm, text),
                         (vmids or {}).get(item.name)).run()

    def crashed(item, exc: BaseException):
        return {"vm": item.name, "would_boot": False, "reasons": [f"controller error: {type(exc).__name__}: {exc}"]}

    results = run_guests([SimpleNamespace(name=v.name, plan=v) for v in chosen], job, parallel, crashed).results
    by_name = {r["vm"]: r for r in results}
    ordered = [by_name[v.name] for v in chosen if v.name in by_name]
    d = out_dir(wave)
    d.mkdir(parents=True, exist_ok=True)
    report = d / "report.json"
    report.write_text(json.dumps({"schema": SCHEMA, "wave": str(wave.path), "plan_hash": wave.plan_hash,
                                  "vms": ordered}, indent=1, sort_keys=True, default=str) + "\n")
    return RehearsalResult(ordered, str(report))
