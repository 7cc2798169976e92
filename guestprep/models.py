"""Typed records shared by every stage.

Data flows forward through these records: inventory -> facts -> checks -> report,
and facts -> operations (plan/apply/verify). A later stage never reaches into an
earlier stage's internals; it only reads these records.

Every record converts to and from plain JSON-able dicts (``to_dict``/``from_dict``)
so hand-off documents and reports are stable, reviewable files.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

REPORT_SCHEMA = "guestprep.report/1"
HANDOFF_SCHEMA = "guestprep.handoff/1"


class Severity(str, enum.Enum):
    BLOCKER = "blocker"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "blocker": 2}[self.value]

    @property
    def is_notice(self) -> bool:
        """An info finding informs; views that count problems (summary, JUnit failures) skip it."""
        return self is Severity.INFO


class Status(str, enum.Enum):
    PASS = "pass"
    FAIL = "fail"
    ERROR = "error"
    SKIPPED = "skipped"
    WAIVED = "waived"
    UNREACHABLE = "unreachable"
    # The check ran but the facts cannot decide it (no installed kernel found, an image it cannot
    # list): neither a pass nor a failure. Not open (not a blocker, no exit 1), but the guest is
    # not ready either: readiness "unknown", and prepare says "cannot tell" rather than "nothing to do".
    UNKNOWN = "unknown"
    # A guest that was never checked (a run interrupted before it started or finished).
    NOT_CHECKED = "not_checked"

    @property
    def undecided(self) -> bool:
        """Nobody knows yet: the check could not decide, or the guest was not checked."""
        return self in (Status.UNKNOWN, Status.NOT_CHECKED)

    @property
    def is_open(self) -> bool:
        """The one answer to "is this finding open": the check failed or could not be judged
        (error, unreachable), and nobody waived or skipped it. Readiness, the exit code (with the
        severity threshold), every report format and guestprep-host's audit ask this."""
        return self in (Status.FAIL, Status.ERROR, Status.UNREACHABLE)


class Readiness(str, enum.Enum):
    """Per-guest verdict derived from its findings."""

    READY = "ready"              # no failing blocker or warning
    READY_WITH_WARNINGS = "warnings"
    BLOCKED = "blocked"          # at least one failing blocker
    UNKNOWN = "unknown"          # unreachable or collector error


class Transport(str, enum.Enum):
    LOCAL = "local"
    SSH = "ssh"
    WINRM = "winrm"
    PSRP = "psrp"


class OSFamily(str, enum.Enum):
    LINUX = "linux"
    WINDOWS = "windows"
    AUTO = "auto"


# --------------------------------------------------------------------------- inventory


@dataclass(frozen=True)
class Credentials:
    """References to secrets, never the secrets themselves.

    ``password_env`` names an environment variable; the value is read only when a
    connector opens a session (see ``guestprep.secrets``) and is never stored in a
    record, a log or a report.
    """

    user: str | None = None
    password_env: str | None = None
    key_file: str | None = None
    key_passphrase_env: str | None = None
    use_agent: bool = True
    sudo: bool = False
    sudo_password_env: str | None = None


@dataclass(frozen=True)
class Guest:
    name: str
    address: str
    transport: Transport = Transport.SSH
    os: OSFamily = OSFamily.AUTO
    port: int | None = None
    credentials: Credentials = field(default_factory=Credentials)
    groups: tuple[str, ...] = ()
    vars: Mapping[str, Any] = field(default_factory=dict)
    origin: str = ""          # the inventory file that defines the guest, or how it was given ("--local")
    line: int | None = None   # the guest's line in that file (None: not from a file)

    @property
    def source(self) -> str:
        """Where the guest was defined, as messages and reports show it: "fleet.yaml:12"."""
        return f"{self.origin}:{self.line}" if self.line is not None else self.origin

    @property
    def inventory_dir(self) -> Path:
        """Where the guest's relative file references (vm_facts, image_audit) are read from: the
        inventory file's directory, or the working directory for a guest not from a file."""
        return Path(self.origin).parent if self.line is not None else Path(".")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["origin"], d["line"]
        d["source"] = self.source
        d["transport"] = self.transport.value
        d["os"] = self.os.value
        d["groups"] = list(self.groups)
        d["vars"] = dict(self.vars)
        return d


