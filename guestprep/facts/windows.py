"""Windows guest facts: run guest_scripts/windows/collect.ps1, parse its JSON.

One round trip prints one JSON document (schema ``guestprep.windows.facts/1``); for UEFI
guests its ``efi`` member (ESP loaders, NVRAM entries) is parsed here too (facts/efi.py).
Sections the collector could not read are ``null`` with a reason in ``unknown``;
checks treat ``None`` as "cannot tell", never as "fine". A guest older than
Windows Server 2012 / PowerShell 3.0 reports ``supported: false`` and a reason.
"""

from __future__ import annotations

import functools
import json
import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Iterator, Mapping

from guestprep.connectors.base import Script
from guestprep.errors import CollectorError, CommandTimeout, ConnectionFailed
from guestprep.connectors.windows_common import windows_script
from guestprep.facts.efi import EfiFacts, parse_windows_efi

WINDOWS_FACTS_SCHEMA = "guestprep.windows.facts/1"
VIRTIO_SERVICES = ("vioscsi", "viostor", "netkvm", "vioser", "balloon")
# Start values of HKLM\SYSTEM\CurrentControlSet\Services\<name>\Start
START_MODES = {0: "boot", 1: "system", 2: "auto", 3: "demand", 4: "disabled"}
BOOT_STORAGE = ("vioscsi", "viostor")
# The PCI hardware IDs a VirtIO controller presents (transitional, then modern), as mapped by
# virt-v2v (libguestfs/virt-v2v convert/windows_virtio.ml: vioscsi_legacy_pciid, ...).
VIRTIO_PCI_IDS = {
    "vioscsi": ("PCI\\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00", "PCI\\VEN_1AF4&DEV_1048&SUBSYS_11001AF4&REV_01"),
    "viostor": ("PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00", "PCI\\VEN_1AF4&DEV_1042&SUBSYS_11001AF4&REV_01"),
}
SCSI_CLASS_GUID = "{4D36E97B-E325-11CE-BFC1-08002BE10318}"
# Windows 8 / Server 2012 (6.2, build 9200) replaced the CriticalDeviceDatabase with the DriverDatabase
DRIVER_DATABASE_BUILD = 9200


@dataclass
class OSInfo:
    caption: str
    version: str          # "10.0.17763"
    build: int
    ubr: int | None = None
    edition: str | None = None
    product_type: int | None = None   # 1 workstation, 2 domain controller, 3 server
    installation_type: str | None = None  # Server | Server Core | Client
    locale: str | None = None
    architecture: str | None = None
    system_drive: str = "C:"

    @property
    def is_server(self) -> bool:
        return self.product_type in (2, 3)

    @property
    def is_32bit(self) -> bool | None:
        """Win32_OperatingSystem.OSArchitecture ("32-bit"/"64-bit", localised digits stay); None: not reported."""
        if not self.architecture:
            return None
        return "32" in self.architecture and "64" not in self.architecture


@dataclass
class BitLockerVolume:
    mount: str
    protection_status: str        # on | off | unknown
    volume_status: str | None = None
    encryption_percentage: float | None = None
    protectors: list[str] = field(default_factory=list)
    recovery_key_escrowed: bool | None = None   # recorded by the admin/op: AD/Entra backup confirmed


@dataclass
class Partition:
    number: int
    offset: int
    size: int
    drive_letter: str | None = None
    type: str | None = None


@dataclass
class Disk:
    number: int
    size: int
    friendly_name: str = ""
    bus_type: str | None = None
    partition_style: str | None = None
    is_boot: bool = False
    is_system: bool = False
    is_offline: bool = False
    is_read_only: bool = False
    logical_sector_size: int | None = None
    partitions: list[Partition] = field(default_factory=list)


@dataclass
class Volume:
    drive_letter: str
    size: int
    free: int
    file_system: str | None = None
    label: str | None = None


