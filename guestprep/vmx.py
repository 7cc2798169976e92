"""Parse a VMware ``.vmx`` file into a ``SourceVM``.

Standalone ESXi hosts have no vCenter to ask; with the datastore mounted over NFS the
``.vmx`` is the VM's whole hardware description. Keys are case-insensitive ("memSize"
and "memsize" both occur in the wild) and values are quoted strings in which VMware
escapes special characters as ``|XX`` (hex). Controller and disk keys follow vSphere's
numbering (SCSI 1000+, IDE 200+, SATA 15000+, NVMe 31000+) so later stages treat a
vmx-sourced VM like a vSphere one.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path

from guestprep.errors import ConfigError
from guestprep.models import SourceVM, VMController, VMDisk, VMNic

_PAIR = re.compile(r'\s*([A-Za-z0-9_.:\-\[\]]+)\s*=\s*')
_BARE_VALUE = re.compile(r'[^\s"#]*')
_ESCAPE = re.compile(r"\|([0-9A-Fa-f]{2})")
_DEVICE = re.compile(r"(scsi|sata|ide|nvme)(\d+):(\d+)\.present")
_ENCODING = re.compile(rb'^[ \t]*\.encoding[ \t]*=[ \t]*"([^"\r\n]*)"', re.M)

SCSI_KINDS = {"lsilogic": "lsilogic", "lsisas1068": "lsisas", "pvscsi": "pvscsi", "buslogic": "buslogic"}
KEY_BASE = {"ide": 200, "scsi": 1000, "sata": 15000, "nvme": 31000}
BUS_BOOT_RANK = {"scsi": 0, "sata": 1, "nvme": 2, "ide": 3}
CDROM_TYPES = {"cdrom-image", "atapi-cdrom", "cdrom-raw"}
MAX_VMX_BYTES = 4 * 1024 * 1024  # real .vmx files are a few KiB; refuse anything absurd
# vSphere 8 configuration maximums (768 vCPUs, 24 TiB per VM); Proxmox needs >= 16 MiB.
# Anything outside is a broken or crafted file, refused at hand-off time, not at create.
MAX_VCPUS = 768
MIN_MEMORY_MB, MAX_MEMORY_MB = 16, 24 * 1024 * 1024


def _line_error(where: str, n: int, message: str, raw: str) -> ConfigError:
    return ConfigError(f"{message}: {raw.strip()[:80]!r}", where=f"{where}:{n}")


def read_vmx(text: str, where: str = "<vmx>", warnings: list[str] | None = None) -> dict[str, str]:
    """key (lower-cased) -> unescaped value.

    One ``key = "value"`` per line, as VMware writes it (a bare ``key = value`` from hand
    edits is accepted). A value without its closing quote, a second pair or any other text
    after the value is an error naming file:line (a lenient reader would take ``"web01`` as
    the name or merge two keys). A key given twice is a warning (the last value counts).
    """
    out: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        m = _PAIR.match(line)
        if not m:
            raise _line_error(where, n, "not 'key = \"value\"'", raw)
        key, rest = m.group(1).lower(), line[m.end():]
        if rest.startswith('"'):
            end = rest.find('"', 1)       # VMware escapes a quote inside a value as |22
            if end < 0:
                raise _line_error(where, n, f"the value of {m.group(1)} has no closing quote", raw)
            value, tail = rest[1:end], rest[end + 1:].strip()
        else:
            bare = _BARE_VALUE.match(rest)
            assert bare is not None        # the pattern matches the empty string
            value, tail = bare.group(0), rest[bare.end():].strip()
        if tail and not tail.startswith("#"):
            if _PAIR.match(tail) and "=" in tail:
                raise _line_error(where, n, "two 'key = value' pairs on one line", raw)
            raise _line_error(where, n, f"unexpected text after the value of {m.group(1)}", raw)
        value = _ESCAPE.sub(lambda e: chr(int(e.group(1), 16)), value)
        if key in out and warnings is not None and out[key] != value:
            warnings.append(f"{where}:{n}: {m.group(1)} is set again (first at line {first_line[key]}, "
                            f"{out[key]!r} -> {value!r}); the last value is used")
        first_line.setdefault(key, n)
        out[key] = value
    return out


def decode_vmx(data: bytes, where: str) -> str:
    """Bytes -> text, honouring a UTF-8 byte order mark and the ``.encoding`` VMware writes."""
    bom = data.startswith(codecs.BOM_UTF8)
    if bom:
        data = data[len(codecs.BOM_UTF8):]
    m = _ENCODING.search(data)
    declared = m.group(1).decode("ascii", "replace").strip() if m else ""
    codec = "utf-8"
    if declared:
        try:
            codec = codecs.lookup(declared).name
        except LookupError:
            raise ConfigError(f".encoding = {declared!r} is not a known character encoding", where=where) from None
        if codec.startswith(("utf-16", "utf-32")):
            raise ConfigError(f".encoding = {declared!r}: a .vmx is ASCII-compatible text", where=where)
        if bom and codec != "utf-8":
            raise ConfigError(f"starts with a UTF-8 byte order mark but declares .encoding = {declared!r}", where=where)
    try:
        return data.decode(codec)
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        what = "UTF-8" if codec == "utf-8" else f"{declared} (its .encoding)"
        raise ConfigError(f"not {what} text (is this really a .vmx?)", where=f"{where}:{line}") from None


def check_hardware(num_cpu: object, cores_per_socket: object, memory_mb: object, where: str) -> None:
    """vCPU / memory values a real VM can have; shared by the .vmx and the hand-off readers."""
    for what, value, low, high in (("vCPUs", num_cpu, 1, MAX_VCPUS), ("cores per socket", cores_per_socket, 1, MAX_VCPUS),
                                   ("memory (MiB)", memory_mb, MIN_MEMORY_MB, MAX_MEMORY_MB)):
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise ConfigError(f"{what} must be an integer {low}..{high}, got {value!r}", where=where)
    assert isinstance(num_cpu, int) and isinstance(cores_per_socket, int)
    if cores_per_socket > num_cpu:
        raise ConfigError(f"{cores_per_socket} cores per socket exceed the {num_cpu} vCPUs", where=where)


def _true(v: str | None) -> bool:
    return (v or "").strip().lower() in ("true", "1", "yes")


def _int(kv: dict[str, str], key: str, default: int, where: str) -> int:
    if key not in kv:
        return default
    try:
        return int(kv[key].strip())
    except ValueError:
        raise ConfigError(f"{key} = {kv[key]!r} is not an integer", where=where) from None


def bios_uuid(raw: str | None, where: str) -> str | None:
    """'56 4d 96 af ... -5c 4d ...' -> canonical 8-4-4-4-12 UUID text."""
    if not raw:
        return None
    hexs = re.sub(r"[\s\-]", "", raw).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", hexs):
        raise ConfigError(f"uuid.bios {raw!r} is not 16 hex bytes", where=where)
    return f"{hexs[:8]}-{hexs[8:12]}-{hexs[12:16]}-{hexs[16:20]}-{hexs[20:]}"


def vsphere_guest_id(guest_os: str) -> str:
    """vmx 'rhel7-64' -> vSphere-style 'rhel7_64Guest' (the ostype table accepts both)."""
    if not guest_os:
        return ""
    return guest_os.replace("-", "_") + "Guest"


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def vmdk_capacity(path: Path, base_dir: Path) -> int:
    """Sum of extent sizes from a text descriptor next to the .vmx; 0 when unknown.

    Only a .vmdk inside the .vmx's own folder is read: a crafted fileName must not make
    the parser open arbitrary files (the hand-off confines disk paths separately)."""
    try:
        real, root = os.path.realpath(path), os.path.realpath(base_dir)
        if not path.name.lower().endswith(".vmdk") or not _inside(real, root) or real == root:
            return 0
        if not path.is_file() or path.stat().st_size > 64 * 1024:
            return 0
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    sectors = [int(m.group(1)) for m in re.finditer(r"^\s*RW\s+(\d+)\s+", text, re.M)]
    return sum(sectors) * 512


def parse_vmx_file(path: str | Path) -> SourceVM:
    p = Path(path)
    try:
        if p.stat().st_size > MAX_VMX_BYTES:
            raise ConfigError("too large to be a .vmx file", where=str(p))
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", where=str(p)) from e
    text = decode_vmx(data, str(p))
    # absolute: a relative --vmx must still give disk paths Proxmox can import from
    return parse_vmx(text, where=str(p), base_dir=Path(os.path.abspath(p)).parent)


def parse_vmx(text: str, where: str = "<vmx>", base_dir: Path | None = None) -> SourceVM:
    warnings: list[str] = []
    kv = read_vmx(text.removeprefix("\ufeff"), where, warnings)
    if not kv:
        raise ConfigError("empty .vmx file", where=where)
    name = kv.get("displayname") or (Path(where).stem if where != "<vmx>" else "")
    if not name:
        raise ConfigError("no displayName", where=where)
    if any(ord(c) < 32 or c == "\x7f" for c in name):
        raise ConfigError(f"displayName {name!r} contains control characters", where=where)

    controllers: list[VMController] = []
    scsi_numbers = sorted({int(m.group(1)) for k in kv for m in [re.fullmatch(r"scsi(\d+)\.present", k)] if m and _true(kv[k])})
    for n in scsi_numbers:
        dev = kv.get(f"scsi{n}.virtualdev", "lsilogic").lower()
        if dev not in SCSI_KINDS:
            raise ConfigError(f"scsi{n}.virtualDev = {dev!r} is not a known SCSI controller", where=where)
        controllers.append(VMController(key=KEY_BASE["scsi"] + n, kind=SCSI_KINDS[dev], bus_number=n,
                                        sharing=kv.get(f"scsi{n}.sharedbus", "none"), label=f"scsi{n}"))
    for bus in ("sata", "nvme"):
        for n in sorted({int(m.group(1)) for k in kv for m in [re.fullmatch(rf"{bus}(\d+)\.present", k)] if m and _true(kv[k])}):
            controllers.append(VMController(key=KEY_BASE[bus] + n, kind=bus, bus_number=n, label=f"{bus}{n}"))

    disks: list[VMDisk] = []
    cdroms: list[dict] = []
    slots = []
    for k in kv:
        m = _DEVICE.fullmatch(k)
        if m and _true(kv[k]):
            slots.append((m.group(1), int(m.group(2)), int(m.group(3))))
    for bus, ctl, unit in slots:
        prefix = f"{bus}{ctl}:{unit}"
        dtype = kv.get(f"{prefix}.devicetype", "").lower()
        file_name = kv.get(f"{prefix}.filename", "")
        if dtype in CDROM_TYPES or (not dtype and file_name.lower().endswith(".iso")):
            cdroms.append({"slot": prefix, "type": dtype or "cdrom-image", "file": file_name,
                           "connected": _true(kv.get(f"{prefix}.startconnected", "TRUE"))})
            continue
        if bus == "ide" and not any(c.kind == "ide" and c.bus_number == ctl for c in controllers):
            controllers.append(VMController(key=KEY_BASE["ide"] + ctl, kind="ide", bus_number=ctl, label=f"ide{ctl}"))
        if bus in ("scsi", "sata", "nvme") and not any(c.key == KEY_BASE[bus] + ctl for c in controllers):
            raise ConfigError(f"{prefix} is present but controller {bus}{ctl} is not", where=where)
        if not file_name:
            raise ConfigError(f"{prefix} is a disk without fileName", where=where)
        if any(ord(c) < 32 for c in file_name):
            raise ConfigError(f"{prefix}.fileName {file_name!r} contains control characters", where=where)
        mode = kv.get(f"{prefix}.mode", "persistent").lower().replace("-", "_")
        lower = file_name.lower()
        rdm = "physicalMode" if (dtype == "scsi-passthru" or lower.endswith("-rdmp.vmdk")) else (
            "virtualMode" if lower.endswith("-rdm.vmdk") else None)
        path = file_name if file_name.startswith("/") or base_dir is None else str(base_dir / file_name)
        disks.append(VMDisk(
            key=0, label=prefix, controller_key=KEY_BASE[bus] + ctl, unit_number=unit,
            capacity_bytes=vmdk_capacity(Path(path), base_dir) if base_dir is not None else 0,
            datastore_path=path, disk_mode=mode, rdm_mode=rdm,
            sharing="sharingMultiWriter" if kv.get(f"{prefix}.sharing", "").lower() == "multi-writer" else "sharingNone",
            cbt_enabled=_true(kv[f"{prefix}.ctkenabled"]) if f"{prefix}.ctkenabled" in kv else None,
        ))
    boot_label = (kv.get("bios.hddorder", "").split(",")[0] or "").strip().lower()
    disks.sort(key=lambda d: (d.label.lower() != boot_label, BUS_BOOT_RANK[re.match(r"[a-z]+", d.label).group(0)],
                              d.controller_key, d.unit_number))
    for i, d in enumerate(disks):
        d.key = 2000 + i
        d.is_boot = i == 0 and not d.independent and d.rdm_mode is None

    nics: list[VMNic] = []
    for n in sorted({int(m.group(1)) for k in kv for m in [re.fullmatch(r"ethernet(\d+)\.present", k)] if m and _true(kv[k])}):
        e = f"ethernet{n}"
        atype = kv.get(f"{e}.addresstype", "generated").lower()
        mac = kv.get(f"{e}.address") if atype == "static" else kv.get(f"{e}.generatedaddress")
        if not mac:
            raise ConfigError(f"{e} has no MAC address (addressType={atype})", where=where)
        if not re.fullmatch(r"[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}", mac):
            raise ConfigError(f"{e} MAC {mac!r} is not XX:XX:XX:XX:XX:XX", where=where)
        nics.append(VMNic(label=e, model=kv.get(f"{e}.virtualdev", "e1000").lower(), mac=mac.lower(),
                          network=kv.get(f"{e}.networkname", kv.get(f"{e}.vnet", "")),
                          connected=_true(kv.get(f"{e}.startconnected", "TRUE")), address_type=atype))

    guest_os = kv.get("guestos", "")
    num_cpu, cores, memory = _int(kv, "numvcpus", 1, where), _int(kv, "cpuid.corespersocket", 1, where), \
        _int(kv, "memsize", 1024, where)
    check_hardware(num_cpu, cores, memory, where)
    return SourceVM(
        name=name,
        uuid_bios=bios_uuid(kv.get("uuid.bios"), where),
        uuid_instance=bios_uuid(kv.get("vc.uuid"), where) if kv.get("vc.uuid") else None,
        guest_id=vsphere_guest_id(guest_os),
        guest_full_name=guest_os,
        firmware="efi" if kv.get("firmware", "bios").lower() == "efi" else "bios",
        secure_boot=_true(kv.get("uefi.secureboot.enabled")),
        vtpm=_true(kv.get("vtpm.present")),
        num_cpu=num_cpu,
        cores_per_socket=cores,
        memory_mb=memory,
        cpu_hot_add=_true(kv.get("vcpu.hotadd")),
        mem_hot_add=_true(kv.get("mem.hotadd")),
        # the same keys vSphere's extraConfig shows (read_vmx lower-cases them). Fault Tolerance is
        # not read from a .vmx: ESXi writes ftcpt.* keys (e.g. ftcpt.ftEncryptionMode) on VMs without FT.
        cpu_hot_remove=_true(kv.get("vcpu.hotremove")),
        disk_enable_uuid=_true(kv.get("disk.enableuuid")),
        numa_node_affinity=[n.strip() for n in kv.get("numa.nodeaffinity", "").split(",") if n.strip()],
        cbt_enabled=_true(kv.get("ctkenabled")),
        controllers=controllers,
        disks=disks,
        cdroms=cdroms,
        nics=nics,
        usb_controllers=sum(1 for k in ("usb.present", "ehci.present", "usb_xhci.present") if _true(kv.get(k))),
        pci_passthrough=[k.split(".")[0] for k in kv if re.fullmatch(r"pcipassthru\d+\.present", k) and _true(kv[k])],
        serial_ports=sum(1 for k in kv if re.fullmatch(r"serial\d+\.present", k) and _true(kv[k])),
        source="vmx",
        extra={"vmx_path": where, "guestOS": guest_os, "virtualHW.version": kv.get("virtualhw.version", ""),
               "nic_pci_slots": {n.label: kv.get(f"{n.label}.pcislotnumber") for n in nics},
               **({"vmx_dir": str(base_dir)} if base_dir is not None else {}),
               **({"vmx_warnings": warnings} if warnings else {})},
    )
