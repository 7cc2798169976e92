"""`cutover plan`: the wave file a human reviews and commits.

Per VM: a fresh pre-phase preflight is the gate (ready, warnings, or waived with a reason),
preparation counts as verified when no check that an operation fixes is still open, the
SourceVM is read from vCenter now, and the hand-off document (`guestprep.handoff/1`) is built
and written beside the wave. The target volume of every disk is named here (so hostside
writes exactly the volumes finalize attaches) and the strategy is decided from the evidence.

The policy file is the finalize policy (docs/finalize.md) applied to every VM, plus a
``cutover:`` section: ``proxmox`` (API connection, secrets by env var name), ``nodes``
(SSH to each Proxmox node), ``vms`` (per-VM policy overrides, e.g. vmid), ``vmid_start``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

import yaml

from guestprep.errors import ConfigError

from guestprep.cutover.wave import STEPS, WAVE_SCHEMA, dump

FILE_STORAGES = ("dir", "nfs", "cifs", "glusterfs", "cephfs", "btrfs")


@dataclass
class CutoverPolicy:
    base: dict[str, Any]
    per_vm: dict[str, dict[str, Any]]
    proxmox: dict[str, Any]
    nodes: dict[str, Any]
    vmid_start: int | None
    options: dict[str, Any] = field(default_factory=dict)
    where: str = ""


def load_policy(path: Path) -> CutoverPolicy:
    where = str(path)
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=where) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          where=f"{where}:{mark.line + 1}" if mark else where) from None
    if not isinstance(doc, Mapping):
        raise ConfigError("must be a YAML mapping", where=where)
    doc = dict(doc)
    cut = doc.pop("cutover", None)
    if not isinstance(cut, Mapping):
        raise ConfigError("needs a 'cutover:' section (proxmox, nodes, vms)", where=where)
    unknown = set(cut) - {"proxmox", "nodes", "vms", "vmid_start", "options"}
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}", where=f"{where}: cutover")
    nm_file = doc.pop("network_map_file", None)
    if nm_file is not None:  # as guestprep.finalize.policy does: merged under network_map
        nm_path = Path(nm_file) if Path(nm_file).is_absolute() else path.parent / nm_file
        try:
            nm = yaml.safe_load(nm_path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read the network map: {exc}", where=str(nm_path)) from None
        doc["network_map"] = {**dict(nm), **dict(doc.get("network_map") or {})}
    for key in ("proxmox", "nodes"):
        if not isinstance(cut.get(key), Mapping) or not cut.get(key):
            raise ConfigError(f"cutover.{key} must be a non-empty mapping", where=where)
    vms = cut.get("vms") or {}
    if not isinstance(vms, Mapping) or not all(isinstance(v, Mapping) for v in vms.values()):
        raise ConfigError("cutover.vms must map VM names to policy overrides", where=where)
    start = cut.get("vmid_start")
    if start is not None and (not isinstance(start, int) or isinstance(start, bool) or not 100 <= start):
        raise ConfigError(f"cutover.vmid_start must be an integer >= 100, got {start!r}", where=where)
    return CutoverPolicy(base=doc, per_vm={k: dict(v) for k, v in vms.items()}, proxmox=dict(cut["proxmox"]),
                         nodes={k: dict(v) for k, v in cut["nodes"].items()}, vmid_start=start,
                         options=dict(cut.get("options") or {}), where=where)


def _volid(storage: str, storage_type: str | None, fmt: str | None, vmid: int, n: int, where: str) -> str:
    if storage_type is None:
        raise ConfigError("storage_type is needed to name the target volumes (dir, nfs, zfspool, lvmthin, ...)",
                          where=where)
    if storage_type in FILE_STORAGES:
        return f"{storage}:{vmid}/vm-{vmid}-disk-{n}.{fmt or 'qcow2'}"
    return f"{storage}:vm-{vmid}-disk-{n}"


def vm_policy(pol: CutoverPolicy, vm_name: str, index: int, source_vm: Any):
    """The finalize policy of one VM: base + its overrides, vmid assigned, every volume named."""
    from guestprep.target_policy import TargetPolicy

    where = f"{pol.where}: cutover.vms.{vm_name}" if vm_name in pol.per_vm else pol.where
    merged = {**pol.base, **pol.per_vm.get(vm_name, {})}
    if merged.get("vmid") is None:
        if pol.vmid_start is None:
            raise ConfigError(f"no vmid for {vm_name}: set cutover.vms.{vm_name}.vmid or cutover.vmid_start",
                              where=pol.where)
        merged["vmid"] = pol.vmid_start + index
    policy = TargetPolicy.from_dict(merged, where=where)
    volumes = dict(policy.volumes)
    n = 0
    for d in source_vm.disks:
        if d.rdm_mode or d.independent or d.label in volumes:
            continue
        volumes[d.label] = _volid(policy.storage or "", policy.storage_type, policy.format, policy.vmid, n, where)
        n += 1
    return replace(policy, volumes=volumes)


def gate_of(report_guest: Any) -> dict[str, Any]:
    """Ready / warnings / waived / blocked / unknown, from the guest's findings after waivers."""
    from guestprep.models import Status, readiness_of

    findings = report_guest.findings
    readiness = readiness_of(findings, report_guest.error).value
    waived = sorted({f.check_id for f in findings if f.status is Status.WAIVED})
    blockers = sorted({f.check_id for f in findings if f.is_open and f.severity.value == "blocker"})
    verdict = "waived" if waived and readiness in ("ready", "warnings") else readiness
    return {"verdict": verdict, "readiness": readiness, "blockers": blockers, "waived": waived,
            "error": report_guest.error}


