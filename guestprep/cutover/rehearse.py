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
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from guestprep.errors import ConfigError

from guestprep.cutover import steps
from guestprep.cutover.journal import Journal, WaveLock, now
from guestprep.cutover.sides import Secrets
from guestprep.cutover.steps import VM_PATH, Limits, RunOptions, StepFailed, VmContext
from guestprep.cutover.wave import VmPlan, Wave
from guestprep.cutover.rehearse_traces import TAG, Traces, _error_text, _journaled, clean_leftover, out_dir
from guestprep.cutover.rehearse_traces import snapshot_tree  # noqa: F401  (the tests read the tree through here)

SCHEMA = "guestprep.cutover-rehearsal/1"
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