@dataclass
class StoreDriver:
    inf: str                 # oem12.inf
    original_name: str       # vioscsi.inf
    provider: str | None = None
    version: str | None = None
    class_name: str | None = None
    folder: str | None = None        # FileRepository\\vioscsi.inf_amd64_<hash>
    arch: str | None = None          # amd64 | x86 (from the folder name)


@dataclass
class BootService:
    """HKLM\\SYSTEM\\CurrentControlSet\\Services\\<driver> as read back."""
    type: int | None = None
    start: int | None = None
    error_control: int | None = None
    group: str | None = None
    image_path: str | None = None


@dataclass
class DriverFile:
    path: str
    present: bool = False
    sha256: str | None = None


@dataclass
class DeviceIdMapping:
    id: str                                   # PCI\VEN_1AF4&DEV_1004&SUBSYS_00081AF4&REV_00
    infs: list[str] = field(default_factory=list)   # DriverDatabase\DeviceIds value names (oemNN.inf)


@dataclass
class CddMapping:
    id: str
    service: str | None = None
    class_guid: str | None = None


@dataclass
class BootStorageState:
    """Everything Windows needs to boot from a disk on this VirtIO storage driver."""
    name: str
    service: BootService | None
    file: DriverFile
    device_ids: list[DeviceIdMapping] = field(default_factory=list)
    critical_device_database: list[CddMapping] = field(default_factory=list)

    def missing(self, build: int, package: "StoreDriver | None") -> list[str]:
        """What is missing for a boot from this driver's disk ([] = complete), in the terms of
        the Services registry tree and virt-v2v's add_guestor_to_registry."""
        out = []
        s = self.service
        sys_name = f"{self.name}.sys"
        if s is None:
            out.append(f"service key Services\\{self.name}")
        else:
            if s.type != 1:
                out.append(f"Type=1 (kernel driver; is {s.type})")
            if s.start != 0:
                out.append(f"Start=0 (boot; is {s.start})")
            if s.error_control is None:
                out.append("ErrorControl")
            if (s.group or "").lower() != "scsi miniport":
                out.append(f"Group=SCSI miniport (is {s.group!r})")
            image = (s.image_path or "").lower()
            if image not in (f"system32\\drivers\\{sys_name}", f"\\systemroot\\system32\\drivers\\{sys_name}"):
                out.append(f"ImagePath=System32\\drivers\\{sys_name} (is {s.image_path!r})")
        if not self.file.present:
            out.append(f"{self.file.path} (file absent)")
        ids = VIRTIO_PCI_IDS.get(self.name, ())
        if build >= DRIVER_DATABASE_BUILD:
            if package is None or not package.inf:
                out.append(f"{self.name}.inf staged in the driver store (published oemNN.inf)")
            else:
                mapped = {m.id.upper() for m in self.device_ids if package.inf.lower() in {i.lower() for i in m.infs}}
                lacking = [i for i in ids if i.upper() not in mapped]
                if lacking:
                    out.append(f"DriverDatabase\\DeviceIds mapping to {package.inf} for {', '.join(lacking)}")
        else:
            good = {m.id.upper() for m in self.critical_device_database
                    if (m.service or "").lower() == self.name and (m.class_guid or "").upper() == SCSI_CLASS_GUID}
            lacking = [i for i in ids if i.upper() not in good]
            if lacking:
                out.append(f"CriticalDeviceDatabase entries (Service={self.name}) for {', '.join(lacking)}")
        return out


@dataclass
class ServiceInfo:
    name: str
    start: int | None         # registry Start value
    image_path: str | None = None
    group: str | None = None

    @property
    def start_mode(self) -> str | None:
        return START_MODES.get(self.start) if self.start is not None else None


@dataclass
class IPAddress:
    address: str
    prefix: int


