"""The per-VM hand-off document (DESIGN.md "Contracts").

One JSON file per VM: the SourceVM, where each disk is found (a volume converted by
``hostside`` or a path Proxmox imports with ``import-from``), a digest of the guest facts
and their readiness verdict, and the target policy. ``finalize`` reads only this file, so
it can run on the Proxmox node and be reviewed before the cutover.

The one reader of that document: the controller (``finalize``) and guestprep-host (the
zipapp on the Proxmox node, ``hostside.handoff``) both parse and validate it here. Standard
library only (plus the bundled ``guestprep.models``/``errors``/``target_policy``/``vmx``), so
the zipapp ships this very file. Errors name the file and the field: ``h.json: disks[1].volid``.

Written exclusively (an existing file is never overwritten) and atomically (a temporary
file linked into place), so a crash never leaves half a document.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from guestprep.errors import ConfigError
from guestprep.models import HANDOFF_SCHEMA, Readiness, SourceVM, parse_datastore_path
from guestprep.target_policy import (PVE_SERIAL_MAX, VOLID_RE, TargetPolicy, carried_serial, check_root_path,
                                     is_system_path)
from guestprep.vmx import check_hardware

_VMFS_PATH = re.compile(r"/vmfs/volumes/(?P<ds>[^/]+)/(?P<rel>.+)")
VMX_FOLDER = "(vmx folder)"      # the implicit datastore of a .vmx: its own folder
# Proxmox 'import' volumes are flat files with safe names (PVE::Storage path_to_volume_id:
# $importdir/(SAFE_CHAR_CLASS+ IMPORT_EXT)); anything else cannot be named by a volume id.
IMPORT_NAME = re.compile(r"[a-zA-Z0-9\-.+=_]+\.(?:qcow2|raw|vmdk)")


@dataclass
class DiskLocator:
    label: str                    # source disk label ("scsi0:0", "Hard disk 1")
    source: str                   # datastore path or file path as the source knows it
    volid: str | None = None      # an existing Proxmox volume (made by hostside)
    import_from: str | None = None  # absolute path Proxmox imports from (root@pam only)
    datastore: str | None = None  # the mapped datastore import_from was confined to
    import_volid: str | None = None  # the same file as a volume of an 'import' storage (token-safe)
    serial: str | None = None     # the serial the Proxmox drive gets (the guest's, cut to PVE's 20 bytes)

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "source": self.source, "volid": self.volid, "import_from": self.import_from,
                "datastore": self.datastore, "import_volid": self.import_volid, "serial": self.serial}


@dataclass
class BootEvidence:
    """Whether the guest's facts PROVE a direct boot on VirtIO SCSI (see finalize/evidence.py)."""

    os: str | None
    check: str | None
    proven: bool
    reason: str = ""
    outcomes: list[dict[str, str]] = field(default_factory=list)
    agent_installed: bool | None = None
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"os": self.os, "check": self.check, "proven": self.proven, "reason": self.reason,
                "outcomes": self.outcomes, "agent_installed": self.agent_installed, "source": self.source}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> "BootEvidence":
        if not isinstance(d, Mapping):
            raise ConfigError("boot_evidence must be an object", where=where)
        for k, types in (("os", (str, type(None))), ("check", (str, type(None))), ("proven", (bool,)),
                         ("reason", (str,)), ("agent_installed", (bool, type(None))), ("source", (str,))):
            if not isinstance(d.get(k, "" if k in ("reason", "source") else None), types):
                raise ConfigError(f"boot_evidence.{k} has the wrong type: {d.get(k)!r}", where=where)
        outs = d.get("outcomes") or []
        if not isinstance(outs, list) or not all(isinstance(o, Mapping) for o in outs):
            raise ConfigError("boot_evidence.outcomes must be a list of objects", where=where)
        return cls(os=d.get("os"), check=d.get("check"), proven=d["proven"], reason=d.get("reason", ""),
                   outcomes=[{str(k): str(v) for k, v in o.items()} for o in outs],
                   agent_installed=d.get("agent_installed"), source=d.get("source", ""))


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
    boot_evidence: BootEvidence | None = None
    path: str = ""      # set by load_handoff: the file read (absolute) ...
    sha256: str = ""    # ... and the sha256 of its bytes: the document's identity

    def identity(self) -> dict[str, Any]:
        """What a converted volume's manifest records of the hand-off that named it."""
        return {"path": self.path, "sha256": self.sha256, "schema": HANDOFF_SCHEMA,
                "vm_name": self.vm.name, "vm_uuid": self.vm.uuid_bios,
                "vm_instance_uuid": self.vm.uuid_instance, "moref": self.vm.moref,
                "created": self.created}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": HANDOFF_SCHEMA,
            "created": self.created,
            "origin": self.origin,
            "source_vm": self.vm.to_dict(),
            "disks": [d.to_dict() for d in self.disks],
            "guest_facts": self.guest_facts.to_dict() if self.guest_facts else None,
            "boot_evidence": self.boot_evidence.to_dict() if self.boot_evidence else None,
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


