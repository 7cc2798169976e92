"""Map a VM's device list straight from the answer's XML to the SourceVM lists.

The device list is most of a fleet-wide answer (~12 devices, ~110 elements per VM) and most
of the mapping time: decoding it into records, then testing each record against a dozen
classes, costs ~10x more than reading the few fields guestprep keeps. Here each
``<VirtualDevice>`` is classified once per xsi:type (a cached table built from the same
class tables :mod:`mapping` uses) and only the fields of devices guestprep keeps are read.

Everything else of the VM (names, CPU, Tools, snapshots, extraConfig, whatever properties
are added later) is mapped by :func:`mapping.to_source_vm` itself, from a plain dict of the
VM's properties decoded in one pass (:meth:`fastscan.RawProps.decoded`); only the device loop
is replaced, and :func:`to_source_vm` falls back to the generic path for any device list it
does not read (see :func:`parse_devices`). tests/vsphere/test_fastmap_*.py and
test_fleet_records.py hold both paths to the same SourceVM, field by field, over simulated
fleets and over pyVmomi-serialized shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyVmomi import vim

from guestprep.models import SourceVM, VMController, VMDisk, VMNic
from guestprep.vsphere import fastsoap, mapping
from guestprep.vsphere import fastscan
from guestprep.vsphere.fastscan import DeferredArray, NotUnderstood, RawProps, text

D = vim.vm.device
DEVICES = "config.hardware.device"
# pyVmomi resolves nested types on every attribute access: look them up once
_RDM = D.VirtualDisk.RawDiskMappingVer1BackingInfo
_DVPORT = D.VirtualEthernetCard.DistributedVirtualPortBackingInfo
_NETWORK = D.VirtualEthernetCard.NetworkBackingInfo
_OPAQUE = D.VirtualEthernetCard.OpaqueNetworkBackingInfo
_ISO = D.VirtualCdrom.IsoBackingInfo
_HOST_CD = (D.VirtualCdrom.AtapiBackingInfo, D.VirtualCdrom.PassthroughBackingInfo)
_CLIENT_CD = (D.VirtualCdrom.RemotePassthroughBackingInfo, D.VirtualCdrom.RemoteAtapiBackingInfo)
_VGPU = D.VirtualPCIPassthrough.VmiopBackingInfo
_BOOT_DISK = vim.vm.BootOptions.BootableDiskDevice
_BOOL = {b"true": True, b"1": True, b"false": False, b"0": False}

# leaf elements <tag attrs>text</tag>: the fields guestprep reads are leaves. Possessive (*+, ?+):
# nothing a quantifier gave up could match the next part (a name char is neither space nor ">", text
# stops at "<"), so the matches are the same, found without backtracking: half the time of the plain
# pattern on a fleet's device lists, where most of the client's time is spent
_LEAF = re.compile(rb"<([A-Za-z_][\w.-]*+)(?:\s[^>]*+)?+>([^<]*+)</\1>")
_XSI = re.compile(rb'[A-Za-z_][\w.-]*:type="([^"]*)"')


def _role(cls: type) -> tuple[str, str | None]:
    """(role, model) of a device class, in the order of mapping.to_source_vm's device loop."""
    kind = next((name for c, name in mapping._CONTROLLER_KINDS if issubclass(cls, c)), None)
    if kind:
        return "controller", kind
    if issubclass(cls, D.VirtualDisk):
        return "disk", None
    if issubclass(cls, D.VirtualCdrom):
        return "cdrom", None
    if issubclass(cls, D.VirtualEthernetCard):
        model = next((name for c, name in mapping._NIC_MODELS if issubclass(cls, c)), None)
        return "nic", model or cls.__name__.split(".")[-1].lower()
    if issubclass(cls, (D.VirtualUSBController, D.VirtualUSBXHCIController)):
        return "usb_controller", None
    if issubclass(cls, D.VirtualUSB):
        return "usb", None
    if issubclass(cls, D.VirtualPCIPassthrough):
        return "pci", None
    if issubclass(cls, D.VirtualSCSIPassthrough):
        return "scsi_passthrough", None
    if issubclass(cls, D.VirtualSerialPort):
        return "serial", None
    if issubclass(cls, D.VirtualTPM):
        return "tpm", None
    return "", None


# ---- device list: read straight from the XML -------------------------------------------------
#
# parse_devices gives, per device guestprep keeps, one tuple (plain tuples: ~12 devices a VM,
# a fleet has tens of thousands):
#   (role, model, leaves, backing_cls, backing, has_device_info, has_connectable, has_port)
# leaves: the device's own leaf fields, tag -> raw text (its backing's left out);
# backing: the backing's leaf fields with its <parent> chain (a snapshot's base disks) cut off.