@dataclass
class NetAdapter:
    name: str
    mac: str                  # normalised to aa:bb:cc:dd:ee:ff
    description: str = ""
    interface_index: int | None = None
    dhcp: bool | None = None
    ipv4: list[IPAddress] = field(default_factory=list)
    ipv6: list[IPAddress] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)
    dns: list[str] = field(default_factory=list)
    dns_suffix: str | None = None
    static_dns: bool | None = None    # DNS servers set by hand (Tcpip interface NameServer); None: not reported
    profile: str | None = None        # Public | Private | DomainAuthenticated
    network_name: str | None = None

    @property
    def static(self) -> bool:
        return self.dhcp is False and bool(self.ipv4 or self.ipv6)


@dataclass
class Route:
    destination: str
    next_hop: str
    interface_index: int | None = None
    metric: int | None = None
    persistent: bool = False


@dataclass
class WindowsFacts:
    schema: str
    supported: bool
    unsupported_reason: str | None
    hostname: str
    os: OSInfo | None
    ps_version: str | None = None
    firmware: str | None = None            # uefi | bios
    secure_boot: bool | None = None
    efi: EfiFacts | None = None            # UEFI guests: the ESP and NVRAM entries (None: BIOS or not reported)
    tpm_present: bool | None = None
    tpm_version: str | None = None
    bitlocker: list[BitLockerVolume] | None = None
    disks: list[Disk] | None = None
    san_policy: str | None = None          # OnlineAll | OfflineShared | OfflineAll | OfflineInternal
    volumes: list[Volume] | None = None
    driver_store: list[StoreDriver] | None = None
    services: dict[str, ServiceInfo | None] = field(default_factory=dict)  # absent service -> None
    boot_storage: dict[str, BootStorageState] | None = None   # vioscsi/viostor boot-start state
    qemu_ga: dict[str, Any] | None = None
    vmware_tools: dict[str, Any] | None = None
    pending_reboot: bool | None = None
    pending_reboot_reasons: list[str] = field(default_factory=list)
    fast_startup: bool | None = None
    hibernation: bool | None = None
    adapters: list[NetAdapter] | None = None
    routes: list[Route] | None = None
    firewall_profiles: dict[str, bool] | None = None
    device_install_policy: dict[str, Any] | None = None
    antivirus: list[dict[str, Any]] | None = None
    domain: dict[str, Any] | None = None
    execution_policy: dict[str, str] | None = None   # scope -> policy (MachinePolicy, UserPolicy, LocalMachine)
    language_mode: str | None = None       # FullLanguage | ConstrainedLanguage | RestrictedLanguage | NoLanguage
    guestprep_state: dict[str, Any] = field(default_factory=dict)  # what our operations left on the guest
    unknown: dict[str, str] = field(default_factory=dict)          # section -> reason it is null
    virtio_win_target: str | None = None   # configured virtio-win version (set by collect from guest vars)
    settings: dict[str, Any] = field(default_factory=dict)  # guestprep_* inventory vars operations read
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    def driver_in_store(self, inf_name: str) -> bool | None:
        if self.driver_store is None:
            return None
        return any(d.original_name.lower() == inf_name.lower() for d in self.driver_store)

    def staged(self, inf_name: str) -> "StoreDriver | None":
        """The staged package of ``inf_name`` with a published name (the newest listed last)."""
        found = [d for d in self.driver_store or [] if d.original_name.lower() == inf_name.lower() and d.inf]
        return found[-1] if found else None

    def boot_missing(self, name: str) -> list[str] | None:
        """What ``name`` (vioscsi/viostor) lacks to boot a disk; None when not collected."""
        if self.boot_storage is None or self.os is None or name not in self.boot_storage:
            return None
        return self.boot_storage[name].missing(self.os.build, self.staged(f"{name}.inf"))

    @property
    def virtio_win_used(self) -> dict[str, Any] | None:
        """The virtio-win release install-virtio.ps1 read from the media ({version, source, ...})."""
        v = self.guestprep_state.get("virtio_win")
        return v if isinstance(v, dict) and v.get("version") else None

    def service(self, name: str) -> ServiceInfo | None:
        return self.services.get(name)

    def volume(self, letter: str) -> Volume | None:
        letter = letter.rstrip(":").upper()
        return next((v for v in self.volumes or [] if v.drive_letter.upper() == letter), None)