# --------------------------------------------------------------------------- connectors


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: bytes
    stderr: bytes
    duration: float

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def text(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    def err_text(self) -> str:
        return self.stderr.decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- findings


@dataclass
class Finding:
    guest: str
    check_id: str
    severity: Severity
    status: Status
    title: str
    message: str
    resource: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)
    remediation: str = ""
    fixed_by: str | None = None
    waiver: dict[str, Any] | None = None

    @property
    def is_open(self) -> bool:
        return self.status.is_open

    def to_dict(self) -> dict[str, Any]:
        return {
            "guest": self.guest,
            "check_id": self.check_id,
            "severity": self.severity.value,
            "status": self.status.value,
            "title": self.title,
            "message": self.message,
            "resource": self.resource,
            "evidence": self.evidence,
            "remediation": self.remediation,
            "fixed_by": self.fixed_by,
            "waiver": self.waiver,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Finding":
        return cls(
            guest=d["guest"],
            check_id=d["check_id"],
            severity=Severity(d["severity"]),
            status=Status(d["status"]),
            title=d.get("title", ""),
            message=d.get("message", ""),
            resource=d.get("resource", ""),
            evidence=dict(d.get("evidence") or {}),
            remediation=d.get("remediation", ""),
            fixed_by=d.get("fixed_by"),
            waiver=d.get("waiver"),
        )


@dataclass
class GuestReport:
    """Everything preflight learned about one guest."""

    guest: str
    address: str
    os: str
    transport: str
    readiness: Readiness
    findings: list[Finding]
    facts_summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    duration: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "guest": self.guest,
            "address": self.address,
            "os": self.os,
            "transport": self.transport,
            "readiness": self.readiness.value,
            "error": self.error,
            "duration_s": round(self.duration, 3),
            "facts_summary": self.facts_summary,
            "findings": [f.to_dict() for f in self.findings],
        }


def readiness_of(findings: Iterable[Finding], error: str | None = None) -> Readiness:
    findings = list(findings)
    if error or any(f.status is Status.UNREACHABLE for f in findings):
        return Readiness.UNKNOWN
    open_ = [f for f in findings if f.is_open]
    if any(f.severity is Severity.BLOCKER for f in open_):
        return Readiness.BLOCKED
    if any(f.status is Status.ERROR for f in open_) or any(f.status.undecided for f in findings):
        return Readiness.UNKNOWN
    if any(f.severity is Severity.WARNING for f in open_):
        return Readiness.READY_WITH_WARNINGS
    return Readiness.READY


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Change:
    """One planned change, shown before it runs. ``kind`` names what it does ("write_file",
    "rebuild_initramfs", "snapshot", "registry_set"...); each operation defines its own kinds
    and executes them itself, so there is no closed list here. ``target`` is what it touches
    (a path, a device, a VM), ``detail`` the data it needs, ``diff`` what changes."""

    kind: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)
    diff: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "target": self.target, "detail": self.detail, "diff": self.diff}


@dataclass
class Plan:
    operation: str
    guest: str
    changes: list[Change] = field(default_factory=list)
    reason: str = ""            # why nothing is planned, or a summary
    verify: str | None = None   # check id that must pass after apply
    warnings: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.changes

    def to_dict(self) -> dict[str, Any]:
        return {
            "operation": self.operation,
            "guest": self.guest,
            "reason": self.reason,
            "verify": self.verify,
            "warnings": self.warnings,
            "changes": [c.to_dict() for c in self.changes],
        }


# --------------------------------------------------------------------------- source VM


@dataclass
class VMController:
    key: int
    kind: str  # lsilogic | lsisas | pvscsi | buslogic | sata | nvme | ide
    bus_number: int = 0
    sharing: str = "noSharing"
    label: str = ""


# "[datastore1] vm/vm.vmdk": how vSphere names a file on a datastore.
_DATASTORE_PATH = re.compile(r"\[(?P<ds>[^\]]+)\]\s*(?P<rel>.+)")


def parse_datastore_path(path: str) -> tuple[str, str] | None:
    """``"[ds] dir/f.vmdk"`` -> ``("ds", "dir/f.vmdk")``; None for anything else (fullmatch: no
    trailing newline slips through)."""
    m = _DATASTORE_PATH.fullmatch(path or "")
    return (m.group("ds"), m.group("rel")) if m else None


@dataclass
class VMDisk:
    key: int
    label: str
    controller_key: int
    unit_number: int
    capacity_bytes: int
    datastore_path: str = ""       # "[datastore1] vm/vm.vmdk"
    thin: bool | None = None
    disk_mode: str = "persistent"  # persistent | independent_persistent | independent_nonpersistent | ...
    sharing: str = "sharingNone"
    rdm_mode: str | None = None    # physicalMode | virtualMode | None
    uuid: str | None = None
    is_boot: bool = False
    # CBT of this disk: extraConfig "<bus><n>:<unit>.ctkEnabled", else the backing's changeId
    # (set only while CBT tracks the disk); None when vSphere reported neither
    cbt_enabled: bool | None = None
    # the serial number the guest reads (disk.EnableUUID=TRUE on a SCSI disk: the backing uuid
    # as 32 lowercase hex digits); None when the guest sees none
    serial: str | None = None

    @property
    def independent(self) -> bool:
        return self.disk_mode.startswith("independent")

    @property
    def legacy_mode(self) -> bool:
        """ESX 2.x modes still accepted by vSphere: nonpersistent discards writes at power-off,
        undoable asks, append keeps them in a redo log; none is a plain flat disk."""
        return self.disk_mode in LEGACY_DISK_MODES