def _classify(xsi: bytes) -> tuple[type, str, str | None]:
    found = _roles.get(xsi)
    if found is None:
        cls = fastsoap._wsdl_type(xsi.decode())
        if not isinstance(cls, type) or not issubclass(cls, D.VirtualDevice):
            raise NotUnderstood(f"device type {xsi!r}")
        found = _roles[xsi] = (cls, *_role(cls))
    return found


_roles: dict[bytes, tuple[type, str, str | None]] = {}
_device_heads: dict[bytes, tuple[type, str, str | None]] = {}  # "<VirtualDevice xsi:type=..." -> _classify
_backing_types: dict[bytes, type] = {}                         # <backing> attributes -> its class


def _backing_class(attrs: bytes) -> type:
    found = _backing_types.get(attrs)
    if found is None:
        bm = _XSI.search(attrs)
        found = fastsoap._wsdl_type(bm.group(1).decode()) if bm else None
        if not isinstance(found, type):
            raise NotUnderstood("a backing of unknown type")
        _backing_types[attrs] = found
    return found


def parse_devices(raw: bytes) -> list[tuple]:
    """The devices guestprep maps, in answer order. Raises NotUnderstood for shapes it does not read.

    The fields read are leaves (``<key>``, ``<label>``, ``<fileName>``...) that occur once in
    a device or its backing; a backing's ``<parent>`` (the snapshot chain) is cut off first,
    so its fileName is not taken for the disk's. Leaves are found in place (the regex's
    pos/endpos): no slice of the answer is copied.
    """
    if b"/>" in raw:  # an empty element written short: ElementTree reads it as "", we would miss it
        raise NotUnderstood("self-closing elements")
    pieces = raw.split(b"</VirtualDevice>")
    if pieces[-1].strip() or raw.count(b"<VirtualDevice") != len(pieces) - 1:
        raise NotUnderstood("a device list that is not a sequence of <VirtualDevice>")
    del pieces[-1]
    out = []
    heads = _device_heads
    leaves_in = _LEAF.findall
    for piece in pieces:
        gt = piece.find(b">")
        found = heads.get(piece[:gt])
        if found is None:
            at = piece.find(b':type="', 15, gt)  # xsi:type, whatever the prefix
            if at < 0 or not piece.startswith(b"<VirtualDevice "):
                raise NotUnderstood("a device list item that is not a <VirtualDevice xsi:type=...>")
            found = heads[piece[:gt]] = _classify(piece[at + 7:piece.find(b'"', at + 7)])
        role = found[1]
        if not role:
            continue  # keyboard, video card, PCI/PS2/SIO controllers...: nothing guestprep keeps
        # bytes.find parses its arguments the slow way (~a third of its cost here): the searches run
        # over the whole piece and a hit outside the expected range is checked again within it
        start = piece.find(b"<backing")  # the head (before gt) holds no "<"
        if start < 0:  # controllers mostly: the same bytes in VM after VM, read once
            known = _bare.get(piece)
            if known is None:
                if len(_bare) >= 4096:
                    _bare.clear()
                known = _bare[piece] = (role, found[2], dict(leaves_in(piece, gt)), None, _NO_LEAVES,
                                        piece.find(b"<deviceInfo") >= 0, piece.find(b"<connectable") >= 0, False)
            out.append(known)
            continue
        bgt = piece.find(b">", start)
        if bgt < 0 or piece[start + 8:start + 9] not in _OPEN:
            raise NotUnderstood("<backing...> is not the element expected")
        close = piece.find(b"</backing>")
        if close < bgt or (piece.count(b"<backing") != 1  # one, or <backingObjectId>s: no <backing> inside
                           and (piece.find(b"<backing>", bgt, close) >= 0 or piece.find(b"<backing ", bgt, close) >= 0)):
            raise NotUnderstood("nested or open <backing>")
        end = close + 10
        cut = piece.find(b"<parent")
        if cut >= 0 and not bgt < cut < close:
            cut = piece.find(b"<parent", bgt, close)
        inner_end = cut if cut >= 0 else close
        leaves = dict(leaves_in(piece, gt, start))  # whole elements on both sides: no leaf spans the seam
        leaves.update(leaves_in(piece, end))
        out.append((role, found[2], leaves, _backing_class(piece[start + 8:bgt]),
                    dict(leaves_in(piece, bgt, inner_end)),
                    _outside(piece, b"<deviceInfo", start, end), _outside(piece, b"<connectable", start, end),
                    _inside(piece, b"<port>", bgt, inner_end) or _inside(piece, b"<port ", bgt, inner_end)))
    return out


