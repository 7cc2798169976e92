"""Turn the raw property sets of one VM (pyVmomi objects) into a typed ``SourceVM``.

Pure: no I/O. ``props`` is the {property path: value} dict the PropertyCollector returned
for one VirtualMachine; ``ctx`` resolves host/cluster/network names collected in the
same retrieval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pyVmomi import vim

from guestprep.models import BUS_OF_KIND, SourceVM, VMController, VMDisk, VMNic

D = vim.vm.device

# most specific classes first: subclasses must win over their bases
_CONTROLLER_KINDS: list[tuple[type, str]] = [
    (D.VirtualLsiLogicSASController, "lsisas"),
    (D.ParaVirtualSCSIController, "pvscsi"),
    (D.VirtualLsiLogicController, "lsilogic"),
    (D.VirtualBusLogicController, "buslogic"),
    (D.VirtualAHCIController, "sata"),
    (D.VirtualSATAController, "sata"),
    (D.VirtualNVMEController, "nvme"),
    (D.VirtualIDEController, "ide"),
]
_NIC_MODELS: list[tuple[type, str]] = [
    (D.VirtualSriovEthernetCard, "sriov"),
    (D.VirtualVmxnet3, "vmxnet3"),
    (D.VirtualVmxnet2, "vmxnet2"),
    (D.VirtualE1000e, "e1000e"),
    (D.VirtualE1000, "e1000"),
    (D.VirtualPCNet32, "pcnet32"),
    (D.VirtualVmxnet, "vmxnet"),
]
_DISK_MODES = {
    "persistent": "persistent",
    "nonpersistent": "nonpersistent",
    "undoable": "undoable",
    "independent_persistent": "independent_persistent",
    "independent_nonpersistent": "independent_nonpersistent",
    "append": "append",
}


@dataclass
class Context:
    """Names of the other objects read in the same retrieval, by moref value."""

    hosts: dict[str, dict[str, Any]] = field(default_factory=dict)      # host -> {name, parent}
    computes: dict[str, dict[str, Any]] = field(default_factory=dict)   # cluster/compute -> {name, parent, cluster, rules}
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)    # folder -> {name, parent}
    datacenters: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: dict[str, str] = field(default_factory=dict)              # network moref -> name
    dvportgroups: dict[str, dict[str, Any]] = field(default_factory=dict)  # portgroup key -> {name, vlan}
    host_vlans: dict[str, dict[str, int]] = field(default_factory=dict)    # host -> {portgroup: vlan}

    def datacenter_path(self, moref: str) -> tuple[str | None, str | None]:
        """(datacenter name, inventory path like ``F0/DC0``) for the object ``moref``."""
        cur = moref
        for _ in range(64):  # inventory depth bound: a cycle in bad data must not hang us
            if cur in self.datacenters:
                dc = self.datacenters[cur]
                parts = [dc["name"]]
                parent = dc.get("parent")
                while parent in self.folders and self.folders[parent].get("parent"):
                    parts.insert(0, self.folders[parent]["name"])
                    parent = self.folders[parent]["parent"]
                return dc["name"], "/".join(parts)
            nxt = (self.hosts.get(cur) or self.computes.get(cur) or self.folders.get(cur) or {}).get("parent")
            if not nxt:
                return None, None
            cur = nxt
        return None, None


def _kind(obj: Any, table: list[tuple[type, str]]) -> str | None:
    for cls, name in table:
        if isinstance(obj, cls):
            return name
    return None


def _moref(obj: Any) -> str | None:
    return obj._moId if obj is not None and hasattr(obj, "_moId") else None


def _count_snapshots(trees: Any) -> int:
    return sum(1 + _count_snapshots(t.childSnapshotList) for t in trees or [])


def _flag(value: Any) -> bool:
    """An extraConfig switch: vSphere stores "TRUE"/"true"/"1" as strings."""
    return str(value).strip().lower() in ("true", "1", "yes")


# extraConfig keys guestprep reads; everything else (guestinfo.* may hold secrets) is dropped on read
_CTK_KEY = re.compile(r"(?P<bus>scsi|sata|nvme|ide)(?P<ctl>\d+):(?P<unit>\d+)\.ctkEnabled", re.IGNORECASE)


def _extra_config(options: Any) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for opt in options or []:
        key = str(getattr(opt, "key", "") or "")
        if key in ("disk.EnableUUID", "numa.nodeAffinity") or _CTK_KEY.fullmatch(key):
            wanted[key.lower()] = "" if getattr(opt, "value", None) is None else str(opt.value)
    return wanted


def _disk(dev: Any, boot_keys: set[int]) -> VMDisk:
    b = dev.backing
    capacity = dev.capacityInBytes if getattr(dev, "capacityInBytes", None) else (dev.capacityInKB or 0) * 1024
    rdm = None
    if isinstance(b, D.VirtualDisk.RawDiskMappingVer1BackingInfo):
        rdm = b.compatibilityMode or "virtualMode"
    thin = getattr(b, "thinProvisioned", None)
    return VMDisk(
        key=dev.key,
        label=dev.deviceInfo.label if dev.deviceInfo else f"disk {dev.key}",
        controller_key=dev.controllerKey if dev.controllerKey is not None else -1,
        unit_number=dev.unitNumber if dev.unitNumber is not None else -1,
        capacity_bytes=int(capacity or 0),
        datastore_path=getattr(b, "fileName", "") or "",
        thin=bool(thin) if thin is not None else None,
        disk_mode=_DISK_MODES.get(getattr(b, "diskMode", "") or "persistent", getattr(b, "diskMode", "persistent")),
        sharing=getattr(b, "sharing", None) or "sharingNone",
        rdm_mode=rdm,
        uuid=getattr(b, "uuid", None) or getattr(b, "lunUuid", None),
        is_boot=dev.key in boot_keys,
        cbt_enabled=True if getattr(b, "changeId", None) else None,  # refined by extraConfig below
    )


def _nic(dev: Any, model: str, host: str | None, ctx: Context) -> VMNic:
    b = dev.backing
    network, vlan = "", None
    if isinstance(b, D.VirtualEthernetCard.DistributedVirtualPortBackingInfo) and b.port:
        pg = ctx.dvportgroups.get(b.port.portgroupKey or "", {})
        network, vlan = pg.get("name", b.port.portgroupKey or ""), pg.get("vlan")
    elif isinstance(b, D.VirtualEthernetCard.NetworkBackingInfo):
        network = ctx.networks.get(_moref(b.network) or "", b.deviceName or "")
        vlan = ctx.host_vlans.get(host or "", {}).get(network)
    elif isinstance(b, D.VirtualEthernetCard.OpaqueNetworkBackingInfo):
        network = b.opaqueNetworkId or ""
    conn = dev.connectable
    return VMNic(
        label=dev.deviceInfo.label if dev.deviceInfo else f"nic {dev.key}",
        model=model,
        mac=(dev.macAddress or "").lower(),
        network=network,
        vlan=vlan,
        connected=bool(conn.connected or conn.startConnected) if conn else True,
        address_type=(dev.addressType or "").lower(),
    )


def _cdrom(dev: Any) -> dict[str, Any]:
    b = dev.backing
    kind = "none"
    if isinstance(b, D.VirtualCdrom.IsoBackingInfo):
        kind = "iso"
    elif isinstance(b, (D.VirtualCdrom.AtapiBackingInfo, D.VirtualCdrom.PassthroughBackingInfo)):
        kind = "host"
    elif isinstance(b, (D.VirtualCdrom.RemotePassthroughBackingInfo, D.VirtualCdrom.RemoteAtapiBackingInfo)):
        kind = "client"
    return {
        "label": dev.deviceInfo.label if dev.deviceInfo else f"cdrom {dev.key}",
        "controller_key": dev.controllerKey,
        "unit_number": dev.unitNumber,
        "backing": kind,
        "file": getattr(b, "fileName", None) or getattr(b, "deviceName", None) or "",
        "connected": bool(dev.connectable.connected) if dev.connectable else False,
    }


def _affinity(vm_moref: str, cpu_affinity: Any, compute: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if cpu_affinity is not None and cpu_affinity.affinitySet:
        out["cpu_affinity"] = list(cpu_affinity.affinitySet)
    groups = {g.name: {_moref(v) for v in getattr(g, "vm", None) or []}
              for g in compute.get("groups", []) if isinstance(g, vim.cluster.VmGroup)}
    rules = []
    for r in compute.get("rules", []):  # disabled rules too: the check says they are not enforced
        entry = {"name": r.name, "enabled": bool(r.enabled), "mandatory": bool(r.mandatory)}
        if isinstance(r, (vim.cluster.AffinityRuleSpec, vim.cluster.AntiAffinityRuleSpec)):
            if vm_moref in {_moref(v) for v in r.vm or []}:
                kind = "vm-affinity" if isinstance(r, vim.cluster.AffinityRuleSpec) else "vm-anti-affinity"
                rules.append(dict(entry, type=kind))
        elif isinstance(r, vim.cluster.VmHostRuleInfo):
            if vm_moref in groups.get(r.vmGroupName, set()):
                kind = "vm-host-affinity" if r.affineHostGroupName else "vm-host-anti-affinity"
                rules.append(dict(entry, type=kind,
                                  host_group=r.affineHostGroupName or r.antiAffineHostGroupName))
    if rules:
        out["rules"] = rules
    return out


def to_source_vm(moref: str, props: dict[str, Any], ctx: Context) -> SourceVM:
    name = props.get("name") or moref
    devices = props.get("config.hardware.device") or []
    boot_opts = props.get("config.bootOptions")
    boot_keys = {e.deviceKey for e in (getattr(boot_opts, "bootOrder", None) or [])
                 if isinstance(e, vim.vm.BootOptions.BootableDiskDevice)}
    host = _moref(props.get("runtime.host"))
    host_info = ctx.hosts.get(host or "", {})
    compute = ctx.computes.get(host_info.get("parent") or "", {})
    dc_name, dc_path = ctx.datacenter_path(host) if host else (None, None)

    vm = SourceVM(name=name, moref=moref, source="vsphere")
    vm.uuid_bios = props.get("config.uuid")
    vm.uuid_instance = props.get("config.instanceUuid")
    vm.power_state = str(props.get("runtime.powerState") or "unknown")
    vm.guest_id = props.get("config.guestId") or ""
    vm.guest_full_name = props.get("config.guestFullName") or ""
    vm.firmware = props.get("config.firmware") or "bios"
    vm.secure_boot = bool(getattr(boot_opts, "efiSecureBootEnabled", False))
    vm.num_cpu = int(props.get("config.hardware.numCPU") or 1)
    vm.cores_per_socket = int(props.get("config.hardware.numCoresPerSocket") or 1)
    vm.memory_mb = int(props.get("config.hardware.memoryMB") or 0)
    vm.cpu_hot_add = bool(props.get("config.cpuHotAddEnabled"))
    vm.mem_hot_add = bool(props.get("config.memoryHotAddEnabled"))
    vm.cpu_hot_remove = bool(props.get("config.cpuHotRemoveEnabled"))
    vm.tools_guest_full_name = props.get("guest.guestFullName") or ""
    vm.fault_tolerance = props.get("config.ftInfo") is not None
    extra_config = _extra_config(props.get("config.extraConfig"))
    vm.disk_enable_uuid = _flag(extra_config.get("disk.enableuuid", ""))
    vm.numa_node_affinity = [n.strip() for n in extra_config.get("numa.nodeaffinity", "").split(",") if n.strip()]
    if compute.get("cluster"):
        vm.cluster_services = {k: bool(compute.get(k)) for k in ("drs", "dpm", "ha")}
    vm.cbt_enabled = bool(props.get("config.changeTrackingEnabled"))
    snap = props.get("snapshot")
    vm.snapshot_count = _count_snapshots(snap.rootSnapshotList) if snap else 0
    vm.consolidation_needed = bool(props.get("runtime.consolidationNeeded"))
    vm.tools_status = _str(props.get("guest.toolsStatus"))
    vm.tools_running = _str(props.get("guest.toolsRunningStatus"))
    vm.tools_version = _str(props.get("guest.toolsVersion"))
    vm.guest_hostname = props.get("guest.hostName") or None
    vm.guest_ips = _guest_ips(props.get("guest.ipAddress"), props.get("guest.net"))
    vm.host = host_info.get("name")
    vm.cluster = compute.get("name") if compute.get("cluster") else None
    vm.datacenter = dc_name
    vm.affinity = _affinity(moref, props.get("config.cpuAffinity"), compute)
    if dc_path:
        vm.extra["datacenter_path"] = dc_path
    if props.get("config.template"):
        vm.extra["template"] = True
    if props.get("config.hardware.device") is None:
        vm.extra["config_unavailable"] = True  # orphaned/inaccessible VM: vCenter has no config

    usb_devices = 0
    for dev in devices:
        kind = _kind(dev, _CONTROLLER_KINDS)
        if kind:
            vm.controllers.append(VMController(
                key=dev.key, kind=kind, bus_number=dev.busNumber or 0,
                sharing=str(getattr(dev, "sharedBus", None) or "noSharing"),
                label=dev.deviceInfo.label if dev.deviceInfo else kind))
        elif isinstance(dev, D.VirtualDisk):
            vm.disks.append(_disk(dev, boot_keys))
        elif isinstance(dev, D.VirtualCdrom):
            vm.cdroms.append(_cdrom(dev))
        elif isinstance(dev, D.VirtualEthernetCard):
            model = _kind(dev, _NIC_MODELS) or dev.__class__.__name__.split(".")[-1].lower()
            vm.nics.append(_nic(dev, model, host, ctx))
            if model == "sriov":
                vm.sriov_nics.append(vm.nics[-1].label)
        elif isinstance(dev, (D.VirtualUSBController, D.VirtualUSBXHCIController)):
            vm.usb_controllers += 1
        elif isinstance(dev, D.VirtualUSB):
            usb_devices += 1
        elif isinstance(dev, D.VirtualPCIPassthrough):
            label = dev.deviceInfo.label if dev.deviceInfo else f"pci {dev.key}"
            if isinstance(dev.backing, D.VirtualPCIPassthrough.VmiopBackingInfo):
                vm.vgpu.append(dev.backing.vgpu or label)
            else:
                vm.pci_passthrough.append(label)
        elif isinstance(dev, D.VirtualSCSIPassthrough):
            vm.scsi_passthrough.append(dev.deviceInfo.label if dev.deviceInfo else f"scsi passthrough {dev.key}")
        elif isinstance(dev, D.VirtualSerialPort):
            vm.serial_ports += 1
        elif isinstance(dev, D.VirtualTPM):
            vm.vtpm = True
    if usb_devices:
        vm.extra["usb_devices"] = usb_devices
    _per_disk(vm, extra_config)
    if vm.disks and not boot_keys:
        # no explicit boot order: the BIOS/EFI default is the first disk in bus order
        first = min(vm.disks, key=lambda d: (_bus_rank(vm.controller(d.controller_key)), d.controller_key, d.unit_number))
        first.is_boot = True
    return vm


def _per_disk(vm: SourceVM, extra_config: dict[str, str]) -> None:
    """Per-disk CBT (extraConfig wins over the changeId guess) and the serial the guest reads."""
    for d in vm.disks:
        ctrl = vm.controller(d.controller_key)
        bus = BUS_OF_KIND.get(ctrl.kind, "") if ctrl else ""
        if ctrl is not None:
            # vmx device names: scsi0:1, sata0:0, nvme0:0, ide1:0 (controller bus number, unit)
            ctk = extra_config.get(f"{bus}{ctrl.bus_number}:{d.unit_number}.ctkenabled")
            if ctk is not None:
                d.cbt_enabled = _flag(ctk)
        if d.cbt_enabled is None and not vm.cbt_enabled:
            d.cbt_enabled = False  # CBT off for the VM: no disk is tracked
        if vm.disk_enable_uuid and bus == "scsi" and d.uuid and not d.rdm_mode:
            # VMware reports the backing uuid as the SCSI serial (VPD page 0x80) when disk.EnableUUID is set
            d.serial = re.sub(r"[^0-9a-f]", "", d.uuid.lower()) or None


def _bus_rank(c: VMController | None) -> int:
    # VMware firmware looks at IDE, then SCSI, then SATA, then NVMe when no boot order is set
    order = {"ide": 0, "lsilogic": 1, "lsisas": 1, "pvscsi": 1, "buslogic": 1, "sata": 2, "nvme": 3}
    return order.get(c.kind, 9) if c else 9


def _str(v: Any) -> str | None:
    return str(v) if v not in (None, "") else None


def _guest_ips(primary: Any, nets: Any) -> list[str]:
    ips: list[str] = []
    if primary:
        ips.append(primary)
    for n in nets or []:
        for ip in n.ipAddress or []:
            if ip not in ips:
                ips.append(ip)
    return ips
