"""Plan one conversion job per disk of a ``guestprep handoff`` document, on the Proxmox node.

The document is read and validated by ``guestprep.handoff`` (the one reader of the hand-off
record, standard library only and bundled into this zipapp), so the node and the controller
agree on every field. The document is the reviewed plan of the cutover: its disk list, each
disk's source (an absolute path, or a datastore path mapped through ``policy.datastores``),
the target volume (``disks[].volid``, else ``vm-<vmid>-disk-<n>`` on ``policy.storage``) and
the format. A disk the document has finalize import itself (``import_from`` without
``volid``) is left alone unless ``--disk`` names it.
Command-line flags override, and every override that makes the target differ from
what ``finalize`` will attach is reported as a warning.
"""

from __future__ import annotations

import os
from hostside.record import dataclass, field
from typing import Any, Callable

from guestprep.handoff import DiskLocator, Handoff, check_import_from, load_handoff
from guestprep.models import parse_datastore_path
from hostside import pvestorage
from hostside.errors import InputError
from hostside.jobs import DiskJob   # noqa: F401  (re-exported: hostside.handoff.DiskJob)


def _at(doc: Handoff, field_name: str) -> str:
    """``FILE: disks[1].volid`` names for error messages."""
    return f"{doc.path}: {field_name}"


def load(path: str) -> Handoff:
    """The document at `path`, validated (ConfigError, exit 2, naming file and field)."""
    return load_handoff(path)


def boot_label(doc: Handoff) -> str | None:
    boot = doc.vm.boot_disk()
    return boot.label if boot else None


# --------------------------------------------------------------------------- planning


@dataclass
class Overrides:
    """Command-line flags that win over the document."""

    disks: list[str] = field(default_factory=list)          # --disk LABEL (select)
    sources: dict[str, str] = field(default_factory=dict)   # --source LABEL=SRC
    storage: str | None = None                              # --storage ID
    fmt: str | None = None                                  # --to qcow2|raw
    kind: str | None = None                                 # --to (with --dest)
    dest: str | None = None                                 # --dest (one disk)


StorageLoader = Callable[[], dict[str, pvestorage.Storage]]


def plan(doc: Handoff, ov: Overrides, storages: StorageLoader, cfg_path: str) -> list[DiskJob]:
    """One job per selected disk of the document (excluded disks carry a reason)."""
    labels = [d.label for d in doc.disks]
    if not labels:
        raise InputError("the hand-off lists no disks", _at(doc, "disks"))
    for name in ov.disks:
        if name not in labels:
            raise InputError(f"the hand-off has no disk {name!r} (has: {', '.join(labels)})",
                             "--disk")
    for name in ov.sources:
        if name not in labels:
            raise InputError(f"the hand-off has no disk {name!r} (has: {', '.join(labels)})",
                             "--source")
    chosen = [(i, d) for i, d in enumerate(doc.disks) if not ov.disks or d.label in ov.disks]
    jobs = [DiskJob(d.label, _at(doc, f"disks[{i}]"), document_volid=d.volid) for i, d in chosen]
    vm_disks = {d.label: d for d in doc.vm.disks}
    for job, (i, d) in zip(jobs, chosen):
        vd = vm_disks[d.label]
        if vd.rdm_mode or vd.disk_mode.startswith("independent"):
            why = f"RDM ({vd.rdm_mode})" if vd.rdm_mode else f"independent ({vd.disk_mode})"
            job.skipped = f"{why}: finalize excludes it, so it is not converted"
            continue
        if d.import_from and not d.volid and d.label not in ov.disks:
            # the reviewed plan: finalize imports this disk itself (import-from)
            job.skipped = (f"finalize imports it from {d.import_from} (no volid in the "
                           "hand-off); --disk LABEL converts it here anyway")
            continue
        job.source, job.source_from = _source(doc, i, d, ov)
    active = [j for j in jobs if not j.skipped]
    if not active:
        raise InputError("no disk to convert (every selected disk is excluded)", doc.path)
    if ov.dest is not None:
        if ov.storage:
            raise InputError("--storage and --dest both name the target: give one", "--dest")
        if len(active) != 1:
            raise InputError(f"--dest names one target but {len(active)} disks are selected: "
                             "choose one with --disk LABEL", "--dest")
        job = active[0]
        job.kind, job.dest = ov.kind, ov.dest
        job.warnings.append("--dest given: the target is not a volume the hand-off names; "
                            "finalize attaches disks by the hand-off's volid")
        return jobs
    used = {pvestorage.split_volid(d.volid, "")[1].split("/")[-1].rsplit(".", 1)[0]
            for d in doc.disks if d.volid}
    seen: dict[str, str] = {}
    for job, (i, d) in zip(jobs, chosen):
        if not job.skipped:
            _target(doc, i, d, job, ov, storages, cfg_path, used)
            if job.dest in seen:
                raise InputError(f"disks {seen[job.dest]!r} and {job.label!r} would both be "
                                 f"written to {job.volid}", job.where)
            seen[str(job.dest)] = job.label
    return jobs