_NO_LEAVES: dict[bytes, bytes] = {}
_bare: dict[bytes, tuple] = {}  # a device without backing, as the answer wrote it -> its parse (read only)
_OPEN = (b" ", b">")


def _outside(piece: bytes, tag: bytes, start: int, end: int) -> bool:
    """Whether tag occurs in piece outside [start, end) (the backing)."""
    at = piece.find(tag)
    return at >= 0 and (at < start or at >= end or piece.find(tag, end) >= 0)


def _inside(piece: bytes, tag: bytes, start: int, end: int) -> bool:
    """Whether tag occurs in piece within [start, end)."""
    at = piece.find(tag)
    return start <= at < end or (0 <= at < start and piece.find(tag, start, end) >= 0)


def _isa(cls: type | None, base: Any) -> bool:
    return cls is not None and issubclass(cls, base)


def _bool(v: bytes | None) -> bool | None:
    return None if v is None else _BOOL.get(v.strip(), False)


def _int(leaves: dict[bytes, bytes], name: bytes) -> int | None:
    v = leaves.get(name)
    return None if v is None else int(v or 0)


def _str(leaves: dict[bytes, bytes], name: bytes) -> str | None:
    v = leaves.get(name)
    return None if v is None else text(v)


def _label(leaves: dict[bytes, bytes], has_device_info: bool, default: str) -> str | None:
    """dev.deviceInfo.label as mapping reads it: None when deviceInfo has no label, the default
    when the device has no deviceInfo."""
    if not has_device_info:
        return default
    v = leaves.get(b"label")
    return None if v is None else text(v)


def _disk(leaves: dict, backing_cls: type | None, b: dict, has_info: bool, boot_keys: set[int]) -> VMDisk:
    """mapping._disk, read from the XML."""
    capacity = _int(leaves, b"capacityInBytes") or (_int(leaves, b"capacityInKB") or 0) * 1024
    key = _int(leaves, b"key")
    mode = _str(b, b"diskMode") or "persistent"
    controller_key, unit = _int(leaves, b"controllerKey"), _int(leaves, b"unitNumber")
    return VMDisk(
        key=key, label=_label(leaves, has_info, f"disk {key}"),
        controller_key=controller_key if controller_key is not None else -1,
        unit_number=unit if unit is not None else -1,
        capacity_bytes=int(capacity or 0),
        datastore_path=_str(b, b"fileName") or "",
        thin=_bool(b.get(b"thinProvisioned")),
        disk_mode=mapping._DISK_MODES.get(mode, mode),
        sharing=_str(b, b"sharing") or "sharingNone",
        rdm_mode=(_str(b, b"compatibilityMode") or "virtualMode") if _isa(backing_cls, _RDM) else None,
        uuid=_str(b, b"uuid") or _str(b, b"lunUuid"),
        is_boot=key in boot_keys,
        cbt_enabled=True if _str(b, b"changeId") else None,
    )


def _nic(d: tuple, host: str | None, ctx: mapping.Context) -> VMNic:
    """mapping._nic, read from the XML."""
    _, model, leaves, backing_cls, b, has_info, has_connectable, has_port = d
    network, vlan = "", None
    if _isa(backing_cls, _DVPORT):
        if has_port:
            key = _str(b, b"portgroupKey")
            pg = ctx.dvportgroups.get(key or "", {})
            network, vlan = pg.get("name", key or ""), pg.get("vlan")
    elif _isa(backing_cls, _NETWORK):
        network = ctx.networks.get(_str(b, b"network") or "", _str(b, b"deviceName") or "")
        vlan = ctx.host_vlans.get(host or "", {}).get(network)
    elif _isa(backing_cls, _OPAQUE):
        network = _str(b, b"opaqueNetworkId") or ""
    connected = True
    if has_connectable:
        connected = bool(_bool(leaves.get(b"connected")) or _bool(leaves.get(b"startConnected")))
    return VMNic(
        label=_label(leaves, has_info, f"nic {_int(leaves, b'key')}"),
        model=model or "", mac=(_str(leaves, b"macAddress") or "").lower(), network=network, vlan=vlan,
        connected=connected, address_type=(_str(leaves, b"addressType") or "").lower())


def _cdrom(leaves: dict, backing_cls: type | None, b: dict, has_info: bool, has_connectable: bool) -> dict[str, Any]:
    """mapping._cdrom, read from the XML."""
    kind = "none"
    if _isa(backing_cls, _ISO):
        kind = "iso"
    elif _isa(backing_cls, _HOST_CD):
        kind = "host"
    elif _isa(backing_cls, _CLIENT_CD):
        kind = "client"
    return {
        "label": _label(leaves, has_info, f"cdrom {_int(leaves, b'key')}"),
        "controller_key": _int(leaves, b"controllerKey"),
        "unit_number": _int(leaves, b"unitNumber"),
        "backing": kind,
        "file": _str(b, b"fileName") or _str(b, b"deviceName") or "",
        "connected": bool(_bool(leaves.get(b"connected"))) if has_connectable else False,
    }