# --------------------------------------------------------------------------- parse


class _Reader:
    """Typed accessors that name the JSON path of whatever is wrong."""

    def __init__(self, where: str):
        self.where = where

    def bad(self, path: str, what: str) -> CollectorError:
        return CollectorError(f"collector JSON field {path}: {what}", where=self.where)

    def obj(self, d: Any, path: str, optional: bool = False) -> dict[str, Any] | None:
        if d is None and optional:
            return None
        if not isinstance(d, dict):
            raise self.bad(path, f"expected an object, got {type(d).__name__}")
        return d

    def lst(self, d: Any, path: str, optional: bool = False) -> list[Any] | None:
        if d is None and optional:
            return None
        if isinstance(d, dict):  # PowerShell 3.0 ConvertTo-Json unwraps one-element arrays
            return [d]
        if not isinstance(d, list):
            raise self.bad(path, f"expected a list, got {type(d).__name__}")
        return d

    def each(self, items: list[Any], path: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """(path, object) for every element of a JSON list that must hold objects."""
        for n, item in enumerate(items):
            yield f"{path}[{n}]", self.obj(item, f"{path}[{n}]")  # type: ignore[misc]

    def s(self, d: Any, path: str, optional: bool = True) -> str | None:
        if d is None and optional:
            return None
        if not isinstance(d, (str, int)):
            raise self.bad(path, f"expected a string, got {type(d).__name__}")
        return str(d)

    def i(self, d: Any, path: str, optional: bool = True) -> int | None:
        if d is None and optional:
            return None
        if isinstance(d, bool) or not isinstance(d, (int, float, str)):
            raise self.bad(path, f"expected an integer, got {type(d).__name__}")
        try:
            return int(d)
        except ValueError:
            raise self.bad(path, f"expected an integer, got {d!r}") from None

    def b(self, d: Any, path: str, optional: bool = True) -> bool | None:
        if d is None:
            return None
        if isinstance(d, bool):
            return d
        if isinstance(d, int) and d in (0, 1):
            return bool(d)
        raise self.bad(path, f"expected true/false, got {d!r}")

    def record(self, cls: type, d: dict[str, Any], path: str, *, required: tuple[str, ...] = (),
               keys: Mapping[str, str] | None = None, **given: Any) -> Any:
        """``cls`` from the JSON object ``d``: each field read by its declared type (str, int, bool;
        anything else as is) under its name (or ``keys[name]``), fields in ``given`` taken as passed.
        A missing required field is an error; a missing or empty non-optional one takes its default."""
        values = dict(given)
        for f in fields(cls):
            if f.name in given or not f.init:
                continue
            key = (keys or {}).get(f.name, f.name)
            base, nullable = _declared(cls, f.name)
            reader = {str: self.s, int: self.i, bool: self.b}.get(base)
            value = reader(d.get(key), f"{path}.{key}", optional=f.name not in required) if reader else d.get(key)
            if not nullable and not value:
                value = f.default if f.default is not MISSING else (base() if reader else value)
            values[f.name] = value
        return cls(**values)


@functools.lru_cache(maxsize=None)
def _declared(cls: type, name: str) -> tuple[Any, bool]:
    """A dataclass field's type without ``None``, and whether ``None`` is allowed."""
    hint = typing.get_type_hints(cls)[name]
    args = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else Any), True
    return hint, False


def normalise_mac(mac: str) -> str:
    hexdigits = "".join(c for c in mac.lower() if c in "0123456789abcdef")
    if len(hexdigits) != 12:
        raise ValueError(mac)
    return ":".join(hexdigits[i:i + 2] for i in range(0, 12, 2))