LEGACY_DISK_MODES = ("nonpersistent", "undoable", "append")
# controller kind -> the bus family the guest sees
BUS_OF_KIND = {"lsilogic": "scsi", "lsisas": "scsi", "pvscsi": "scsi", "buslogic": "scsi",
               "sata": "sata", "nvme": "nvme", "ide": "ide"}


@dataclass
class VMNic:
    label: str
    model: str  # vmxnet3 | e1000 | e1000e | vmxnet2 | pcnet32
    mac: str
    network: str = ""   # portgroup name
    vlan: int | None = None
    connected: bool = True
    address_type: str = ""  # assigned | generated | manual | static


@dataclass
class SourceVM:
    """A VMware VM as read from vSphere (or a .vmx file)."""

    name: str
    uuid_bios: str | None = None
    uuid_instance: str | None = None
    moref: str | None = None
    power_state: str = "unknown"  # poweredOn | poweredOff | suspended
    guest_id: str = ""
    guest_full_name: str = ""
    firmware: str = "bios"  # bios | efi
    secure_boot: bool = False
    vtpm: bool = False
    num_cpu: int = 1
    cores_per_socket: int = 1
    memory_mb: int = 1024
    cpu_hot_add: bool = False
    mem_hot_add: bool = False
    cpu_hot_remove: bool = False
    controllers: list[VMController] = field(default_factory=list)
    disks: list[VMDisk] = field(default_factory=list)
    cdroms: list[dict[str, Any]] = field(default_factory=list)
    nics: list[VMNic] = field(default_factory=list)
    snapshot_count: int = 0
    consolidation_needed: bool = False
    cbt_enabled: bool = False
    tools_status: str | None = None
    tools_running: str | None = None
    tools_version: str | None = None
    guest_ips: list[str] = field(default_factory=list)
    guest_hostname: str | None = None
    host: str | None = None
    cluster: str | None = None
    datacenter: str | None = None
    affinity: dict[str, Any] = field(default_factory=dict)
    usb_controllers: int = 0
    pci_passthrough: list[str] = field(default_factory=list)
    sriov_nics: list[str] = field(default_factory=list)
    vgpu: list[str] = field(default_factory=list)
    serial_ports: int = 0
    source: str = "vsphere"  # vsphere | vmx
    extra: dict[str, Any] = field(default_factory=dict)
    tools_guest_full_name: str = ""   # guest.guestFullName: the OS VMware Tools reports
    disk_enable_uuid: bool = False    # extraConfig disk.EnableUUID: SCSI disks report serials
    fault_tolerance: bool = False     # config.ftInfo set: an FT primary or secondary
    numa_node_affinity: list[str] = field(default_factory=list)  # extraConfig numa.nodeAffinity
    scsi_passthrough: list[str] = field(default_factory=list)    # VirtualSCSIPassthrough labels (tape, changer)
    cluster_services: dict[str, bool] = field(default_factory=dict)  # the cluster's {drs, dpm, ha} switches

    def controller(self, key: int) -> VMController | None:
        return next((c for c in self.controllers if c.key == key), None)

    def usable_ips(self) -> list[str]:
        """Guest IPs a controller can try: no loopback, no link-local, no garbage."""
        out = []
        for raw in self.guest_ips:
            try:
                ip = ipaddress.ip_address(raw.split("%")[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_link_local or ip.is_unspecified):
                out.append(raw)
        return out

    def disk_bus(self, disk: VMDisk) -> str:
        """scsi | sata | nvme | ide | unknown: the bus the guest sees the disk on."""
        ctrl = self.controller(disk.controller_key)
        return BUS_OF_KIND.get(ctrl.kind, "unknown") if ctrl else "unknown"

    def boot_disk(self) -> VMDisk | None:
        marked = [d for d in self.disks if d.is_boot]
        if marked:
            return marked[0]
        return self.disks[0] if self.disks else None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SourceVM":
        d = dict(d)
        d["controllers"] = [VMController(**c) for c in d.get("controllers", [])]
        d["disks"] = [VMDisk(**x) for x in d.get("disks", [])]
        d["nics"] = [VMNic(**n) for n in d.get("nics", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SourceVM field(s): {', '.join(sorted(unknown))}")
        return cls(**d)
