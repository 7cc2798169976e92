"""The target policy record: where and how a VM lands on Proxmox (node, storage, format,
network map, strategy...), and the Proxmox naming rules it needs.

Standard library only: the hand-off record embeds this policy, and both the controller and
guestprep-host (the zipapp on the Proxmox node) read it with this one validator. Reading it
from YAML (``--policy``) is ``guestprep.finalize.policy.load_policy``'s job.

Every bad key is a ConfigError naming where (``FILE: policy.vmid``) and what.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

from guestprep.errors import ConfigError

# CPU models Proxmox VE 8 accepts as cputype (qemu-server's cpu model table).
KNOWN_CPU_TYPES = frozenset("""
486 athlon Broadwell Broadwell-IBRS Broadwell-noTSX Broadwell-noTSX-IBRS Cascadelake-Server
Cascadelake-Server-noTSX Cascadelake-Server-v2 Cascadelake-Server-v4 Cascadelake-Server-v5
Conroe Cooperlake Cooperlake-v2 core2duo coreduo EPYC EPYC-IBPB EPYC-Milan EPYC-Milan-v2
EPYC-Rome EPYC-Rome-v2 EPYC-Rome-v3 EPYC-Rome-v4 EPYC-Genoa EPYC-v3 EPYC-v4 GraniteRapids
Haswell Haswell-IBRS Haswell-noTSX Haswell-noTSX-IBRS host Icelake-Client Icelake-Client-noTSX
Icelake-Server Icelake-Server-noTSX Icelake-Server-v3 Icelake-Server-v4 Icelake-Server-v5
Icelake-Server-v6 IvyBridge IvyBridge-IBRS KnightsMill kvm32 kvm64 max Nehalem Nehalem-IBRS
Opteron_G1 Opteron_G2 Opteron_G3 Opteron_G4 Opteron_G5 Penryn pentium pentium2 pentium3 phenom
qemu32 qemu64 SandyBridge SandyBridge-IBRS SapphireRapids SapphireRapids-v2 Skylake-Client
Skylake-Client-IBRS Skylake-Client-noTSX-IBRS Skylake-Client-v4 Skylake-Server
Skylake-Server-IBRS Skylake-Server-noTSX-IBRS Skylake-Server-v4 Skylake-Server-v5 Westmere
Westmere-IBRS x86-64-v2 x86-64-v2-AES x86-64-v3 x86-64-v4
""".split())
# "auto": decided at finalize from the hand-off's boot evidence (guestprep.finalize.strategy);
# "direct" / "sata-first" given explicitly are honoured (with a warning against the evidence).
STRATEGIES = ("auto", "direct", "sata-first")
CACHES = ("none", "writeback")
# The two target disk formats, here once: the policy, the hand-off and guestprep-host read them.
DISK_FORMATS = ("raw", "qcow2")
# Proxmox storage types that hold raw block volumes only: qcow2 there is refused (and qcow2
# on ZFS would be copy-on-write twice, seed guide).
BLOCK_STORAGE_TYPES = ("zfspool", "zfs", "lvm", "lvmthin", "rbd", "iscsi", "iscsidirect")
STORAGE_TYPES = BLOCK_STORAGE_TYPES + ("dir", "nfs", "cifs", "glusterfs", "cephfs", "btrfs")
# a volume id as hostside writes it: no ',' '=' or whitespace, which would inject drive options
VOLID_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]:[A-Za-z0-9_][A-Za-z0-9_.+/\-]*", re.I)
STORAGE_ID_RE = re.compile(r"[a-z][a-z0-9\-_.]*[a-z0-9]", re.I)
# Directories a datastore can never be mapped onto (device nodes, host secrets, the OS).
SYSTEM_DIRS = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/root", "/run", "/sbin",
               "/sys", "/usr", "/var/lib/pve-cluster", "/var/log", "/var/run")


def is_system_path(path: str) -> bool:
    """True for ``/``, a system directory or anything below one (``path`` normalised, absolute)."""
    if path == "/":
        return True
    return any(path == d or path.startswith(d + "/") for d in SYSTEM_DIRS)


def check_root_path(path: str, what: str, where: str) -> str:
    """An absolute, normalised directory outside the system directories, or a ConfigError."""
    if not path.startswith("/") or os.path.normpath(path) != path.rstrip("/") or "\n" in path or "," in path:
        raise ConfigError(f"{what} {path!r} must be an absolute, normalised path (no '..', ',' or '//')", where=where)
    if is_system_path(path.rstrip("/") or "/"):
        raise ConfigError(f"{what} {path!r} is a system directory: disks are never imported from there", where=where)
    return path.rstrip("/")
DEFAULT_CPU = "x86-64-v2-AES"  # satisfies x86-64-v2: EL9 guests panic on kvm64
WRITEBACK_WARNING = (
    "cache=writeback keeps acknowledged writes in host RAM: only safe with a battery/flash-"
    "backed controller cache or a UPS (seed guide); otherwise a power loss corrupts the guest"
)


@dataclass(frozen=True)
class NetTarget:
    bridge: str
    tag: int | None = None


@dataclass
class TargetPolicy:
    node: str | None = None
    storage: str | None = None
    format: str | None = None
    storage_type: str | None = None  # optional: lets the hand-off refuse qcow2 on a block storage
    vmid: int | None = None
    name: str | None = None
    strategy: str = "auto"
    cpu: str = DEFAULT_CPU
    cache: str = "none"
    balloon_mb: int | None = None
    network_map: dict[str, NetTarget] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)      # disk label -> volid made by hostside
    datastores: dict[str, str] = field(default_factory=dict)   # datastore name (or VMFS uuid) -> mounted path
    import_storages: dict[str, str] = field(default_factory=dict)  # datastore name -> Proxmox storage (content import)
    expect_addresses: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    start: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["network_map"] = {k: asdict(v) for k, v in self.network_map.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, where: str = "policy") -> "TargetPolicy":
        d = dict(d or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known - {"network_map_file"})
        if unknown:
            raise ConfigError(f"unknown key(s): {', '.join(unknown)} (known: {', '.join(sorted(known))})", where=where)

        def at(key: str) -> str:
            # "h.json: policy" -> "h.json: policy.vmid"; a policy file "p.yaml" -> "p.yaml: vmid"
            return f"{where}.{key}" if where.endswith("policy") else f"{where}: {key}"

        def want(key: str, types: tuple, what: str) -> Any:
            v = d.get(key)
            if v is not None and (not isinstance(v, types) or isinstance(v, bool) and bool not in types):
                raise ConfigError(f"must be {what}, got {v!r}", where=at(key))
            return v

        p = cls()
        p.node = want("node", (str,), "a node name")
        p.storage = want("storage", (str,), "a storage id")
        p.name = want("name", (str,), "a string")
        p.format = want("format", (str,), " or ".join(DISK_FORMATS))
        if p.format is not None and p.format not in DISK_FORMATS:
            raise ConfigError(f"must be {' or '.join(DISK_FORMATS)}, got {p.format!r}", where=at("format"))
        if p.storage is not None and not STORAGE_ID_RE.fullmatch(p.storage):
            raise ConfigError(f"storage {p.storage!r} is not a Proxmox storage id", where=where)
        p.storage_type = want("storage_type", (str,), f"one of {STORAGE_TYPES}")
        if p.storage_type is not None and p.storage_type not in STORAGE_TYPES:
            raise ConfigError(f"storage_type must be one of {', '.join(STORAGE_TYPES)}, got {p.storage_type!r}",
                              where=where)
        if p.format == "qcow2" and (p.storage_type in BLOCK_STORAGE_TYPES or (
                p.storage_type is None and p.storage and "zfs" in p.storage.lower())):
            raise ConfigError(f"format qcow2 on storage {p.storage!r} ({p.storage_type or 'ZFS by its name'}): a block "
                              "storage holds raw volumes only, and qcow2 on ZFS is copy-on-write twice; use format raw "
                              "(or set storage_type if this is really a file storage)", where=where)
        p.vmid = want("vmid", (int,), "an integer 100..999999999")
        if p.vmid is not None and not 100 <= p.vmid <= 999999999:
            raise ConfigError(f"must be 100..999999999, got {p.vmid}", where=at("vmid"))
        p.strategy = want("strategy", (str,), f"one of {STRATEGIES}") or "auto"
        if p.strategy not in STRATEGIES:
            raise ConfigError(f"strategy must be one of {', '.join(STRATEGIES)}, got {p.strategy!r}", where=where)
        p.cpu = want("cpu", (str,), "a CPU model") or DEFAULT_CPU
        if p.cpu not in KNOWN_CPU_TYPES:
            raise ConfigError(f"cpu {p.cpu!r} is not a Proxmox CPU model (e.g. {DEFAULT_CPU}, host)", where=where)
        if p.cpu in ("kvm64", "qemu64", "kvm32", "qemu32"):
            raise ConfigError(f"cpu {p.cpu!r} lacks x86-64-v2: EL9 guests panic on it; use {DEFAULT_CPU} or host", where=where)
        p.cache = want("cache", (str,), f"one of {CACHES}") or "none"
        if p.cache not in CACHES:
            raise ConfigError(f"cache must be one of {', '.join(CACHES)}, got {p.cache!r}", where=where)
        p.balloon_mb = want("balloon_mb", (int,), "an integer (MiB)")
        if p.balloon_mb is not None and p.balloon_mb < 0:
            raise ConfigError("balloon_mb must be >= 0", where=where)
        start = d.get("start", True)
        if not isinstance(start, bool):
            raise ConfigError(f"start must be true or false, got {start!r}", where=where)
        p.start = start
        p.network_map = parse_network_map(d.get("network_map") or {}, f"{where}: network_map")
        for key in ("volumes", "datastores", "import_storages"):
            m = d.get(key) or {}
            if not isinstance(m, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in m.items()):
                raise ConfigError(f"{key} must map names to strings", where=where)
            setattr(p, key, dict(m))
        for label, volid in p.volumes.items():
            if not VOLID_RE.fullmatch(volid):
                raise ConfigError(f"volumes: {label!r}: {volid!r} is not a volume id (storage:name, no ',', '=' "
                                  "or whitespace)", where=where)
        p.datastores = {ds: check_root_path(path, f"datastores: {ds!r}:", where) for ds, path in p.datastores.items()}
        for ds, sid in p.import_storages.items():
            if ds not in p.datastores:
                raise ConfigError(f"import_storages: {ds!r} is not a mapped datastore", where=where)
            if not STORAGE_ID_RE.fullmatch(sid):
                raise ConfigError(f"import_storages: {ds!r}: {sid!r} is not a storage id", where=where)
        for key in ("expect_addresses", "tags"):
            v = d.get(key) or []
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ConfigError(f"{key} must be a list of strings", where=where)
            setattr(p, key, list(v))
        return p


def parse_network_map(m: Any, where: str) -> dict[str, NetTarget]:
    """portgroup -> {bridge, tag} (or the shorthand 'portgroup: vmbr0')."""
    if not isinstance(m, Mapping):
        raise ConfigError("must map portgroup names to {bridge, tag}", where=where)
    out: dict[str, NetTarget] = {}
    for pg, target in m.items():
        if isinstance(target, str):
            target = {"bridge": target}
        if not isinstance(target, Mapping) or not isinstance(target.get("bridge"), str):
            raise ConfigError(f"portgroup {pg!r} needs a bridge", where=where)
        extra = set(target) - {"bridge", "tag"}
        if extra:
            raise ConfigError(f"portgroup {pg!r}: unknown key(s) {sorted(extra)}", where=where)
        tag = target.get("tag")
        if tag is not None and (isinstance(tag, bool) or not isinstance(tag, int) or not 1 <= tag <= 4094):
            raise ConfigError(f"portgroup {pg!r}: tag must be a VLAN id 1..4094, got {tag!r}", where=where)
        if not re.fullmatch(r"[-_.\w]{1,15}", target["bridge"]):
            raise ConfigError(f"portgroup {pg!r}: {target['bridge']!r} is not a bridge name", where=where)
        out[str(pg)] = NetTarget(target["bridge"], tag)
    return out


# --------------------------------------------------------------------------- Proxmox names

_DNS_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
PVE_NAME_RE = re.compile(rf"(?:{_DNS_LABEL}\.)*{_DNS_LABEL}")


def valid_proxmox_name(name: str) -> bool:
    """Proxmox ``name`` has format dns-name: dot-separated labels of letters, digits, hyphens."""
    return bool(PVE_NAME_RE.fullmatch(name or "")) and all(len(p) <= 63 for p in name.split(".")) and len(name) <= 253


def proxmox_name(name: str) -> str:
    """Any display name -> the closest valid Proxmox (DNS) name; "" when nothing usable is left."""
    s = re.sub(r"[^A-Za-z0-9.\-]+", "-", (name or "").strip())
    labels = [re.sub(r"-{2,}", "-", lab).strip("-")[:63].strip("-") for lab in s.split(".")]
    return ".".join(lab for lab in labels if lab)[:253].strip(".-")


# Proxmox drive property "serial": "url-encoded, up to 20 bytes long" (PVE API schema, the scsi[n]/sata[n]
# format key "serial", maxLength 60 once url-encoded)
PVE_SERIAL_MAX = 20
_SERIAL_CHARS = re.compile(r"[^0-9A-Za-z._-]")


def carried_serial(serial: str) -> str:
    """The serial finalize gives the Proxmox drive: the guest's serial cut to PVE's 20 bytes, only
    characters that need no url-encoding (VMware serials are hex digits)."""
    return _SERIAL_CHARS.sub("", serial or "")[:PVE_SERIAL_MAX]