def parse(raw: Mapping[str, Any], where: str = "windows collector") -> WindowsFacts:
    """Turn the collector's JSON into :class:`WindowsFacts`; garbage raises CollectorError."""
    r = _Reader(where)
    raw = r.obj(raw, "$")  # type: ignore[assignment]
    if raw.get("schema") != WINDOWS_FACTS_SCHEMA:
        raise r.bad("schema", f"expected {WINDOWS_FACTS_SCHEMA!r}, got {raw.get('schema')!r}")
    supported = r.b(raw.get("supported"), "supported")
    if supported is None:
        raise r.bad("supported", "missing")
    unknown = {str(k): str(v) for k, v in (r.obj(raw.get("unknown") or {}, "unknown") or {}).items()}
    facts = WindowsFacts(
        schema=raw["schema"], supported=supported,
        unsupported_reason=r.s(raw.get("unsupported_reason"), "unsupported_reason"),
        hostname=r.s(raw.get("hostname"), "hostname") or "", os=None,
        ps_version=r.s(raw.get("ps_version"), "ps_version"), unknown=unknown, raw=dict(raw),
    )
    os_d = r.obj(raw.get("os"), "os", optional=True)
    if os_d is not None:
        facts.os = r.record(OSInfo, os_d, "os", required=("caption", "version", "build"))
    if not supported:
        return facts

    fw = r.obj(raw.get("firmware"), "firmware", optional=True) or {}
    facts.firmware = r.s(fw.get("type"), "firmware.type")
    if facts.firmware not in (None, "uefi", "bios"):
        raise r.bad("firmware.type", f"expected uefi or bios, got {facts.firmware!r}")
    facts.secure_boot = r.b(fw.get("secure_boot"), "firmware.secure_boot")
    if raw.get("efi") is not None:
        facts.efi = parse_windows_efi(raw["efi"], where=f"{where}: collector JSON field efi")
    tpm = r.obj(raw.get("tpm"), "tpm", optional=True) or {}
    facts.tpm_present = r.b(tpm.get("present"), "tpm.present")
    facts.tpm_version = r.s(tpm.get("version"), "tpm.version")

    bl = r.lst(raw.get("bitlocker"), "bitlocker", optional=True)
    if bl is not None:
        facts.bitlocker = [r.record(
            BitLockerVolume, v, p, required=("mount",),
            protection_status=(r.s(v.get("protection_status"), p + ".protection_status") or "unknown").lower(),
            protectors=[str(x) for x in r.lst(v.get("protectors") or [], p + ".protectors") or []],
        ) for p, v in r.each(bl, "bitlocker")]

    disks = r.obj(raw.get("storage"), "storage", optional=True)
    if disks is not None:
        facts.san_policy = r.s(disks.get("san_policy"), "storage.san_policy")
        items = r.lst(disks.get("disks"), "storage.disks", optional=True)
        if items is not None:
            facts.disks = [r.record(Disk, d, p, required=("number",), partitions=[
                r.record(Partition, pt, pp, required=("number", "offset"),
                         drive_letter=r.s(pt.get("drive_letter"), pp + ".drive_letter") or None)
                for pp, pt in r.each(r.lst(d.get("partitions") or [], p + ".partitions") or [], p + ".partitions")
            ]) for p, d in r.each(items, "storage.disks")]

    vols = r.lst(raw.get("volumes"), "volumes", optional=True)
    if vols is not None:
        facts.volumes = [r.record(
            Volume, v, p, required=("size", "free"),
            drive_letter=(r.s(v.get("drive_letter"), p + ".drive_letter", optional=False) or "").rstrip(":"),
        ) for p, v in r.each(vols, "volumes")]

    store = r.lst(raw.get("driver_store"), "driver_store", optional=True)
    if store is not None:
        facts.driver_store = [r.record(StoreDriver, d, p, required=("original_name",), keys={"class_name": "class"})
                              for p, d in r.each(store, "driver_store")]

    services = r.obj(raw.get("services") or {}, "services") or {}
    for name in VIRTIO_SERVICES:
        s = r.obj(services.get(name), f"services.{name}", optional=True)
        facts.services[name] = None if s is None else r.record(ServiceInfo, s, f"services.{name}", name=name)

    boot = r.obj(raw.get("boot_storage"), "boot_storage", optional=True)
    if boot is not None:
        facts.boot_storage = {}
        for name in BOOT_STORAGE:
            p = f"boot_storage.{name}"
            b = r.obj(boot.get(name), p)
            svc = r.obj(b.get("service"), p + ".service", optional=True)
            file = r.obj(b.get("file"), p + ".file")
            facts.boot_storage[name] = BootStorageState(
                name=name,
                service=None if svc is None else r.record(BootService, svc, p + ".service"),
                file=r.record(DriverFile, file, p + ".file", required=("path",)),
                device_ids=[r.record(DeviceIdMapping, m, mp, required=("id",), infs=[
                    str(r.s(i, f"{mp}.infs[{n}]", optional=False)) for n, i in enumerate(r.lst(m.get("infs") or [], mp + ".infs") or [])])
                    for mp, m in r.each(r.lst(b.get("device_ids") or [], p + ".device_ids") or [], p + ".device_ids")],
                critical_device_database=[r.record(CddMapping, m, mp, required=("id",)) for mp, m in r.each(
                    r.lst(b.get("critical_device_database") or [], p + ".critical_device_database") or [],
                    p + ".critical_device_database")],
            )
    facts.qemu_ga = r.obj(raw.get("qemu_ga"), "qemu_ga", optional=True)
    facts.vmware_tools = r.obj(raw.get("vmware_tools"), "vmware_tools", optional=True)
    pr = r.obj(raw.get("pending_reboot"), "pending_reboot", optional=True)
    if pr is not None:
        facts.pending_reboot = r.b(pr.get("pending"), "pending_reboot.pending")
        facts.pending_reboot_reasons = [str(x) for x in r.lst(pr.get("reasons") or [], "pending_reboot.reasons") or []]
    power = r.obj(raw.get("power"), "power", optional=True) or {}
    facts.fast_startup = r.b(power.get("fast_startup"), "power.fast_startup")
    facts.hibernation = r.b(power.get("hibernation"), "power.hibernation")

    net = r.obj(raw.get("network"), "network", optional=True)
    if net is not None:
        facts.adapters = [_adapter(r, a, p) for p, a in r.each(r.lst(net.get("adapters") or [], "network.adapters")
                                                                 or [], "network.adapters")]
        facts.routes = [r.record(Route, rt, p, required=("destination", "next_hop"))
                        for p, rt in r.each(r.lst(net.get("routes") or [], "network.routes") or [], "network.routes")]
    fw_profiles = r.obj(raw.get("firewall"), "firewall", optional=True)
    if fw_profiles is not None:
        facts.firewall_profiles = {str(k): bool(r.b(v, f"firewall.{k}")) for k, v in fw_profiles.items()}
    facts.device_install_policy = r.obj(raw.get("device_install_policy"), "device_install_policy", optional=True)
    av = r.lst(raw.get("antivirus"), "antivirus", optional=True)
    facts.antivirus = None if av is None else [r.obj(x, f"antivirus[{n}]") for n, x in enumerate(av)]  # type: ignore[misc]
    facts.domain = r.obj(raw.get("domain"), "domain", optional=True)
    ep = r.obj(raw.get("execution_policy"), "execution_policy", optional=True)
    if ep is not None:
        facts.execution_policy = {str(k): r.s(v, f"execution_policy.{k}") or "Undefined" for k, v in ep.items()}
    facts.language_mode = r.s(raw.get("language_mode"), "language_mode")
    facts.guestprep_state = r.obj(raw.get("guestprep") or {}, "guestprep") or {}
    # escrow confirmed by the operator when BitLocker was suspended (recorded in state.json)
    escrow = facts.guestprep_state.get("bitlocker_escrow") or {}
    for v in facts.bitlocker or []:
        if isinstance(escrow, dict) and escrow.get(v.mount) is True:
            v.recovery_key_escrowed = True
    return facts


