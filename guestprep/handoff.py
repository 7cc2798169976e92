"""The per-VM hand-off document (DESIGN.md "Contracts").

One JSON file per VM: the SourceVM, where each disk is found (a volume converted by
``hostside`` or a path Proxmox imports with ``import-from``), a digest of the guest facts
and their readiness verdict, and the target policy. ``finalize`` reads only this file, so
it can run on the Proxmox node and be reviewed before the cutover.

Written exclusively (an existing file is never overwritten) and atomically (a temporary
file linked into place), so a crash never leaves half a document.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from guestprep.errors import ConfigError
from guestprep.finalize.policy import TargetPolicy
from guestprep.models import HANDOFF_SCHEMA, Readiness, SourceVM

_DS_PATH = re.compile(r"^\[(?P<ds>[^\]]+)\]\s*(?P<rel>.+)$")


@dataclass
class DiskLocator:
    label: str                    # source disk label ("scsi0:0", "Hard disk 1")
    source: str                   # datastore path or file path as the source knows it
    volid: str | None = None      # an existing Proxmox volume (made by hostside)
    import_from: str | None = None  # absolute path Proxmox imports from

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "source": self.source, "volid": self.volid, "import_from": self.import_from}


@dataclass
class GuestFactsRef:
    path: str
    sha256: str
    readiness: str | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "readiness": self.readiness, "note": self.note}


@dataclass
class Handoff:
    vm: SourceVM
    disks: list[DiskLocator]
    policy: TargetPolicy
    guest_facts: GuestFactsRef | None = None
    origin: dict[str, Any] = field(default_factory=dict)
    created: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": HANDOFF_SCHEMA,
            "created": self.created,
            "origin": self.origin,
            "source_vm": self.vm.to_dict(),
            "disks": [d.to_dict() for d in self.disks],
            "guest_facts": self.guest_facts.to_dict() if self.guest_facts else None,
            "policy": self.policy.to_dict(),
        }


# --------------------------------------------------------------------------- building


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_json_file(path: str | Path) -> Any:
    """A JSON input file, or a ConfigError naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", where=str(p)) from e
    except ValueError as e:
        raise ConfigError(f"not JSON: {e}", where=str(p)) from e


def source_vm_from_dict(data: Any, where: str) -> SourceVM:
    if not isinstance(data, Mapping):
        raise ConfigError("a SourceVM must be a JSON object", where=where)
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError("SourceVM has no name", where=where)
    try:
        vm = SourceVM.from_dict(data)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"not a SourceVM: {e}", where=where) from e
    for what, value, typ in [("num_cpu", vm.num_cpu, int), ("cores_per_socket", vm.cores_per_socket, int),
                             ("memory_mb", vm.memory_mb, int)]:
        if not isinstance(value, typ) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"{what} must be a positive integer, got {value!r}", where=where)
    if vm.firmware not in ("bios", "efi"):
        raise ConfigError(f"firmware must be bios or efi, got {vm.firmware!r}", where=where)
    for d in vm.disks:
        if vm.controller(d.controller_key) is None:
            raise ConfigError(f"disk {d.label!r} refers to controller {d.controller_key}, which is not listed", where=where)
    return vm


def guest_facts_ref(path: str | Path, vm_name: str) -> GuestFactsRef:
    """Digest of a guest facts/report JSON and the readiness verdict found in it."""
    p = Path(path)
    data = read_json_file(p)
    if not isinstance(data, Mapping):
        raise ConfigError("guest facts must be a JSON object", where=str(p))
    readiness, note = None, ""
    candidates: list[Mapping[str, Any]] = [data]
    guests = data.get("guests")
    if isinstance(guests, list):  # a preflight report: pick this VM's entry
        mine = [g for g in guests if isinstance(g, Mapping) and g.get("guest") == vm_name]
        candidates = mine or (guests if len(guests) == 1 else [])
        if not candidates:
            note = f"report has no guest named {vm_name!r}"
    for c in candidates:
        if isinstance(c, Mapping) and "readiness" in c:
            value = c["readiness"]
            valid = {r.value for r in Readiness}
            if value not in valid:
                raise ConfigError(f"readiness {value!r} is not one of {sorted(valid)}", where=str(p))
            readiness = value
            break
    else:
        note = note or "no readiness verdict in the facts (preflight not run?)"
    return GuestFactsRef(path=str(p), sha256=sha256_file(p), readiness=readiness, note=note)


