"""Map a VM's device list straight from the answer's XML to the SourceVM lists.

The device list is most of a fleet-wide answer (~12 devices, ~110 elements per VM) and most
of the mapping time: decoding it into records, then testing each record against a dozen
classes, costs ~10x more than reading the few fields guestprep keeps. Here each
``<VirtualDevice>`` is classified once per xsi:type (a cached table built from the same
class tables :mod:`mapping` uses) and only the fields of devices guestprep keeps are read.

Everything else of the VM (names, CPU, Tools, snapshots, extraConfig, whatever properties
are added later) is mapped by :func:`mapping.to_source_vm` itself; only the device loop is
replaced, and :func:`to_source_vm` falls back to the generic path for any device list it
does not read (see :func:`parse_devices`). tests/vsphere/test_fastmap.py holds both paths
to the same SourceVM over the simulated fleet and over pyVmomi-serialized shapes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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

# leaf elements <tag attrs>text</tag>: the fields guestprep reads are leaves
_LEAF = re.compile(rb"<([A-Za-z_][\w.-]*)(?:\s[^>]*)?>([^<]*)</\1>")
_XSI = re.compile(rb'[A-Za-z_][\w.-]*:type="([^"]*)"')


@dataclass(slots=True)
class _Dev:
    """The parts of one <VirtualDevice> guestprep reads."""

    cls: type
    role: str
    model: str | None
    leaves: dict[bytes, bytes]          # leaf fields of the device itself (not of its backing)
    has_device_info: bool
    has_connectable: bool
    backing_cls: type | None
    backing: dict[bytes, bytes]         # leaf fields of the backing (its parent chain cut off)
    has_port: bool

    def int(self, name: bytes) -> int | None:
        v = self.leaves.get(name)
        return None if v is None else int(v or 0)

    def str(self, name: bytes, where: str = "leaves") -> str | None:
        v = getattr(self, where).get(name)
        return None if v is None else text(v)

    def label(self) -> str | None:
        # dev.deviceInfo.label of a fastsoap record: None when deviceInfo has no label
        return self.str(b"label")


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


_roles: dict[bytes, tuple[type, str, str | None]] = {}


def _classify(xsi: bytes) -> tuple[type, str, str | None]:
    found = _roles.get(xsi)
    if found is None:
        cls = fastsoap._wsdl_type(xsi.decode())
        if not isinstance(cls, type) or not issubclass(cls, D.VirtualDevice):
            raise NotUnderstood(f"device type {xsi!r}")
        found = _roles[xsi] = (cls, *_role(cls))
    return found


def _section(body: bytes, tag: bytes) -> tuple[bytes, bytes, int, int] | None:
    """(attrs, inner, start, end) of the one <tag> child in body; None when absent."""
    start = body.find(b"<" + tag)
    if start < 0:
        return None
    after = body[start + 1 + len(tag):start + 2 + len(tag)]
    if after not in (b">", b" "):
        raise NotUnderstood(f"<{tag.decode()}...> is not the element expected")
    gt = body.find(b">", start)
    close = body.find(b"</" + tag + b">", gt)
    if close < 0 or body.find(b"<" + tag, start + 1, close) >= 0:
        raise NotUnderstood(f"nested or open <{tag.decode()}>")
    return body[start + 1 + len(tag):gt], body[gt + 1:close], start, close + len(tag) + 3


_device_heads: dict[bytes, tuple[type, str, str | None]] = {}  # "<VirtualDevice xsi:type=..." -> _classify
_backing_types: dict[bytes, type] = {}                         # <backing> attributes -> its class


def parse_devices(raw: bytes) -> list[_Dev]:
    """The devices guestprep maps, in answer order. Raises NotUnderstood for shapes it does not read.

    The fields read are leaves (``<key>``, ``<label>``, ``<fileName>``...) that occur once in
    a device or its backing; a backing's ``<parent>`` (the snapshot chain) is cut off first,
    so its fileName is not taken for the disk's.
    """
    if b"/>" in raw:  # an empty element written short: ElementTree reads it as "", we would miss it
        raise NotUnderstood("self-closing elements")
    pieces = raw.split(b"</VirtualDevice>")
    if pieces[-1].strip() or raw.count(b"<VirtualDevice") != len(pieces) - 1:
        raise NotUnderstood("a device list that is not a sequence of <VirtualDevice>")
    out = []
    for piece in pieces[:-1]:
        gt = piece.find(b">")
        head = piece[:gt]
        found = _device_heads.get(head)
        if found is None:
            at = piece.find(b':type="', 15, gt)  # xsi:type, whatever the prefix
            if at < 0 or not piece.startswith(b"<VirtualDevice "):
                raise NotUnderstood("a device list item that is not a <VirtualDevice xsi:type=...>")
            found = _device_heads[head] = _classify(piece[at + 7:piece.find(b'"', at + 7)])
        cls, role, model = found
        if not role:
            continue  # keyboard, video card, PCI/PS2/SIO controllers...: nothing guestprep keeps
        body = piece[gt + 1:]
        backing = _section(body, b"backing")
        backing_cls, backing_leaves, has_port = None, {}, False
        if backing is not None:
            attrs, inner, start, end = backing
            backing_cls = _backing_types.get(attrs)
            if backing_cls is None:
                bm = _XSI.search(attrs)
                backing_cls = fastsoap._wsdl_type(bm.group(1).decode()) if bm else None
                if not isinstance(backing_cls, type):
                    raise NotUnderstood("a backing of unknown type")
                _backing_types[attrs] = backing_cls
            cut = inner.find(b"<parent")
            if cut >= 0:
                inner = inner[:cut]
            backing_leaves = dict(_LEAF.findall(inner))
            has_port = b"<port>" in inner or b"<port " in inner
            outside = body[:start] + body[end:]  # whole elements on both sides: no leaf spans the seam
        else:
            outside = body
        out.append(_Dev(cls, role, model, dict(_LEAF.findall(outside)), b"<deviceInfo" in outside,
                        b"<connectable" in outside, backing_cls, backing_leaves, has_port))
    return out


def _isa(cls: type | None, base: Any) -> bool:
    return cls is not None and issubclass(cls, base)


def _bool(v: bytes | None) -> bool | None:
    return None if v is None else _BOOL.get(v.strip(), False)


def _disk(d: _Dev, boot_keys: set[int]) -> VMDisk:
    """mapping._disk, read from the XML."""
    b = d.backing
    capacity = d.int(b"capacityInBytes") or (d.int(b"capacityInKB") or 0) * 1024
    key = d.int(b"key")
    mode = d.str(b"diskMode", "backing") or "persistent"
    label = d.label() if d.has_device_info else f"disk {key}"
    controller_key, unit = d.int(b"controllerKey"), d.int(b"unitNumber")
    return VMDisk(
        key=key, label=label,
        controller_key=controller_key if controller_key is not None else -1,
        unit_number=unit if unit is not None else -1,
        capacity_bytes=int(capacity or 0),
        datastore_path=d.str(b"fileName", "backing") or "",
        thin=_bool(b.get(b"thinProvisioned")),
        disk_mode=mapping._DISK_MODES.get(mode, mode),
        sharing=d.str(b"sharing", "backing") or "sharingNone",
        rdm_mode=((d.str(b"compatibilityMode", "backing") or "virtualMode")
                  if _isa(d.backing_cls, _RDM) else None),
        uuid=d.str(b"uuid", "backing") or d.str(b"lunUuid", "backing"),
        is_boot=key in boot_keys,
        cbt_enabled=True if d.str(b"changeId", "backing") else None,
    )


def _nic(d: _Dev, host: str | None, ctx: mapping.Context) -> VMNic:
    """mapping._nic, read from the XML."""
    network, vlan = "", None
    if _isa(d.backing_cls, _DVPORT):
        if d.has_port:
            key = d.str(b"portgroupKey", "backing")
            pg = ctx.dvportgroups.get(key or "", {})
            network, vlan = pg.get("name", key or ""), pg.get("vlan")
    elif _isa(d.backing_cls, _NETWORK):
        network = ctx.networks.get(d.str(b"network", "backing") or "", d.str(b"deviceName", "backing") or "")
        vlan = ctx.host_vlans.get(host or "", {}).get(network)
    elif _isa(d.backing_cls, _OPAQUE):
        network = d.str(b"opaqueNetworkId", "backing") or ""
    connected = True
    if d.has_connectable:
        connected = bool(_bool(d.leaves.get(b"connected")) or _bool(d.leaves.get(b"startConnected")))
    return VMNic(
        label=d.label() if d.has_device_info else f"nic {d.int(b'key')}",
        model=d.model or "", mac=(d.str(b"macAddress") or "").lower(), network=network, vlan=vlan,
        connected=connected, address_type=(d.str(b"addressType") or "").lower())


def _cdrom(d: _Dev) -> dict[str, Any]:
    """mapping._cdrom, read from the XML."""
    kind = "none"
    if _isa(d.backing_cls, _ISO):
        kind = "iso"
    elif _isa(d.backing_cls, _HOST_CD):
        kind = "host"
    elif _isa(d.backing_cls, _CLIENT_CD):
        kind = "client"
    return {
        "label": d.label() if d.has_device_info else f"cdrom {d.int(b'key')}",
        "controller_key": d.int(b"controllerKey"),
        "unit_number": d.int(b"unitNumber"),
        "backing": kind,
        "file": d.str(b"fileName", "backing") or d.str(b"deviceName", "backing") or "",
        "connected": bool(_bool(d.leaves.get(b"connected"))) if d.has_connectable else False,
    }


def add_devices(vm: SourceVM, devices: list[_Dev], boot_keys: set[int], host: str | None,
                ctx: mapping.Context) -> None:
    """The device loop of mapping.to_source_vm over parsed devices."""
    usb_devices = 0
    for d in devices:
        role = d.role
        if role == "controller":
            vm.controllers.append(VMController(
                key=d.int(b"key"), kind=d.model, bus_number=d.int(b"busNumber") or 0,
                sharing=d.str(b"sharedBus") or "noSharing",
                label=d.label() if d.has_device_info else d.model))
        elif role == "disk":
            vm.disks.append(_disk(d, boot_keys))
        elif role == "cdrom":
            vm.cdroms.append(_cdrom(d))
        elif role == "nic":
            vm.nics.append(_nic(d, host, ctx))
            if d.model == "sriov":
                vm.sriov_nics.append(vm.nics[-1].label)
        elif role == "usb_controller":
            vm.usb_controllers += 1
        elif role == "usb":
            usb_devices += 1
        elif role == "pci":
            label = d.label() if d.has_device_info else f"pci {d.int(b'key')}"
            if _isa(d.backing_cls, _VGPU):
                vm.vgpu.append(d.str(b"vgpu", "backing") or label)
            else:
                vm.pci_passthrough.append(label)
        elif role == "scsi_passthrough":
            vm.scsi_passthrough.append(d.label() if d.has_device_info else f"scsi passthrough {d.int(b'key')}")
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
        rest = props.with_value(DEVICES, []) if isinstance(props, RawProps) else {**props, DEVICES: []}
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