def _adapter(r: _Reader, a: dict[str, Any], p: str) -> NetAdapter:
    try:
        mac = normalise_mac(r.s(a.get("mac"), p + ".mac", optional=False) or "")
    except ValueError:
        raise r.bad(p + ".mac", f"not a MAC address: {a.get('mac')!r}") from None

    def ips(key: str) -> list[IPAddress]:
        return [r.record(IPAddress, ip, ipp, required=("address", "prefix"))
                for ipp, ip in r.each(r.lst(a.get(key) or [], f"{p}.{key}") or [], f"{p}.{key}")]

    def strings(key: str) -> list[str]:
        return [str(g) for g in r.lst(a.get(key) or [], f"{p}.{key}") or []]

    return r.record(NetAdapter, a, p, required=("name",), mac=mac, ipv4=ips("ipv4"), ipv6=ips("ipv6"),
                    gateways=strings("gateways"), dns=strings("dns"))


def parse_output(stdout: bytes, where: str) -> dict[str, Any]:
    """Decode the collector's stdout into one JSON object, or say exactly what is wrong."""
    if not stdout.strip():
        raise CollectorError("collector printed nothing (expected one JSON document)", where=where)
    try:
        text = stdout.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CollectorError(f"collector output is not UTF-8 (byte {exc.start})", where=where) from None
    text = text.lstrip("\ufeff").strip()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        truncated = text.startswith("{") and not text.endswith("}") or exc.pos >= len(text) - 1
        what = "truncated JSON (output cut off)" if truncated else "not JSON"
        snippet = text[max(0, exc.pos - 20):exc.pos + 20].replace("\n", " ")
        raise CollectorError(f"collector output is {what}: {exc.msg} at char {exc.pos} near {snippet!r}",
                             where=where) from None
    if not isinstance(doc, dict):
        raise CollectorError(f"collector output is JSON {type(doc).__name__}, expected an object", where=where)
    return doc