def prepare_verified(report_guest: Any) -> bool:
    """No open finding of a check that an operation fixes: what `prepare --apply` verifies."""
    from guestprep.checks import registry

    for f in report_guest.findings:
        if not f.is_open:
            continue
        try:
            if registry.get(f.check_id).meta.fixed_by:
                return False
        except Exception:  # a finding without a registered check (reachability, fleet) is not prepare's
            continue
    return not report_guest.error


def without_coexistence_disk(vm: Any) -> tuple[Any, bool]:
    """The SourceVM as it will be at cutover: the coexistence disk is detached before shutdown."""
    from guestprep.vsphere.coexist import is_marker_file

    kept = [d for d in vm.disks if not is_marker_file(d.datastore_path)]
    return replace(vm, disks=kept), len(kept) != len(vm.disks)


def plan_wave(*, inventory_file: Path, policy_file: Path, names: list[str], out: Path, session: Any,
              vsphere: dict[str, Any], connect_options: Any, waivers_file: Path | None, parallel: int,
              timeout: float) -> dict[str, Any]:
    from guestprep import inventory
    from guestprep.finalize.evidence import boot_evidence
    from guestprep.finalize.strategy import decide
    from guestprep.handoff import build_handoff, guest_facts_ref, source_vm_from_dict, write_exclusive, write_handoff
    from guestprep.operations.vm import target
    from guestprep.preflight import FleetOptions, run_preflight
    from guestprep.report import waivers
    from guestprep.secrets import redact_doc

    if out.exists():
        raise ConfigError("already exists; a wave is planned once (write a new file)", where=str(out))
    pol = load_policy(policy_file)
    waiver_list = waivers.load(waivers_file) if waivers_file else []
    guests = inventory.select_guests(names, inventory_file, False)
    side = out.parent / (out.name + ".d")
    if side.exists():
        raise ConfigError("already exists (left from an earlier plan?)", where=str(side))

    report = run_preflight(guests, FleetOptions(parallel=parallel, timeout=timeout, phase="pre",
                                                connect=connect_options))
    report.apply_waivers(waiver_list)   # the verdict the hand-off's guest facts carry is the gate's
    by_guest = {g.guest: g for g in report.guests}
    side.mkdir(mode=0o700)
    facts_path = side / "preflight.json"
    write_exclusive(facts_path, json.dumps(redact_doc(report.to_dict()), indent=1, sort_keys=True) + "\n")

    vms = []
    for i, guest in enumerate(guests):
        vm_name = str(guest.vars.get("vm_name") or guest.name)
        ident = str(guest.vars.get("vsphere_moref") or vm_name)
        where = f"vsphere {vsphere['server']}"
        _, record = target.load(session, ident, where)
        source, had_coexist = without_coexistence_disk(source_vm_from_dict(record.to_dict(), f"{where}: {ident}"))
        policy = vm_policy(pol, vm_name, i, source)
        if policy.node not in pol.nodes:
            raise ConfigError(f"node {policy.node!r} of {vm_name} has no SSH entry under cutover.nodes",
                              where=pol.where)
        rep = by_guest.get(guest.name)
        evidence = boot_evidence(json.loads(facts_path.read_text()), guest.name, str(facts_path))
        origin = {"kind": "vsphere", "server": vsphere["server"], "moref": source.moref,
                  "fetched": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "wave": str(out)}
        h = build_handoff(source, policy, origin=origin, guest_facts=guest_facts_ref(facts_path, guest.name),
                          boot_evidence=evidence)
        try:
            decision = decide(h, (rep.os if rep else "") or "linux")
            strategy, reason = decision.strategy, decision.reason
        except ConfigError as exc:
            strategy, reason = "none", exc.message
        hpath = side / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', vm_name)}.handoff.json"
        write_handoff(h, hpath)
        from guestprep.handoff import sha256_file
        gate = gate_of(rep) if rep else {"verdict": "unknown", "error": "not checked"}
        if strategy == "none":
            gate = {**gate, "verdict": "blocked", "blockers": sorted(set(gate.get("blockers", [])) | {"STRATEGY"})}
        skip = {d.label for d in source.disks if d.rdm_mode or d.independent}
        vms.append({
            "name": vm_name, "moref": source.moref, "os": (rep.os if rep else "unknown"),
            "gate": {**gate, "strategy_reason": reason}, "prepare_verified": bool(rep and prepare_verified(rep)),
            "target": {"node": policy.node, "storage": policy.storage, "vmid": policy.vmid, "strategy": strategy},
            "handoff": os.path.relpath(hpath, out.parent), "handoff_sha256": sha256_file(hpath),
            "disks": [{"label": d.label, "source": d.datastore_path, "capacity_bytes": d.capacity_bytes,
                       "volid": policy.volumes.get(d.label), **({"skip": True} if d.label in skip else {})}
                      for d in source.disks],
            "expected_addresses": list(policy.expect_addresses) or source.usable_ips(),
            "expected_macs": [n.mac.lower() for n in source.nics],
            "steps": [s for s in STEPS if s != "coexist_detach" or had_coexist],
        })
    doc = {"schema": WAVE_SCHEMA, "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "inventory": str(inventory_file), "policy": str(policy_file),
           "vsphere": {k: v for k, v in vsphere.items() if v not in (None, False)},
           "proxmox": pol.proxmox, "nodes": pol.nodes, "options": pol.options, "vms": vms}
    write_exclusive(out, "# guestprep cutover wave: review, commit, then `guestprep cutover run`\n" + dump(doc),
                    mode=0o644)
    return doc
