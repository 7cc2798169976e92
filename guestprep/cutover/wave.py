"""The wave file: what `cutover plan` wrote and a human reviewed, read back strictly.

YAML, schema ``guestprep.cutover-wave/1``. Its sha256 is the plan hash the journal keeps.
Every error names the file and the field (``wave.yaml: vms[1].target.vmid: ...``), exit 2.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from guestprep.errors import ConfigError

WAVE_SCHEMA = "guestprep.cutover-wave/1"
STEPS = ("gate", "coexist_detach", "shutdown", "mark_source", "locate_disks", "convert", "finalize", "start",
         "verify")
GATE_PASSES = ("ready", "warnings", "waived")


@dataclass
class NodeSpec:
    name: str
    address: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None
    known_hosts: str | None = None
    workdir: str = "/var/tmp/guestprep-cutover"
    python: str = "python3"
    storage_cfg: str | None = None   # another storage.cfg than /etc/pve/storage.cfg (tests, staging nodes)
    qemu_run_dir: str = "/var/run/qemu-server"   # where the node's VMs have their serial0 sockets

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.pop("name")
        return d


@dataclass
class VmPlan:
    name: str
    moref: str
    os: str
    gate: dict[str, Any]
    prepare_verified: bool
    node: str
    storage: str
    vmid: int
    strategy: str
    handoff: str                       # path, relative to the wave file
    handoff_sha256: str
    disks: list[dict[str, Any]]
    expected_addresses: list[str]
    expected_macs: list[str]
    steps: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "moref": self.moref, "os": self.os, "gate": self.gate,
                "prepare_verified": self.prepare_verified,
                "target": {"node": self.node, "storage": self.storage, "vmid": self.vmid, "strategy": self.strategy},
                "handoff": self.handoff, "handoff_sha256": self.handoff_sha256, "disks": self.disks,
                "expected_addresses": self.expected_addresses, "expected_macs": self.expected_macs,
                "steps": self.steps}


@dataclass
class Wave:
    path: Path
    plan_hash: str
    vsphere: dict[str, Any]
    proxmox: dict[str, Any]
    nodes: dict[str, NodeSpec]
    vms: list[VmPlan]
    options: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    inventory: str = ""               # the fleet file the plan read (the post-phase preflight reads it again)

    def post_preflight(self) -> dict[str, Any] | None:
        """``options.post_preflight`` (from the policy's ``cutover.options``), checked at load."""
        return post_preflight_spec(self.options, str(self.path))

    @property
    def state_dir(self) -> Path:
        """Journal, lock, reports: beside the wave file, named after it."""
        return self.path.parent / (self.path.name + ".state")

    def vm(self, name: str) -> VmPlan:
        for v in self.vms:
            if v.name == name:
                return v
        raise ConfigError(f"no VM {name!r} in this wave (has: {', '.join(v.name for v in self.vms)})",
                          where=str(self.path))

    def handoff_path(self, vm: VmPlan) -> Path:
        p = Path(vm.handoff)
        return p if p.is_absolute() else self.path.parent / p


def dump(doc: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(doc), sort_keys=False, default_flow_style=False, allow_unicode=True)


# --------------------------------------------------------------------------- reading


def _need(d: Mapping[str, Any], key: str, types: tuple, what: str, where: str) -> Any:
    if key not in d:
        raise ConfigError(f"missing {key!r} ({what})", where=where)
    v = d[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in types):
        raise ConfigError(f"{key} must be {what}, got {v!r}", where=where)
    return v


def _node(name: str, d: Any, where: str) -> NodeSpec:
    if not isinstance(d, Mapping):
        raise ConfigError("must be a mapping (address, port, user, key_file, ...)", where=where)
    unknown = set(d) - set(NodeSpec.__dataclass_fields__) - {"name"}
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(unknown))}", where=where)
    spec = NodeSpec(name=name, address=_need(d, "address", (str,), "a host name or address", where))
    for key in ("port",):
        if key in d:
            setattr(spec, key, _need(d, key, (int,), "an integer", where))
    for key in ("user", "key_file", "known_hosts", "workdir", "python", "storage_cfg", "qemu_run_dir"):
        if d.get(key) is not None:
            setattr(spec, key, _need(d, key, (str,), "a string", where))
    if not spec.workdir.startswith("/"):
        raise ConfigError(f"workdir must be an absolute path, got {spec.workdir!r}", where=where)
    return spec