_SIMPLE = {"str": str, "int": int, "bool": bool, "None": type(None)}


def _check_record_types(obj: Any, where: str) -> None:
    """Every scalar field holds its declared type (str / int / bool / None): a JSON document
    may carry anything, and a list where a label belongs would crash a later stage."""
    import dataclasses

    for f in dataclasses.fields(obj):
        ann = str(f.type).replace(" ", "")
        if ann.startswith(("list", "dict")):
            value = getattr(obj, f.name)
            if not isinstance(value, list if ann.startswith("list") else dict):
                raise ConfigError(f"{f.name} must be a {'list' if ann.startswith('list') else 'JSON object'}", where=where)
            if ann in ("list[str]",) and not all(isinstance(x, str) for x in value):
                raise ConfigError(f"{f.name} must be a list of strings", where=where)
            continue
        allowed = tuple(_SIMPLE[t] for t in ann.split("|") if t in _SIMPLE)
        if not allowed:
            continue
        value = getattr(obj, f.name)
        ok = isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed)
        if not ok:
            raise ConfigError(f"{f.name} must be {ann.replace('|', ' or ')}, got {value!r}"[:200], where=where)


def source_vm_from_dict(data: Any, where: str) -> SourceVM:
    if not isinstance(data, Mapping):
        raise ConfigError("a SourceVM must be a JSON object", where=where)
    if not isinstance(data.get("name"), str) or not data["name"]:
        raise ConfigError("SourceVM has no name", where=where)
    try:
        vm = SourceVM.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise ConfigError(f"not a SourceVM: {e}", where=where) from None
    for kind, items in (("controllers", vm.controllers), ("disks", vm.disks), ("nics", vm.nics)):
        for i, item in enumerate(items):
            _check_record_types(item, f"{where}: {kind}[{i}]")
    if not all(isinstance(c, Mapping) for c in vm.cdroms):
        raise ConfigError("cdroms must be a list of objects", where=where)
    _check_record_types(vm, where)
    if any(ord(c) < 32 or c == "\x7f" for c in vm.name):
        raise ConfigError(f"name {vm.name!r} contains control characters", where=where)
    check_hardware(vm.num_cpu, vm.cores_per_socket, vm.memory_mb, where)
    if vm.firmware not in ("bios", "efi"):
        raise ConfigError(f"firmware must be bios or efi, got {vm.firmware!r}", where=where)
    seen: set[str] = set()
    for i, d in enumerate(vm.disks):
        if d.label in seen:
            raise ConfigError(f"disk label {d.label!r} appears twice", where=f"{where}.disks[{i}].label")
        seen.add(d.label)
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


def datastore_roots(vm: SourceVM, policy: TargetPolicy) -> dict[str, str]:
    """Mapped datastores (name or VMFS uuid -> path) plus, for a .vmx, its own folder."""
    roots = dict(policy.datastores)
    vmx_dir = vm.extra.get("vmx_dir") if isinstance(vm.extra, Mapping) else None
    if vm.source == "vmx" and isinstance(vmx_dir, str) and vmx_dir.startswith("/"):
        roots.setdefault(VMX_FOLDER, os.path.normpath(vmx_dir))
    return roots


