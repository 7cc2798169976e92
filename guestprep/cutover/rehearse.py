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
wait at once). Then, whatever happened: stop and destroy the temporary VM, free the volumes it
converted, remove the node's rehearsal directory, remove the snapshot. The source's power is never
touched.

The rehearsal's own journal (``<wave>.rehearsal/journal.sqlite``, the run journal's conventions:
WAL, a committed transaction at every step boundary, a lock file so that two controllers never
rehearse the same wave) records, *before* anything is created, what this rehearsal may create:
the temporary vmid and node, the snapshot's name, the volumes and the hand-off they are converted
from. A controller killed midway leaves that record; the next `cutover rehearse` of the wave
first cleans up exactly that (the VM only if it is still this rehearsal's, by name and tag; a
volume only when this rehearsal's manifest on the node proves it converted it; the snapshot by
its name; the node directory), then rehearses. The wave's run journal is never opened.

Fault injection for the kill -9 tests: ``GUESTPREP_CUTOVER_REHEARSE_CRASH_AFTER=<step>`` (or
``<vm>:<step>``) makes the process ``os._exit(137)`` right after the step acted and before the
journal recorded it. Report: ``<wave>.rehearsal/report.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets as pysecrets
import shutil
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from guestprep.errors import ConfigError, GuestprepError

from guestprep.cutover import steps
from guestprep.cutover.journal import Journal, WaveLock, now
from guestprep.cutover.sides import Secrets
from guestprep.cutover.steps import VM_PATH, Limits, RunOptions, StepFailed, VmContext
from guestprep.cutover.wave import VmPlan, Wave

TAG = "guestprep-rehearsal"
SCHEMA = "guestprep.cutover-rehearsal/1"
CRASH_ENV = "GUESTPREP_CUTOVER_REHEARSE_CRASH_AFTER"
STEPS = ("snapshot", "locate_disks", "convert", "finalize", "links_down", "start", "verify")
CLEANUP = ("destroy_vm", "free_volumes", "remove_node_dir", "remove_snapshot")
# phases of a VM in the rehearsal journal; anything else (rehearsing, cleaning, left_behind) may have left traces
SETTLED = ("would_boot", "would_not_boot", "cleaned")


@dataclass
class RehearsalResult:
    vms: list[dict[str, Any]]
    report: str
    cleaned: list[dict[str, Any]]          # what earlier, interrupted rehearsals had left, and what became of it

    @property
    def exit_code(self) -> int:
        return 0 if self.vms and all(v["would_boot"] for v in self.vms) else 1


def out_dir(wave: Wave) -> Path:
    return wave.path.parent / (wave.path.name + ".rehearsal")


def _crash_point(vm: str, step: str) -> None:
    want = os.environ.get(CRASH_ENV)
    if want and want in (step, f"{vm}:{step}"):
        os._exit(137)


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, GuestprepError) else f"{type(exc).__name__}: {exc}"


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


class TempVmids:
    """The temporary vmids of one `rehearse` run. Proxmox's ``/cluster/nextid`` answers the same number
    to two rehearsals until one of them creates its VM, so the run hands none out twice, nor a vmid
    the wave plans for a real VM, nor one an interrupted rehearsal being cleaned up recorded."""

    def __init__(self, wave: Wave, leftovers: list[dict[str, Any]]):
        self._lock = threading.Lock()
        # nor one an interrupted rehearsal's cleanup may be using at the same time (its holder VM)
        self._given = {v.vmid for v in wave.vms} | {int(r["target"]["vmid"]) for r in leftovers
                                                      if r["target"].get("vmid")}

    def take(self, pve: Any, wanted: int | None) -> int:
        from guestprep.proxmox.client import PveApiError

        with self._lock:
            if wanted:
                self._given.add(wanted)
                return wanted
            n = int(pve.get("/cluster/nextid"))
            for _ in range(1000):
                if n not in self._given:
                    try:
                        n = int(pve.get("/cluster/nextid", vmid=n))   # still free (Proxmox refuses a taken one)
                        self._given.add(n)
                        return n
                    except PveApiError:
                        pass
                n += 1
            raise StepFailed("no free vmid for the temporary VM in 1000 numbers after the cluster's next one")