def add_devices(vm: SourceVM, devices: list[tuple], boot_keys: set[int], host: str | None,
                ctx: mapping.Context) -> None:
    """The device loop of mapping.to_source_vm over parsed devices."""
    usb_devices = 0
    for d in devices:
        role, model, leaves, backing_cls, b, has_info, has_connectable, _ = d
        if role == "controller":
            vm.controllers.append(VMController(
                key=_int(leaves, b"key"), kind=model, bus_number=_int(leaves, b"busNumber") or 0,
                sharing=_str(leaves, b"sharedBus") or "noSharing",
                label=_label(leaves, has_info, model)))
        elif role == "disk":
            vm.disks.append(_disk(leaves, backing_cls, b, has_info, boot_keys))
        elif role == "cdrom":
            vm.cdroms.append(_cdrom(leaves, backing_cls, b, has_info, has_connectable))
        elif role == "nic":
            vm.nics.append(_nic(d, host, ctx))
            if model == "sriov":
                vm.sriov_nics.append(vm.nics[-1].label)
        elif role == "usb_controller":
            vm.usb_controllers += 1
        elif role == "usb":
            usb_devices += 1
        elif role == "pci":
            label = _label(leaves, has_info, f"pci {_int(leaves, b'key')}")
            if _isa(backing_cls, _VGPU):
                vm.vgpu.append(_str(b, b"vgpu") or label)
            else:
                vm.pci_passthrough.append(label)
        elif role == "scsi_passthrough":
            vm.scsi_passthrough.append(_label(leaves, has_info, f"scsi passthrough {_int(leaves, b'key')}"))
        elif role == "serial":
            vm.serial_ports += 1
        elif role == "tpm":
            vm.vtpm = True
    if usb_devices:
        vm.extra["usb_devices"] = usb_devices


def boot_keys(props: dict[str, Any]) -> set[int]:
    boot_opts = props.get("config.bootOptions")
    return {e.deviceKey for e in (getattr(boot_opts, "bootOrder", None) or [])
            if isinstance(e, _BOOT_DISK)}


def device_xml(props: Mapping[str, Any]) -> bytes | None:
    """The device list's XML when it is still unread: in a :class:`RawProps` (the fast path) or
    a :class:`DeferredArray`; None when it has to be (or was) decoded the generic way."""
    if isinstance(props, RawProps):
        found = props.unread(DEVICES)
        if found is None:
            return None
        try:
            attrs, content = fastscan.val_of(found)
        except NotUnderstood:
            return None
        if fastscan._val_type(attrs)[0] not in fastscan.DEFERRED_TYPES or b"<" not in content:
            return None
        return content
    raw = props.get(DEVICES)
    return raw.raw if isinstance(raw, DeferredArray) and not raw.decoded else None


def to_source_vm(moref: str, props: Mapping[str, Any], ctx: mapping.Context) -> SourceVM:
    """mapping.to_source_vm, with the device list read straight from the answer when it can be."""
    xml = device_xml(props)
    if xml is None:
        return mapping.to_source_vm(moref, props, ctx)
    try:
        devices = parse_devices(xml)
        if isinstance(props, RawProps):
            rest = props.decoded(DEVICES)  # a plain dict: mapping reads ~35 properties, some twice
            rest[DEVICES] = []
        else:
            rest = {**props, DEVICES: []}
        vm = mapping.to_source_vm(moref, rest, ctx)  # all but the devices
        keys = boot_keys(rest)
        add_devices(vm, devices, keys, mapping._moref(rest.get("runtime.host")), ctx)
        finish_devices(vm, rest, keys)
        return vm
    except (NotUnderstood, ValueError, UnicodeDecodeError):
        return mapping.to_source_vm(moref, props, ctx)  # decodes the list the generic way


def finish_devices(vm: SourceVM, props: dict[str, Any], keys: set[int]) -> None:
    """What mapping.to_source_vm does after its device loop (it ran on an empty list)."""
    mapping._per_disk(vm, mapping._extra_config(props.get("config.extraConfig")))
    if vm.disks and not keys:
        first = min(vm.disks, key=lambda d: (mapping._bus_rank(vm.controller(d.controller_key)),
                                             d.controller_key, d.unit_number))
        first.is_boot = True