def _inside(path: str, root: str) -> bool:
    return path != root and os.path.commonpath([path, root]) == root


def confine_disk_path(raw: str, roots: Mapping[str, str], where: str) -> tuple[str, str] | None:
    """A disk path as the source names it -> (datastore, absolute path), confined to that datastore.

    ``[ds] rel`` and ``/vmfs/volumes/<name-or-uuid>/rel`` map through the datastore table; an
    absolute path must already lie in a mapped datastore. The path is checked twice: lexically
    (``..`` removed) and resolved (symlinks followed), and it must be a regular file when it
    exists here. ``None``: the datastore is not mapped (no import path; finalize says so).
    """
    if not raw or any(ord(c) < 32 for c in raw):
        raise ConfigError(f"disk path {raw!r} is empty or contains control characters", where=where)
    m = _VMFS_PATH.fullmatch(raw)
    parts = parse_datastore_path(raw) or ((m.group("ds"), m.group("rel")) if m else None)
    if parts:
        ds, rel = parts
        if ds not in roots:
            return None
        if rel.startswith("/"):
            raise ConfigError(f"disk path {raw!r}: the part after the datastore must be relative", where=where)
        candidate, named = os.path.join(roots[ds], rel), [ds]
    elif raw.startswith("/"):
        candidate, named = raw, list(roots)
    else:
        raise ConfigError(f"disk path {raw!r} is neither '[datastore] path', /vmfs/volumes/... nor absolute",
                          where=where)
    lexical = os.path.normpath(candidate)
    real = os.path.realpath(candidate)
    for ds in named:
        root = roots[ds]
        if _inside(lexical, root) and _inside(real, os.path.realpath(root)):
            break
    else:
        mapped = ", ".join(f"{k}={v}" for k, v in roots.items()) or "none"
        raise ConfigError(f"disk path {raw!r} resolves to {real}, outside every mapped datastore ({mapped}): refused",
                          where=where)
    if is_system_path(lexical) or is_system_path(real):
        raise ConfigError(f"disk path {raw!r} resolves to the system path {real}: refused", where=where)
    try:
        st = os.stat(real)
    except OSError:
        st = None                  # not mounted here: Proxmox reports a missing file at create
    if st is not None and not stat.S_ISREG(st.st_mode):
        kind = "a device node" if stat.S_ISBLK(st.st_mode) or stat.S_ISCHR(st.st_mode) else "not a regular file"
        raise ConfigError(f"disk path {raw!r} ({real}) is {kind}: refused", where=where)
    return ds, lexical


def import_volid_for(path: str, datastore: str, policy: TargetPolicy) -> str | None:
    """``<root>/import/<name>.vmdk`` of a datastore mapped to an 'import' storage -> ``sid:import/<name>``."""
    sid = policy.import_storages.get(datastore)
    root = policy.datastores.get(datastore)
    if not sid or not root:
        return None
    parent, name = os.path.split(path)
    if parent != os.path.join(root, "import") or not IMPORT_NAME.fullmatch(name):
        return None
    return f"{sid}:import/{name}"


def locate_disks(vm: SourceVM, policy: TargetPolicy) -> list[DiskLocator]:
    unknown = set(policy.volumes) - {d.label for d in vm.disks}
    if unknown:
        raise ConfigError(f"policy volumes name disk(s) the VM does not have: {', '.join(sorted(unknown))}", where="policy: volumes")
    roots = datastore_roots(vm, policy)
    out = []
    for d in vm.disks:
        loc = DiskLocator(label=d.label, source=d.datastore_path, volid=policy.volumes.get(d.label),
                          serial=carried_serial(d.serial) or None if d.serial else None)
        if loc.volid is None and not d.rdm_mode:
            found = confine_disk_path(d.datastore_path or "", roots, f"disk {d.label}")
            if found:
                loc.datastore, loc.import_from = found
                loc.import_volid = import_volid_for(loc.import_from, loc.datastore, policy)
        out.append(loc)
    return out