class RehearsalContext(VmContext):
    """A VM context aimed at the temporary VM: finalize's manifest copies stay in the rehearsal's directory."""

    def __init__(self, wave: Wave, plan: VmPlan, *args: Any):
        super().__init__(wave, plan, *args)
        self.manifests_root = out_dir(wave) / "manifests"


def _journaled(j, vm: str, name: str, inputs: dict[str, Any], fn: Callable[[], Any],
               log: list[dict[str, Any]]) -> Any:
    """One step of a rehearsal between two journal boundaries (and a line of its report)."""
    t0 = time.monotonic()
    rec: dict[str, Any] = {"step": name, "started_at": now()}
    log.append(rec)
    attempt = j.start_attempt(vm, name, inputs)
    try:
        out = fn() or {}
        _crash_point(vm, name)
    except BaseException as exc:
        rec.update(status="failed", error=_error_text(exc), seconds=round(time.monotonic() - t0, 2))
        j.fail_attempt(attempt, rec["error"])
        raise
    rec.update(status="done", outputs=out, seconds=round(time.monotonic() - t0, 2))
    j.finish_attempt(attempt, out)
    return out


class Traces:
    """Removes what one rehearsal of a VM may have created, from the journal's record of it alone.

    The record: the VM row's ``target`` (vmid, node, node_dir, plan_name, handoff_sha256, disks) and
    ``source`` (moref, snapshot). Each part checks before it acts, so a cleanup killed midway is simply
    run again. Nothing is touched that this rehearsal cannot be shown to have made."""

    def __init__(self, wave: Wave, vm: VmPlan, secrets: Secrets, options: RunOptions, say: Callable[[str], None],
                 source: dict[str, Any], target: dict[str, Any], plan: VmPlan | None = None):
        """``plan``: the rehearsal's own plan while it runs; rebuilt from ``target`` after a crash."""
        self.wave, self.vm, self.src, self.tgt = wave, vm, source, target
        plan = plan or replace(vm, name=target["plan_name"], vmid=int(target["vmid"]), node=target["node"],
                               handoff_sha256=target["handoff_sha256"],
                               disks=[{"label": d["label"], "volid": d["volid"]} for d in target.get("disks") or []])
        self.ctx = RehearsalContext(wave, plan, None, secrets, options, Limits(), say)
        self.base = VmContext(wave, vm, None, secrets, options, Limits(), say)

    def close(self) -> None:
        self.ctx.close()
        self.base.close()

    def run(self, j, log: list[dict[str, Any]]) -> dict[str, Any]:
        """Every part, each journaled; a part that fails does not stop the others. Returns the summary."""
        out: dict[str, Any] = {}
        for name, fn in (("destroy_vm", self.destroy_vm), ("free_volumes", self.free_volumes),
                         ("remove_node_dir", self.remove_node_dir), ("remove_snapshot", self.remove_snapshot)):
            if name == "remove_node_dir" and str(out.get("free_volumes", "")).startswith("failed: "):
                out[name] = "kept: its manifests prove which volumes left are this rehearsal's"
                continue
            try:
                out.update(_journaled(j, self.vm.name, name, {"vmid": self.tgt.get("vmid"),
                                                              "snapshot": self.src.get("snapshot")}, fn, log))
            except Exception as exc:
                out[name] = f"failed: {_error_text(exc)}"
        return out

    # ------------------------------------------------------------------ the temporary VM
    def _ours(self) -> dict[str, Any] | None:
        """The VM with the temporary vmid, when it is still this rehearsal's (its name and tag)."""
        c = self.ctx
        found = [r for r in c.pve.get("/cluster/resources", type="vm") if r.get("vmid") == c.vm.vmid]
        if not found:
            return None
        node = found[0].get("node", c.vm.node)
        cfg = c.pve.get(VM_PATH + "/config", {"node": node, "vmid": c.vm.vmid})
        from guestprep.target_policy import proxmox_name

        tags = re.split(r"[;, ]+", str(cfg.get("tags") or ""))
        if cfg.get("name") != proxmox_name(f"rehearsal-{self.vm.name}") or TAG not in tags:   # as finalize names it
            raise StepFailed(f"vmid {c.vm.vmid} is now {cfg.get('name')!r} (tags {cfg.get('tags')!r}), not this "
                             "rehearsal's VM: not touching it", where=self.vm.name)
        status = c.pve.get(VM_PATH + "/status/current", {"node": node, "vmid": c.vm.vmid}).get("status")
        return {"node": node, "status": status}

    def destroy_vm(self) -> dict[str, Any]:
        c = self.ctx
        t = self._ours()
        if t is None:
            return {"vm": "absent"}
        pp = {"node": t["node"], "vmid": c.vm.vmid}
        if t["status"] == "running":
            c.pve.wait_task(t["node"], c.pve.call("POST", VM_PATH + "/status/stop", pp), f"stop VM {c.vm.vmid}", 600.0)
        # purge: out of backup jobs and HA; its disks go with it (Proxmox removes the volumes its config owns)
        c.pve.wait_task(t["node"], c.pve.call("DELETE", VM_PATH, pp, {"purge": 1}), f"destroy VM {c.vm.vmid}", 600.0)
        return {"vm": "destroyed"}

    # ------------------------------------------------------------------ volumes converted, perhaps never attached
    def _exists(self, volid: str) -> bool:
        c = self.ctx
        content = c.pve.get("/nodes/{node}/storage/{storage}/content",
                            {"node": c.vm.node, "storage": volid.split(":", 1)[0]})
        return any(v.get("volid") == volid for v in content)

    def _proof(self, disk: dict[str, Any]) -> bool:
        """This rehearsal's manifest on the node names the volume and the rehearsal's hand-off."""
        c = self.ctx
        r = c.node.run(["cat", "--", c.manifest_path(disk["label"])])
        if r.rc != 0:
            return False
        try:
            ho = json.loads(r.stdout).get("handoff") or {}
        except ValueError:
            return False
        return ho.get("sha256") == c.vm.handoff_sha256 and ho.get("volid") == disk["volid"]

    def _conversions_over(self) -> None:
        """A conversion the killed controller started may still be stopping on the node (its watchdog
        removes the partial target once the SSH channel is gone): wait for its lock, as a resume does."""
        c = self.ctx
        for d in c.converted_disks():
            lock = c.manifest_path(d["label"]) + ".lock"
            if c.node.run(["test", "-e", lock]).rc != 0:
                continue   # never started on the node
            r = c.node.run_tethered(["true"], lock=lock, wait=120.0, timeout=300.0)
            if r.rc != 0:
                raise StepFailed(f"a conversion of {d['label']} still runs on node {c.vm.node} after 120 s: "
                                 f"{r.stderr.decode(errors='replace').strip()[-300:]}", where=self.vm.name)

    def free_volumes(self) -> dict[str, Any]:
        c, freed, kept = self.ctx, [], []
        self._conversions_over()
        for d in c.converted_disks():
            if not self._exists(d["volid"]):
                continue
            if not self._proof(d):
                kept.append(d["volid"])   # not provably ours: a human looks, nothing is destroyed
                continue
            freed.append(d["volid"])
        if freed:
            self._adopt_and_destroy(freed)
        left = [d["volid"] for d in c.converted_disks() if self._exists(d["volid"])]
        if left:
            raise StepFailed(f"volumes left after the rehearsal: {', '.join(left)}"
                             + (f" (no manifest of this rehearsal proves {', '.join(kept)} its own: kept)" if kept
                                else ""), where=self.vm.name)
        return {"volumes_freed": freed, "volumes_left": []}

    def _adopt_and_destroy(self, volids: list[str]) -> None:
        """Free volumes of the temporary vmid the way Proxmox frees a VM's own disks: a holder VM with
        this rehearsal's name and tag is created on them, then destroyed (only its referenced disks
        go with it: nothing else of that vmid). The API calls finalize and destroy_vm already make."""
        from guestprep.target_policy import proxmox_name

        c = self.ctx
        if self._ours() is not None:   # destroy_vm failed: the VM is still there; not a second one
            raise StepFailed(f"VM {c.vm.vmid} is still there", where=self.vm.name)
        params = {"vmid": c.vm.vmid, "name": proxmox_name(f"rehearsal-{self.vm.name}"), "tags": TAG,
                  **{f"scsi{i}": v for i, v in enumerate(volids)}}
        c.pve.wait_task(c.vm.node, c.pve.call("POST", "/nodes/{node}/qemu", {"node": c.vm.node}, params),
                        f"create holder VM {c.vm.vmid} for {', '.join(volids)}", 600.0)
        self.destroy_vm()

    # ------------------------------------------------------------------ the node's directory, the snapshot
    def remove_node_dir(self) -> dict[str, Any]:
        c = self.ctx
        shutil.rmtree(c.local_manifests(), ignore_errors=True)   # finalize's copies of the manifests
        r = c.node.run(["rm", "-rf", "--", self.tgt["node_dir"]])
        if r.rc != 0:
            raise StepFailed(f"rm {self.tgt['node_dir']}: {r.stderr.decode(errors='replace')[-300:]}",
                             where=f"node {c.vm.node}")
        return {"node_dir": "removed"}

    def remove_snapshot(self) -> dict[str, Any]:
        name, b = self.src.get("snapshot"), self.base
        if not name:
            return {"snapshot": "none taken"}
        snap = _find_snapshot(b.vsphere, b.vm_object, name)
        if snap is None:
            return {"snapshot": "removed"}
        # the VM's snapshot tree is the truth, not the task (govmomi's simulator names the snapshot as
        # the task's entity, which pyVmomi cannot read)
        snap.RemoveSnapshot_Task(removeChildren=False, consolidate=True)
        deadline = time.monotonic() + 120
        while _find_snapshot(b.vsphere, b.vm_object, name) is not None:
            if time.monotonic() > deadline:
                raise StepFailed(f"snapshot {name!r} is still on the source after 120 s", where=self.vm.name)
            time.sleep(1)
        return {"snapshot": "removed"}