def collect(conn: Any, timeout: float) -> WindowsFacts:
    """Run the collector in one round trip (UEFI guests included) and parse it; never changes the guest."""
    guest = getattr(conn, "guest", None)
    where = getattr(guest, "name", None) or "windows guest"
    # lib.ps1 goes along for its ESP helpers (Get-EspPartition, Get-EspRoot, Get-Sha256)
    script = Script(text=windows_script("collect.ps1"), interpreter="powershell", name="collect.ps1")
    try:
        res = conn.run(script, timeout=timeout)
    except (ConnectionFailed, CommandTimeout):
        raise
    if res.rc != 0:
        detail = (res.err_text() or res.text()).strip().splitlines()
        raise CollectorError(f"collector exited {res.rc}: {detail[0] if detail else 'no output'}", where=where)
    facts = parse(parse_output(res.stdout, where), where=where)
    vars_ = getattr(guest, "vars", None) or {}
    target = vars_.get("guestprep_virtio_win_version")
    if target:
        facts.virtio_win_target = str(target)
    facts.settings = {k: v for k, v in vars_.items() if str(k).startswith("guestprep_")}
    return facts


def summarize(facts: WindowsFacts) -> dict[str, Any]:
    """A small dict for reports."""
    os_ = facts.os
    return {
        "hostname": facts.hostname,
        "os": "windows",
        "os_name": os_.caption if os_ else None,
        "os_version": os_.version if os_ else None,
        "os_build": os_.build if os_ else None,
        "edition": os_.edition if os_ else None,
        "locale": os_.locale if os_ else None,
        "powershell": facts.ps_version,
        "supported": facts.supported,
        "unsupported_reason": facts.unsupported_reason,
        "firmware": facts.firmware,
        "secure_boot": facts.secure_boot,
        "tpm": facts.tpm_present,
        "domain": (facts.domain or {}).get("domain") if (facts.domain or {}).get("part_of_domain") else None,
        "workgroup": (facts.domain or {}).get("workgroup"),
        "disks": len(facts.disks or []),
        "adapters": [a.mac for a in facts.adapters or []],
    }