def build_handoff(vm: SourceVM, policy: TargetPolicy, *, origin: Mapping[str, Any],
                  guest_facts: GuestFactsRef | None = None, boot_evidence: BootEvidence | None = None) -> Handoff:
    return Handoff(vm=vm, disks=locate_disks(vm, policy), policy=policy, guest_facts=guest_facts,
                   origin=dict(origin), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                   boot_evidence=boot_evidence)


def write_exclusive(path: str | Path, text: str, *, mode: int = 0o600) -> None:
    """Create ``path`` holding ``text``, or refuse: never overwrites, never leaves half a file.

    Written to ``<path>.partial`` (O_EXCL), flushed, then linked to its name (atomic, fails
    if the name appeared meanwhile); on a filesystem without hard links (some CIFS mounts), a
    checked rename. ConfigError when the file exists; other OSErrors go to the caller.
    Used for hand-off documents, finalize results and guestprep-host's manifests."""
    p = str(path)
    if os.path.lexists(p):
        raise ConfigError("already exists; refusing to overwrite", where=p)
    tmp = p + ".partial"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"a partial file from an interrupted write is in the way ({tmp}): check it, remove it",
                          where=p) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, p)
        except FileExistsError:
            raise ConfigError("already exists; refusing to overwrite", where=p) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK, errno.ENOSYS,
                                 errno.EACCES):
                raise
            if os.path.lexists(p):
                raise ConfigError("already exists; refusing to overwrite", where=p) from None
            os.rename(tmp, p)
    except BaseException:
        os.unlink(tmp)
        raise
    if os.path.lexists(tmp):
        os.unlink(tmp)


def write_handoff(h: Handoff, path: str | Path) -> None:
    try:
        write_exclusive(path, json.dumps(h.to_dict(), indent=2, sort_keys=True) + "\n")
    except OSError as e:
        raise ConfigError(f"cannot write: {e.strerror}", where=str(path)) from e


# --------------------------------------------------------------------------- loading