class Rehearsal:
    def __init__(self, wave: Wave, vm: VmPlan, secrets: Secrets, options: RunOptions, journal, vmid: int | None,
                 vmids: TempVmids):
        self.wave, self.vm, self.o, self.j, self.vmids = wave, vm, options, journal, vmids
        self.say = journal.note(vm.name)
        self.base = VmContext(wave, vm, None, secrets, options, Limits(), self.say)
        self.secrets, self.want_vmid = secrets, vmid
        self.ev: dict[str, Any] = {"vm": vm.name, "would_boot": False, "started_at": now(), "steps": [],
                                   "reasons": [], "cleanup": {}}

    def step(self, name: str, fn: Callable[[], Any]) -> Any:
        return _journaled(self.j, self.vm.name, name, {"vmid": self.ev.get("vmid")}, fn, self.ev["steps"])

    def run(self) -> dict[str, Any]:
        from guestprep.vsphere import actions

        b, j, name = self.base, self.j, self.vm.name
        traces: Traces | None = None
        try:
            facts = b.facts()
            self.ev["source_power_before"] = facts.power_state
            tmp = self.vmids.take(b.pve, self.want_vmid)
            self.ev["vmid"] = tmp
            plan = rehearsal_plan(self.wave, self.vm, tmp, out_dir(self.wave) / "handoffs")
            snap_name = f"guestprep-rehearsal-{b.wave_id}-{int(time.time())}-{pysecrets.token_hex(3)}"
            # what this rehearsal may create, committed before any of it exists: a killed controller's
            # successor cleans up from this record alone
            source = {"moref": self.vm.moref, "snapshot": snap_name}
            target = {"vmid": tmp, "node": plan.node, "plan_name": plan.name, "handoff_sha256": plan.handoff_sha256,
                      "node_dir": f"{self.wave.nodes[plan.node].workdir.rstrip('/')}/{b.wave_id}/{plan.name}",  # NodeLink.dir
                      "disks": [{"label": d["label"], "volid": d["volid"]} for d in plan.disks
                                if d.get("volid") and not d.get("skip")]}
            j.set_vm(name, "rehearsing", source=source, target=target, error=None)
            traces = Traces(self.wave, self.vm, self.secrets, self.o, self.say, source, target, plan)
            ctx = traces.ctx
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
            self.ev["reasons"].append(_error_text(exc))
        finally:
            if traces is None:   # failed before anything was created
                j.set_vm(name, "would_not_boot", error="; ".join(self.ev["reasons"]) or None)
            else:
                j.set_vm(name, "cleaning")
                self.ev["cleanup"] = cleaned = traces.run(j, self.ev["steps"])
                failed = [f"{k}: {v}" for k, v in cleaned.items() if str(v).startswith("failed: ")]
                self.ev["reasons"] += [f"not cleaned up: {f}" for f in failed]
                phase = "left_behind" if failed else "would_boot" if self.ev["would_boot"] else "would_not_boot"
                j.set_vm(name, phase, error="; ".join(self.ev["reasons"]) or None)
                traces.close()
            self.ev["finished_at"] = now()
            try:
                self.ev["source_power_after"] = b.facts().power_state
            except Exception as exc:
                self.ev["source_power_after"] = f"unknown ({exc})"
            b.close()
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


