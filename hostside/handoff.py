"""Read a ``guestprep handoff`` document on the Proxmox node and plan one job per disk.

Standard library only (the node has no pydantic/yaml): the fields this side needs are
validated here, each error naming the file and the field. The document is the
reviewed plan of the cutover: its disk list, each disk's source (an absolute path,
or a datastore path mapped through ``policy.datastores``), the target volume
(``disks[].volid``, else ``vm-<vmid>-disk-<n>`` on ``policy.storage``) and the format.
A disk the document has finalize import itself (``import_from`` without ``volid``)
is left alone unless ``--disk`` names it.
Command-line flags override, and every override that makes the target differ from
what ``finalize`` will attach is reported as a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable

from guestprep.models import HANDOFF_SCHEMA
from hostside import pvestorage
from hostside.errors import InputError

_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rel>.+)$")
FORMATS = ("raw", "qcow2")


class _Where:
    """Builds ``FILE: disks[1].volid`` names for error messages."""

    def __init__(self, path: str):
        self.path = path

    def __call__(self, field_name: str) -> str:
        return f"{self.path}: {field_name}"


@dataclass
class VmDisk:
    label: str
    datastore_path: str
    disk_mode: str
    rdm_mode: str | None
    is_boot: bool


@dataclass
class DocDisk:
    index: int
    label: str
    source: str
    volid: str | None
    import_from: str | None


@dataclass
class HandoffDoc:
    path: str
    sha256: str
    vm_name: str
    uuid_bios: str | None
    uuid_instance: str | None
    moref: str | None
    firmware: str
    vm_disks: dict[str, VmDisk]
    disks: list[DocDisk]
    storage: str | None
    fmt: str | None
    vmid: int | None
    datastores: dict[str, str]
    created: str = ""

    def identity(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "schema": HANDOFF_SCHEMA,
                "vm_name": self.vm_name, "vm_uuid": self.uuid_bios,
                "vm_instance_uuid": self.uuid_instance, "moref": self.moref,
                "created": self.created}

    def boot_label(self) -> str | None:
        marked = [d.label for d in self.vm_disks.values() if d.is_boot]
        return marked[0] if marked else next(iter(self.vm_disks), None)


# --------------------------------------------------------------------------- reading


def _want(obj: dict, key: str, types: tuple, what: str, where: str, *, required: bool = False):
    if key not in obj or obj[key] is None:
        if required:
            raise InputError(f"missing (expected {what})", where)
        return None
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise InputError(f"must be {what}, got {type(value).__name__} {value!r}"[:200], where)
    return value


def load(path: str) -> HandoffDoc:
    """The document at `path`, validated; InputError (exit 2) naming file and field."""
    apath = os.path.abspath(path)
    try:
        with open(apath, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise InputError("no such hand-off document", apath) from None
    except OSError as exc:
        raise InputError(f"cannot read the hand-off document: {exc.strerror}", apath) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"not a JSON document: {exc}", apath) from None
    return parse(data, apath, hashlib.sha256(raw).hexdigest())


def parse(data: Any, path: str, sha256: str) -> HandoffDoc:
    at = _Where(path)
    if not isinstance(data, dict):
        raise InputError("a hand-off document must be a JSON object", path)
    schema = data.get("schema")
    if schema != HANDOFF_SCHEMA:
        raise InputError(f"unknown document schema {schema!r}: this guestprep-host reads "
                         f"{HANDOFF_SCHEMA!r} (use a guestprep-host built from the same "
                         "release as the controller)", at("schema"))
    vm = _want(data, "source_vm", (dict,), "an object (the SourceVM)", at("source_vm"),
               required=True)
    name = _want(vm, "name", (str,), "a VM name", at("source_vm.name"), required=True)
    if not name:
        raise InputError("must not be empty", at("source_vm.name"))
    vm_disks = _vm_disks(vm, at)
    disks = _doc_disks(data, vm_disks, at)
    policy = _want(data, "policy", (dict,), "an object (the target policy)", at("policy"),
                   required=True)
    fmt = _want(policy, "format", (str,), "raw or qcow2", at("policy.format"))
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"must be raw or qcow2, got {fmt!r}", at("policy.format"))
    vmid = _want(policy, "vmid", (int,), "an integer 100..999999999", at("policy.vmid"))
    if vmid is not None and not 100 <= vmid <= 999999999:
        raise InputError(f"must be 100..999999999, got {vmid}", at("policy.vmid"))
    datastores = _want(policy, "datastores", (dict,), "an object (datastore -> mounted path)",
                       at("policy.datastores")) or {}
    for ds, mounted in datastores.items():
        if not isinstance(mounted, str) or not mounted.startswith("/"):
            raise InputError(f"must be an absolute path, got {mounted!r}",
                             at(f"policy.datastores[{ds!r}]"))
    return HandoffDoc(
        path=path, sha256=sha256, vm_name=name,
        uuid_bios=_want(vm, "uuid_bios", (str,), "a string", at("source_vm.uuid_bios")),
        uuid_instance=_want(vm, "uuid_instance", (str,), "a string",
                            at("source_vm.uuid_instance")),
        moref=_want(vm, "moref", (str,), "a string", at("source_vm.moref")),
        firmware=_want(vm, "firmware", (str,), "bios or efi", at("source_vm.firmware")) or "bios",
        vm_disks=vm_disks, disks=disks,
        storage=_want(policy, "storage", (str,), "a storage id", at("policy.storage")),
        fmt=fmt, vmid=vmid, datastores=dict(datastores),
        created=str(data.get("created") or ""))


def _vm_disks(vm: dict, at: _Where) -> dict[str, VmDisk]:
    items = _want(vm, "disks", (list,), "a list", at("source_vm.disks"), required=True)
    out: dict[str, VmDisk] = {}
    for i, d in enumerate(items):
        w = f"source_vm.disks[{i}]"
        if not isinstance(d, dict):
            raise InputError("must be an object", at(w))
        label = _want(d, "label", (str,), "a disk label", at(f"{w}.label"), required=True)
        if label in out:
            raise InputError(f"disk label {label!r} appears twice", at(f"{w}.label"))
        out[label] = VmDisk(
            label=label,
            datastore_path=_want(d, "datastore_path", (str,), "a string",
                                 at(f"{w}.datastore_path")) or "",
            disk_mode=_want(d, "disk_mode", (str,), "a string", at(f"{w}.disk_mode"))
            or "persistent",
            rdm_mode=_want(d, "rdm_mode", (str,), "a string", at(f"{w}.rdm_mode")),
            is_boot=bool(_want(d, "is_boot", (bool,), "true or false", at(f"{w}.is_boot"))))
    return out


def _doc_disks(data: dict, vm_disks: dict[str, VmDisk], at: _Where) -> list[DocDisk]:
    items = _want(data, "disks", (list,), "a list", at("disks"), required=True)
    out: list[DocDisk] = []
    seen: set[str] = set()
    for i, d in enumerate(items):
        w = f"disks[{i}]"
        if not isinstance(d, dict):
            raise InputError("must be an object", at(w))
        label = _want(d, "label", (str,), "a disk label", at(f"{w}.label"), required=True)
        if label not in vm_disks:
            raise InputError(f"{label!r} is not a disk of source_vm "
                             f"(has: {', '.join(vm_disks) or 'none'})", at(f"{w}.label"))
        if label in seen:
            raise InputError(f"disk {label!r} is listed twice", at(f"{w}.label"))
        seen.add(label)
        source = _want(d, "source", (str,), "a path or datastore path", at(f"{w}.source")) or ""
        volid = _want(d, "volid", (str,), "a Proxmox volume id", at(f"{w}.volid"))
        if volid is not None:
            pvestorage.split_volid(volid, at(f"{w}.volid"))
        import_from = _want(d, "import_from", (str,), "an absolute path", at(f"{w}.import_from"))
        if import_from is not None and not import_from.startswith("/"):
            raise InputError(f"must be an absolute path, got {import_from!r}",
                             at(f"{w}.import_from"))
        out.append(DocDisk(i, label, source, volid, import_from))
    if not out:
        raise InputError("the hand-off lists no disks", at("disks"))
    return out


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


@dataclass
class DiskJob:
    label: str
    where: str                      # "FILE: disks[i]" for messages
    source: str | None = None
    source_from: str = ""           # which field (or flag) gave the source
    kind: str | None = None         # hostside target kind
    dest: str | None = None
    volid: str | None = None        # Proxmox volume id of the target (None: --dest)
    document_volid: str | None = None
    makes_dir: str | None = None
    volblocksize: str | None = None
    skipped: str | None = None      # reason the disk is not converted
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "source": self.source, "source_from": self.source_from,
                "kind": self.kind, "dest": self.dest, "volid": self.volid,
                "document_volid": self.document_volid, "skipped": self.skipped,
                "warnings": self.warnings}


StorageLoader = Callable[[], dict[str, pvestorage.Storage]]


def plan(doc: HandoffDoc, ov: Overrides, storages: StorageLoader, cfg_path: str) -> list[DiskJob]:
    """One job per selected disk of the document (excluded disks carry a reason)."""
    at = _Where(doc.path)
    labels = [d.label for d in doc.disks]
    for name in ov.disks:
        if name not in labels:
            raise InputError(f"the hand-off has no disk {name!r} (has: {', '.join(labels)})",
                             "--disk")
    for name in ov.sources:
        if name not in labels:
            raise InputError(f"the hand-off has no disk {name!r} (has: {', '.join(labels)})",
                             "--source")
    chosen = [d for d in doc.disks if not ov.disks or d.label in ov.disks]
    jobs = [DiskJob(d.label, at(f"disks[{d.index}]"), document_volid=d.volid) for d in chosen]
    for job, d in zip(jobs, chosen):
        vd = doc.vm_disks[d.label]
        if vd.rdm_mode or vd.disk_mode.startswith("independent"):
            why = f"RDM ({vd.rdm_mode})" if vd.rdm_mode else f"independent ({vd.disk_mode})"
            job.skipped = f"{why}: finalize excludes it, so it is not converted"
            continue
        if d.import_from and not d.volid and d.label not in ov.disks:
            # the reviewed plan: finalize imports this disk itself (import-from)
            job.skipped = (f"finalize imports it from {d.import_from} (no volid in the "
                           "hand-off); --disk LABEL converts it here anyway")
            continue
        job.source, job.source_from = _source(doc, d, ov, at)
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
    for job, d in zip(jobs, chosen):
        if not job.skipped:
            _target(doc, d, job, ov, storages, cfg_path, used, at)
            if job.dest in seen:
                raise InputError(f"disks {seen[job.dest]!r} and {job.label!r} would both be "
                                 f"written to {job.volid}", job.where)
            seen[str(job.dest)] = job.label
    return jobs


def _source(doc: HandoffDoc, d: DocDisk, ov: Overrides, at: _Where) -> tuple[str, str]:
    if d.label in ov.sources:
        return ov.sources[d.label], "--source"
    if d.import_from:
        return d.import_from, f"disks[{d.index}].import_from"
    m = _DS_PATH.match(d.source)
    if m:
        ds, rel = m.group("ds"), m.group("rel")
        if ds not in doc.datastores:
            raise InputError(f"datastore path {d.source!r} has no local path on this node: "
                             f"policy.datastores has no {ds!r} (map it, or pass "
                             f"--source '{d.label}=PATH')", at(f"disks[{d.index}].source"))
        if rel.startswith("/") or ".." in rel.split("/"):
            raise InputError(f"datastore path {d.source!r} leaves its datastore",
                             at(f"disks[{d.index}].source"))
        return (os.path.join(doc.datastores[ds], rel),
                f"disks[{d.index}].source via policy.datastores[{ds!r}]")
    if d.source.startswith("/"):
        return d.source, f"disks[{d.index}].source"
    raise InputError(f"no usable source ({d.source!r} is neither an absolute path nor a "
                     f"'[datastore] path'): pass --source '{d.label}=PATH'",
                     at(f"disks[{d.index}].source"))


def _target(doc: HandoffDoc, d: DocDisk, job: DiskJob, ov: Overrides, storages: StorageLoader,
            cfg_path: str, used: set[str], at: _Where) -> None:
    if d.volid:
        sid, volname = pvestorage.split_volid(d.volid, at(f"disks[{d.index}].volid"))
        fmt, where = ov.fmt, at(f"disks[{d.index}].volid")
        if ov.storage:
            sid, where = ov.storage, "--storage"
    else:
        sid = ov.storage or doc.storage
        if not sid:
            raise InputError(f"disk {d.label!r} has no volid and the policy no storage: set "
                             "policy storage (or volumes), or pass --storage",
                             at("policy.storage"))
        if doc.vmid is None:
            raise InputError(f"disk {d.label!r} has no volid: naming vm-<vmid>-disk-<n> "
                             "needs policy vmid (or set policy volumes)", at("policy.vmid"))
        volname, fmt, where = None, ov.fmt or doc.fmt, "--storage" if ov.storage else \
            at("policy.storage")
    st = pvestorage.storage_of(storages(), sid, where, cfg_path)
    if volname is None:
        number = 0
        while f"vm-{doc.vmid}-disk-{number}" in used:
            number += 1
        used.add(f"vm-{doc.vmid}-disk-{number}")
        volname = pvestorage.volname_for(st, doc.vmid, number, fmt or "qcow2")
    elif ov.storage and st.is_file and "/" not in volname:   # block name re-homed to files
        vmid = volname.split("-")[1] if volname.startswith("vm-") else ""
        volname = f"{vmid}/{volname}.{fmt or doc.fmt or 'qcow2'}"
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