def load_handoff(path: str | Path) -> Handoff:
    """The document at ``path``, validated, with its absolute path and sha256 (its identity)."""
    apath = os.path.abspath(path)
    try:
        with open(apath, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError("no such hand-off document", where=str(path)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read the hand-off document: {exc.strerror}", where=str(path)) from None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"not a JSON document: {exc}", where=str(path)) from None
    h = handoff_from_dict(data, str(path))
    h.path, h.sha256 = apath, hashlib.sha256(raw).hexdigest()
    return h


_WHAT = {"source_vm": "an object (the SourceVM)", "disks": "a list", "policy": "an object (the target policy)"}


def handoff_from_dict(data: Any, where: str) -> Handoff:
    if not isinstance(data, Mapping):
        raise ConfigError("a hand-off document must be a JSON object", where=where)
    if data.get("schema") != HANDOFF_SCHEMA:
        raise ConfigError(f"unknown document schema {data.get('schema')!r}: this reader takes {HANDOFF_SCHEMA!r} "
                          "(use a guestprep and guestprep-host of the same release)", where=f"{where}: schema")
    for key, what in _WHAT.items():
        if data.get(key) is None:
            raise ConfigError(f"missing (expected {what})", where=f"{where}: {key}")
        if not isinstance(data[key], list if key == "disks" else Mapping):
            raise ConfigError(f"must be {what}", where=f"{where}: {key}")
    vm = source_vm_from_dict(data["source_vm"], f"{where}: source_vm")
    policy = TargetPolicy.from_dict(data["policy"], where=f"{where}: policy")
    disks = _disk_locators(data["disks"], vm, policy, where)
    gf = data.get("guest_facts")
    facts = None
    if gf is not None:
        if not isinstance(gf, Mapping) or not isinstance(gf.get("sha256"), str):
            raise ConfigError("guest_facts must be an object with sha256", where=where)
        if gf.get("readiness") is not None and gf.get("readiness") not in {r.value for r in Readiness}:
            raise ConfigError(f"guest_facts.readiness {gf.get('readiness')!r} is not a readiness verdict", where=where)
        facts = GuestFactsRef(path=str(gf.get("path", "")), sha256=gf["sha256"], readiness=gf.get("readiness"),
                              note=str(gf.get("note", "")))
    evidence = data.get("boot_evidence")
    origin = data.get("origin") or {}
    if not isinstance(origin, Mapping):
        raise ConfigError("origin must be an object", where=where)
    return Handoff(vm=vm, disks=disks, policy=policy, guest_facts=facts,
                   origin=dict(origin), created=str(data.get("created") or ""),
                   boot_evidence=BootEvidence.from_dict(evidence, f"{where}: boot_evidence") if evidence is not None else None)


def check_import_from(h: Handoff, index: int) -> str:
    """The import path of disk ``index``, still inside its declared datastore, or a ConfigError.

    A document is reviewed, not trusted. Asked by whoever reads the path (finalize imports it,
    guestprep-host converts it when --disk names it), not at parse time: the node may map the
    datastores elsewhere for the disks it converts from their datastore paths."""
    loc = h.disks[index]
    path = str(loc.import_from)
    root = datastore_roots(h.vm, h.policy).get(loc.datastore or "")
    if root is None or not _inside(path, root):
        raise ConfigError(f"import_from {path!r} is not inside its datastore {loc.datastore!r} "
                          f"({root or 'not mapped'})", where=f"{h.path or 'hand-off'}: disks[{index}].import_from")
    return path


_DISK_FIELDS = {"source": "a path or datastore path", "volid": "a Proxmox volume id", "import_from": "an absolute path",
                "datastore": "a datastore name", "import_volid": "a Proxmox volume id", "serial": "a disk serial"}
# what a Proxmox drive serial may hold without url-encoding (PVE API: "url-encoded, up to 20 bytes long")
SERIAL_RE = re.compile(rf"[0-9A-Za-z._-]{{1,{PVE_SERIAL_MAX}}}")


def _disk_locators(items: list, vm: SourceVM, policy: TargetPolicy, where: str) -> list[DiskLocator]:
    labels = [d.label for d in vm.disks]
    out: list[DiskLocator] = []
    for i, d in enumerate(items):
        at = f"{where}: disks[{i}]"
        if not isinstance(d, Mapping):
            raise ConfigError("must be an object", where=at)
        if d.get("label") is None:
            raise ConfigError("missing (expected a disk label)", where=f"{at}.label")
        for k, what in (("label", "a disk label"), *_DISK_FIELDS.items()):
            if d.get(k) is not None and not isinstance(d[k], str):
                raise ConfigError(f"must be {what}, got {type(d[k]).__name__} {d[k]!r}"[:200], where=f"{at}.{k}")
        label = d["label"]
        if label not in labels:
            raise ConfigError(f"disk {label!r} is not a disk of source_vm (has: {', '.join(labels) or 'none'})",
                              where=f"{at}.label")
        if any(o.label == label for o in out):
            raise ConfigError(f"disk {label!r} is listed twice", where=f"{at}.label")
        for k in ("volid", "import_volid"):
            if d.get(k) is not None and not VOLID_RE.fullmatch(d[k]):
                raise ConfigError(f"{d[k]!r} is not a volume id (storage:name, no ',', '=' or whitespace)",
                                  where=f"{at}.{k}")
        if d.get("import_from") is not None:
            check_root_path(d["import_from"], "import_from", f"{at}.import_from")
        if d.get("serial") is not None and not SERIAL_RE.fullmatch(d["serial"]):
            raise ConfigError(f"{d['serial']!r}"[:80] + f" is not a drive serial (1-{PVE_SERIAL_MAX} letters, digits, "
                              "'.', '_' or '-')", where=f"{at}.serial")
        out.append(DiskLocator(label=label, source=str(d.get("source") or ""),
                               volid=d.get("volid"), import_from=d.get("import_from"),
                               datastore=d.get("datastore"), import_volid=d.get("import_volid"),
                               serial=d.get("serial")))
    return out