def clean_leftover(wave: Wave, row: dict[str, Any], secrets: Secrets, options: RunOptions, journal) -> dict[str, Any]:
    """What an interrupted rehearsal of ``row['vm']`` left, removed from the journal's record of it."""
    name = row["vm"]
    rec: dict[str, Any] = {"vm": name, "phase_found": row["phase"], "vmid": row["target"].get("vmid"),
                           "snapshot": row["source"].get("snapshot"), "steps": []}
    if not row["target"].get("vmid"):   # the record was never written: nothing was created
        journal.set_vm(name, "cleaned")
        rec["cleanup"] = {}
        return rec
    journal.set_vm(name, "cleaning")
    traces = Traces(wave, wave.vm(name), secrets, options, journal.note(name), row["source"], row["target"])
    try:
        rec["cleanup"] = done = traces.run(journal, rec["steps"])
    finally:
        traces.close()
    failed = [f"{k}: {v}" for k, v in done.items() if str(v).startswith("failed: ")]
    journal.set_vm(name, "left_behind" if failed else "cleaned", error="; ".join(failed) or None)
    rec["left_behind"] = failed
    return rec


def unsettled(wave: Wave) -> set[str]:
    """Read-only: the VMs an interrupted rehearsal of this wave left traces of (WAL readers never block)."""
    path = out_dir(wave) / "journal.sqlite"
    if not path.is_file():
        return set()
    j = Journal(path)
    try:
        return {r["vm"] for r in j.vms() if r["phase"] not in SETTLED}
    finally:
        j.close()