def _source(doc: Handoff, i: int, d: DiskLocator, ov: Overrides) -> tuple[str, str]:
    if d.label in ov.sources:
        return ov.sources[d.label], "--source"
    if d.import_from:
        return check_import_from(doc, i), f"disks[{i}].import_from"
    datastores = doc.policy.datastores
    parts = parse_datastore_path(d.source)
    if parts:
        ds, rel = parts
        if ds not in datastores:
            raise InputError(f"datastore path {d.source!r} has no local path on this node: "
                             f"policy.datastores has no {ds!r} (map it, or pass "
                             f"--source '{d.label}=PATH')", _at(doc, f"disks[{i}].source"))
        if rel.startswith("/") or ".." in rel.split("/"):
            raise InputError(f"datastore path {d.source!r} leaves its datastore",
                             _at(doc, f"disks[{i}].source"))
        return (os.path.join(datastores[ds], rel),
                f"disks[{i}].source via policy.datastores[{ds!r}]")
    if d.source.startswith("/"):
        return d.source, f"disks[{i}].source"
    raise InputError(f"no usable source ({d.source!r} is neither an absolute path nor a "
                     f"'[datastore] path'): pass --source '{d.label}=PATH'",
                     _at(doc, f"disks[{i}].source"))


def _target(doc: Handoff, i: int, d: DiskLocator, job: DiskJob, ov: Overrides, storages: StorageLoader,
            cfg_path: str, used: set[str]) -> None:
    vmid, fmt_of_doc = doc.policy.vmid, doc.policy.format
    if d.volid:
        sid, volname = pvestorage.split_volid(d.volid, _at(doc, f"disks[{i}].volid"))
        fmt, where = ov.fmt, _at(doc, f"disks[{i}].volid")
        if ov.storage:
            sid, where = ov.storage, "--storage"
    else:
        sid = ov.storage or doc.policy.storage
        if not sid:
            raise InputError(f"disk {d.label!r} has no volid and the policy no storage: set "
                             "policy storage (or volumes), or pass --storage",
                             _at(doc, "policy.storage"))
        if vmid is None:
            raise InputError(f"disk {d.label!r} has no volid: naming vm-<vmid>-disk-<n> "
                             "needs policy vmid (or set policy volumes)", _at(doc, "policy.vmid"))
        volname, fmt, where = None, ov.fmt or fmt_of_doc, "--storage" if ov.storage else \
            _at(doc, "policy.storage")
    st = pvestorage.storage_of(storages(), sid, where, cfg_path)
    if volname is None:
        number = 0
        while f"vm-{vmid}-disk-{number}" in used:
            number += 1
        used.add(f"vm-{vmid}-disk-{number}")
        volname = pvestorage.volname_for(st, vmid, number, fmt or "qcow2")
    elif ov.storage and st.is_file and "/" not in volname:   # block name re-homed to files
        owner = volname.split("-")[1] if volname.startswith("vm-") else ""
        volname = f"{owner}/{volname}.{fmt or fmt_of_doc or 'qcow2'}"
    elif ov.storage and not st.is_file and "/" in volname:   # file name re-homed to a block
        volname = volname.split("/", 1)[1].rsplit(".", 1)[0]
    p = pvestorage.place(st, volname, fmt, where)
    job.kind, job.dest, job.volid = p.kind, p.dest, p.volid
    job.makes_dir, job.volblocksize = p.makes_dir, p.volblocksize
    if d.volid is None:
        job.warnings.append(f"the hand-off names no volume for this disk: finalize would not "
                            f"attach {p.volid}; add volumes: {{{d.label!r}: {p.volid!r}}} to the "
                            "policy and rebuild the hand-off")
    elif p.volid != d.volid:
        job.warnings.append(f"target {p.volid} differs from the hand-off's volid {d.volid} "
                            "(command-line override): update the policy volumes and rebuild "
                            "the hand-off before finalize")
