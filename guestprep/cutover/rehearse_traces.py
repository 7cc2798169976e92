"""What one rehearsal of a VM leaves, and how it is removed: the rehearsal's journaled steps, the
vSphere snapshot helpers, and ``Traces`` — the cleanup from the rehearsal journal's record alone
(the temporary VM only if still this rehearsal's by name and tag, a volume only when this
rehearsal's manifest on the node proves it converted it, the node directory, the snapshot by its
name). Each part checks before it acts, so a cleanup killed midway is simply run again.
`cutover rehearse` itself (plan, run, report): guestprep/cutover/rehearse.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from guestprep.errors import GuestprepError

from guestprep.cutover.journal import now
from guestprep.cutover.sides import Secrets
from guestprep.cutover.steps import VM_PATH, Limits, RunOptions, StepFailed, VmContext, reclaim_partials
from guestprep.cutover.wave import VmPlan, Wave

TAG = "guestprep-rehearsal"
CRASH_ENV = "GUESTPREP_CUTOVER_REHEARSE_CRASH_AFTER"


def out_dir(wave: Wave) -> Path:
    return wave.path.parent / (wave.path.name + ".rehearsal")


def _crash_point(vm: str, step: str) -> None:
    want = os.environ.get(CRASH_ENV)
    if want and want in (step, f"{vm}:{step}"):
        os._exit(137)


def _error_text(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, GuestprepError) else f"{type(exc).__name__}: {exc}"


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

    def _conversions_over(self) -> list[str]:
        """A conversion the killed controller started may still be stopping on the node: wait for it,
        then remove what a converter killed outright left (steps.reclaim_partials). The partials removed."""
        return reclaim_partials(self.ctx)

    def free_volumes(self) -> dict[str, Any]:
        c, freed, kept = self.ctx, [], []
        partials = self._conversions_over()
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
        return {"volumes_freed": freed, "volumes_left": [],
                **({"partials_removed": partials} if partials else {})}

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