def _bind(journal: Journal, wave: Wave) -> list[dict[str, Any]]:
    """The journal's unsettled VMs (a rehearsal was interrupted, or its cleanup failed); the journal is
    tied to the wave's plan hash while any are left (their node directory and hand-off are named by it)."""
    rows = [r for r in journal.vms() if r["phase"] not in SETTLED]
    known = journal.get_meta("plan_hash")
    if rows and known and known != wave.plan_hash:
        left = "; ".join(f"{r['vm']}: VM {r['target'].get('vmid')} on {r['target'].get('node')}, snapshot "
                         f"{r['source'].get('snapshot')!r}" for r in rows)
        raise ConfigError(f"an interrupted rehearsal of this wave as it was before it changed left traces ({left}); "
                          "restore the wave file and run `cutover rehearse` again to remove them", where=str(wave.path))
    missing = [r["vm"] for r in rows if r["vm"] not in {v.name for v in wave.vms}]
    if missing:
        raise ConfigError(f"the journal names VMs no longer in the wave with rehearsal traces: {', '.join(missing)}",
                          where=str(journal.path))
    journal.set_meta("plan_hash", wave.plan_hash)
    return rows


def rehearse_wave(wave: Wave, names: list[str], secrets: Secrets, options: RunOptions, *, parallel: int,
                  vmids: dict[str, int] | None, events: Callable[[Any], None]) -> RehearsalResult:
    """Clean up what interrupted rehearsals left, then rehearse. ``events`` (the run's
    :class:`controller.Event`, one per journal boundary and phase, and the steps' notes) is called
    from the VMs' threads at once: it must be thread-safe."""
    from types import SimpleNamespace

    from guestprep.cutover.controller import WatchedJournal
    from guestprep.runner import run_guests

    chosen = [wave.vm(n) for n in names] if names else list(wave.vms)
    d = out_dir(wave)
    if not d.is_dir():
        d.mkdir(mode=0o700)
    lock = WaveLock(d / "lock").acquire()
    plain = Journal(d / "journal.sqlite")
    try:
        journal = WatchedJournal(plain, wave, events)
        prior_rows = _bind(plain, wave)
        journal.interrupt_stale()   # we hold the lock: a 'running' attempt is a dead controller's
        journal.set_meta("last_controller_pid", str(os.getpid()))
        leftovers = {r["vm"]: r for r in prior_rows}
        temp = TempVmids(wave, prior_rows)
        for v in chosen:   # an unsettled row keeps its record until its traces are gone
            if v.name not in leftovers:
                journal.set_vm(v.name, "pending", source={}, target={}, error=None)

        def job(item, interrupt):
            prior = leftovers.get(item.name)
            cleaned = clean_leftover(wave, prior, secrets, options, journal) if prior else None
            if item.plan is None:
                return cleaned
            if cleaned and cleaned.get("left_behind"):
                return {"vm": item.name, "would_boot": False, "previous_rehearsal": cleaned,
                        "reasons": ["an interrupted rehearsal's traces could not all be removed (not rehearsing "
                                    "again on top of them): " + "; ".join(cleaned["left_behind"])]}
            ev = Rehearsal(wave, item.plan, secrets, options, journal, (vmids or {}).get(item.name), temp).run()
            if cleaned:
                ev["previous_rehearsal"] = cleaned
            return ev

        def crashed(item, exc: BaseException):
            return {"vm": item.name, "would_boot": False, "reasons": [f"controller error: {type(exc).__name__}: {exc}"]}

        items = [SimpleNamespace(name=v.name, plan=v) for v in chosen] + \
            [SimpleNamespace(name=n, plan=None) for n in leftovers if n not in {v.name for v in chosen}]
        results = [r for r in run_guests(items, job, parallel, crashed).results if r]
    finally:
        plain.close()
        lock.release()
    by_name = {r["vm"]: r for r in results}
    ordered = [by_name[v.name] for v in chosen if v.name in by_name]
    cleaned_only = [r for n, r in by_name.items() if n not in {v.name for v in chosen}]
    report = d / "report.json"
    tmp = report.with_name(".report.json.tmp")   # never half-written
    tmp.write_text(json.dumps({"schema": SCHEMA, "wave": str(wave.path), "plan_hash": wave.plan_hash,
                               "vms": ordered, "cleaned_up_only": cleaned_only},
                              indent=1, sort_keys=True, default=str) + "\n")
    os.replace(tmp, report)
    return RehearsalResult(ordered, str(report), cleaned_only)