def _vm(d: Any, where: str, nodes: Mapping[str, NodeSpec]) -> VmPlan:
    if not isinstance(d, Mapping):
        raise ConfigError("must be a mapping", where=where)
    target = _need(d, "target", (dict,), "a mapping (node, storage, vmid, strategy)", where)
    tw = f"{where}.target"
    node = _need(target, "node", (str,), "a node name", tw)
    if node not in nodes:
        raise ConfigError(f"node {node!r} is not under nodes: (has {', '.join(sorted(nodes)) or 'none'})", where=tw)
    vmid = _need(target, "vmid", (int,), "an integer 100..999999999", tw)
    if not 100 <= vmid <= 999999999:
        raise ConfigError(f"vmid must be 100..999999999, got {vmid}", where=tw)
    steps = _need(d, "steps", (list,), "a list of step names", where)
    bad = [s for s in steps if s not in STEPS]
    if bad:
        raise ConfigError(f"unknown step(s) {bad} (known: {', '.join(STEPS)})", where=f"{where}.steps")
    if steps != [s for s in STEPS if s in steps]:
        raise ConfigError(f"steps must keep the order {', '.join(STEPS)}", where=f"{where}.steps")
    gate = _need(d, "gate", (dict,), "a mapping (verdict, ...)", where)
    _need(gate, "verdict", (str,), "ready, warnings, waived, blocked or unknown", f"{where}.gate")
    disks = _need(d, "disks", (list,), "a list", where)
    for i, disk in enumerate(disks):
        if not isinstance(disk, Mapping) or not isinstance(disk.get("label"), str):
            raise ConfigError("each disk needs a label", where=f"{where}.disks[{i}]")
    return VmPlan(
        name=_need(d, "name", (str,), "the VM name", where), moref=_need(d, "moref", (str,), "a moref (vm-N)", where),
        os=_need(d, "os", (str,), "linux or windows", where), gate=dict(gate),
        prepare_verified=_need(d, "prepare_verified", (bool,), "true or false", where),
        node=node, storage=_need(target, "storage", (str,), "a storage id", tw), vmid=vmid,
        strategy=_need(target, "strategy", (str,), "auto, direct or sata-first", tw),
        handoff=_need(d, "handoff", (str,), "the hand-off file", where),
        handoff_sha256=_need(d, "handoff_sha256", (str,), "a sha256", where),
        disks=[dict(x) for x in disks],
        expected_addresses=[str(a) for a in d.get("expected_addresses") or []],
        expected_macs=[str(m).lower() for m in d.get("expected_macs") or []], steps=list(steps))


POST_PREFLIGHT_KEYS = ("known_hosts", "timeout", "fail_on", "waivers", "inventory")
FAIL_ON = ("blocker", "warning", "none")


def post_preflight_spec(options: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """``post_preflight: true`` or ``{known_hosts, timeout, fail_on: blocker|warning|none, waivers,
    inventory}``: at verify, a post-phase preflight of the guest over its inventory transport."""
    v = options.get("post_preflight")
    w = f"{where}: options.post_preflight"
    if v is None or v is False:
        return None
    if v is True:
        v = {}
    if not isinstance(v, Mapping):
        raise ConfigError(f"must be true, false or a mapping ({', '.join(POST_PREFLIGHT_KEYS)})", where=w)
    unknown = set(v) - set(POST_PREFLIGHT_KEYS)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}", where=w)
    fail_on = v.get("fail_on", "blocker")
    if fail_on not in FAIL_ON:
        raise ConfigError(f"fail_on must be one of {', '.join(FAIL_ON)}, got {fail_on!r}", where=w)
    timeout = v.get("timeout", 300)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}", where=w)
    for key in ("known_hosts", "waivers", "inventory"):
        if v.get(key) is not None and not isinstance(v[key], str):
            raise ConfigError(f"{key} must be a path, got {v[key]!r}", where=w)
    return {"fail_on": fail_on, "timeout": float(timeout), "known_hosts": v.get("known_hosts"),
            "waivers": v.get("waivers"), "inventory": v.get("inventory")}


def load(path: str | Path) -> Wave:
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ConfigError("no such wave file", where=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", where=str(p)) from None
    try:
        doc = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(f"not valid YAML: {getattr(exc, 'problem', exc)}",
                          where=f"{p}:{mark.line + 1}" if mark else str(p)) from None
    where = str(p)
    if not isinstance(doc, Mapping):
        raise ConfigError("must be a YAML mapping", where=where)
    if doc.get("schema") != WAVE_SCHEMA:
        raise ConfigError(f"schema must be {WAVE_SCHEMA!r}, got {doc.get('schema')!r}", where=f"{where}: schema")
    nodes_doc = _need(doc, "nodes", (dict,), "a mapping of node name -> SSH spec", where)
    nodes = {n: _node(n, spec, f"{where}: nodes.{n}") for n, spec in nodes_doc.items()}
    vms_doc = _need(doc, "vms", (list,), "a list of VMs", where)
    vms = [_vm(v, f"{where}: vms[{i}]", nodes) for i, v in enumerate(vms_doc)]
    names = [v.name for v in vms]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"VM(s) listed twice: {', '.join(dupes)}", where=f"{where}: vms")
    vmids = [v.vmid for v in vms]
    if len(set(vmids)) != len(vmids):
        raise ConfigError("two VMs share a vmid", where=f"{where}: vms")
    vs = _need(doc, "vsphere", (dict,), "a mapping (server, user, ...)", where)
    _need(vs, "server", (str,), "host[:port]", f"{where}: vsphere")
    _need(vs, "user", (str,), "a vSphere user", f"{where}: vsphere")
    px = _need(doc, "proxmox", (dict,), "a mapping (host, user, token_name, ...)", where)
    _need(px, "host", (str,), "the Proxmox API host", f"{where}: proxmox")
    options = doc.get("options") or {}
    if not isinstance(options, Mapping):
        raise ConfigError("must be a mapping", where=f"{where}: options")
    post_preflight_spec(options, where)
    return Wave(path=p.resolve(), plan_hash=hashlib.sha256(raw).hexdigest(), vsphere=dict(vs), proxmox=dict(px),
                nodes=nodes, vms=vms, options=dict(options), created=str(doc.get("created", "")),
                inventory=str(doc.get("inventory") or ""))