def locate_disks(vm: SourceVM, policy: TargetPolicy) -> list[DiskLocator]:
    out = []
    for d in vm.disks:
        loc = DiskLocator(label=d.label, source=d.datastore_path, volid=policy.volumes.get(d.label))
        if loc.volid is None:
            m = _DS_PATH.match(d.datastore_path or "")
            if m and m.group("ds") in policy.datastores:
                loc.import_from = str(Path(policy.datastores[m.group("ds")]) / m.group("rel"))
            elif (d.datastore_path or "").startswith("/"):
                loc.import_from = d.datastore_path
        out.append(loc)
    unknown = set(policy.volumes) - {d.label for d in vm.disks}
    if unknown:
        raise ConfigError(f"policy volumes name disk(s) the VM does not have: {', '.join(sorted(unknown))}", where="policy: volumes")
    return out


def build_handoff(vm: SourceVM, policy: TargetPolicy, *, origin: Mapping[str, Any],
                  guest_facts: GuestFactsRef | None = None) -> Handoff:
    return Handoff(vm=vm, disks=locate_disks(vm, policy), policy=policy, guest_facts=guest_facts,
                   origin=dict(origin), created=datetime.now(timezone.utc).isoformat(timespec="seconds"))


def write_exclusive(path: str | Path, text: str) -> None:
    """Create ``path`` with ``text``; refuse if it exists; never leave a partial file."""
    p = Path(path)
    if p.exists():
        raise ConfigError("already exists; refusing to overwrite", where=str(p))
    fd, tmp = tempfile.mkstemp(dir=str(p.parent) if str(p.parent) else ".", prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)  # atomic and fails if the target appeared meanwhile
        except FileExistsError:
            raise ConfigError("already exists; refusing to overwrite", where=str(p)) from None
    finally:
        os.unlink(tmp)


def write_handoff(h: Handoff, path: str | Path) -> None:
    try:
        write_exclusive(path, json.dumps(h.to_dict(), indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise ConfigError(f"cannot write: {e.strerror}", where=str(path)) from e


# --------------------------------------------------------------------------- loading


def load_handoff(path: str | Path) -> Handoff:
    return handoff_from_dict(read_json_file(path), str(path))


def handoff_from_dict(data: Any, where: str) -> Handoff:
    if not isinstance(data, Mapping):
        raise ConfigError("a hand-off document must be a JSON object", where=where)
    if data.get("schema") != HANDOFF_SCHEMA:
        raise ConfigError(f"schema is {data.get('schema')!r}, expected {HANDOFF_SCHEMA!r}", where=where)
    for key in ("source_vm", "disks", "policy"):
        if key not in data:
            raise ConfigError(f"missing {key!r}", where=where)
    vm = source_vm_from_dict(data["source_vm"], f"{where}: source_vm")
    policy = TargetPolicy.from_dict(data["policy"], where=f"{where}: policy")
    if not isinstance(data["disks"], list):
        raise ConfigError("disks must be a list", where=where)
    disks = []
    labels = {d.label for d in vm.disks}
    for i, d in enumerate(data["disks"]):
        at = f"{where}: disks[{i}]"
        if not isinstance(d, Mapping) or not isinstance(d.get("label"), str):
            raise ConfigError("each disk needs a label", where=at)
        if d["label"] not in labels:
            raise ConfigError(f"disk {d['label']!r} is not a disk of source_vm", where=at)
        for k in ("volid", "import_from"):
            if d.get(k) is not None and not isinstance(d[k], str):
                raise ConfigError(f"{k} must be a string", where=at)
        if d.get("import_from") and not d["import_from"].startswith("/"):
            raise ConfigError(f"import_from must be an absolute path, got {d['import_from']!r}", where=at)
        disks.append(DiskLocator(label=d["label"], source=str(d.get("source") or ""),
                                 volid=d.get("volid"), import_from=d.get("import_from")))
    gf = data.get("guest_facts")
    facts = None
    if gf is not None:
        if not isinstance(gf, Mapping) or not isinstance(gf.get("sha256"), str):
            raise ConfigError("guest_facts must be an object with sha256", where=where)
        facts = GuestFactsRef(path=str(gf.get("path", "")), sha256=gf["sha256"], readiness=gf.get("readiness"),
                              note=str(gf.get("note", "")))
    return Handoff(vm=vm, disks=disks, policy=policy, guest_facts=facts,
                   origin=dict(data.get("origin") or {}), created=str(data.get("created", "")))
