"""Pure config builder: hand-off (+ a resolved vmid) -> the Proxmox VM config.

No I/O: the result is data the flow sends (or prints under --dry-run) and the tests
compare with golden files. Decisions that make the migrated VM boot live here:
firmware (OVMF + efidisk0 for EFI sources, pre-enrolled keys for Secure Boot, tpmstate0
v2.0 for a vTPM), bus (VirtIO SCSI single with one iothread per disk), cache, discard,
the source MAC on virtio NICs, the source BIOS UUID in smbios1, and the boot order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from guestprep.checks.vm.target import PROXMOX_DISK_SLOTS, resolve_ostype
from guestprep.errors import ConfigError
from guestprep.ostype import ostype_for
from guestprep.finalize.strategy import StrategyDecision, decide
from guestprep.handoff import DiskLocator, Handoff
from guestprep.models import Readiness
from guestprep.target_policy import WRITEBACK_WARNING, proxmox_name

# Proxmox (PVE::Storage::check_volume_access, pve-storage src/PVE/Storage.pm) refuses a
# filesystem path (import-from=/...) to anyone but root@pam: an API token, even
# root@pam!name, gets "Only root can pass arbitrary filesystem paths."
PATH_IMPORT_USER = "root@pam"
SOURCE_BUS = {"lsilogic": "LSI Logic SCSI", "lsisas": "LSI Logic SAS", "pvscsi": "VMware Paravirtual SCSI",
              "buslogic": "BusLogic SCSI", "sata": "SATA", "nvme": "NVMe", "ide": "IDE"}

MAX_SCSI = PROXMOX_DISK_SLOTS["scsi"]  # scsi0..scsi30 (VM-DISK-COUNT checks the same limit at preflight)


@dataclass
class BuildNote:
    """What building the VM config noticed (not a check finding): an error stops the create."""

    level: str   # error | warning | info
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"level": self.level, "message": self.message}


@dataclass
class SataFirstSwitch:
    """Second phase of the Windows sata-first strategy, applied after the first boot."""

    system_from: str        # "sata0"
    system_to: str          # "scsi0"
    disk_options: str       # options for the system disk on its final bus
    dummy_slot: str         # the small VirtIO disk that made Windows bind vioscsi
    boot: str               # final boot order

    def to_dict(self) -> dict[str, str]:
        return dict(self.__dict__)


@dataclass
class VmBuild:
    vmid: int
    node: str
    params: dict[str, Any]                    # POST /nodes/{node}/qemu body
    disk_slots: dict[str, DiskLocator]        # slot -> where its data comes from
    created_volumes: list[str] = field(default_factory=list)  # slots this run allocates/imports
    foreign_volumes: list[str] = field(default_factory=list)  # volids attached but not created here
    findings: list[BuildNote] = field(default_factory=list)
    switch: SataFirstSwitch | None = None
    expected_macs: list[str] = field(default_factory=list)
    expected_addresses: list[str] = field(default_factory=list)
    strategy: StrategyDecision | None = None
    bus_changes: list[dict[str, str]] = field(default_factory=list)

    @property
    def blocked(self) -> list[str]:
        return [f.message for f in self.findings if f.level == "error"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "vmid": self.vmid, "node": self.node, "params": self.params,
            "findings": [f.to_dict() for f in self.findings],
            "switch": self.switch.to_dict() if self.switch else None,
            "foreign_volumes": self.foreign_volumes,
            "expected_macs": self.expected_macs, "expected_addresses": self.expected_addresses,
            "strategy": self.strategy.to_dict() if self.strategy else None, "bus_changes": self.bus_changes,
        }


def sanitise_tag(tag: str) -> str:
    t = re.sub(r"[^a-z0-9_\-+.]+", "-", tag.lower()).strip("-")
    return t if re.match(r"[a-z0-9_]", t or "") else ""


def _description(h: Handoff) -> str:
    vm = h.vm
    origin = h.origin.get("kind", vm.source)
    lines = [
        "Migrated from VMware by guestprep.",
        f"source: {origin} {h.origin.get('path') or vm.moref or ''}".rstrip(),
        f"source name: {vm.name}",
        f"source guest: {vm.guest_id or '?'} firmware={vm.firmware} bios-uuid={vm.uuid_bios or '?'}",
        f"hand-off created: {h.created or '?'}",
    ]
    if h.guest_facts:
        lines.append(f"guest facts sha256: {h.guest_facts.sha256} readiness: {h.guest_facts.readiness or 'unknown'}")
    return "\n".join(lines)


def build_config(h: Handoff, vmid: int, *, strategy: str | None = None,
                 import_volids: dict[str, str] | None = None, auth_user: str | None = None) -> VmBuild:
    """``strategy``: an explicit --strategy (else the policy's, else from the evidence).
    ``import_volids``: disk label -> an 'import' volume found on the node for its import path.
    ``auth_user``: the API identity; anyone but root@pam cannot import from a path."""
    vm, pol = h.vm, h.policy
    if not pol.node:
        raise ConfigError("policy has no node (the Proxmox node to create the VM on)", where="policy: node")
    if not pol.storage:
        raise ConfigError("policy has no storage (where disks, EFI and TPM state go)", where="policy: storage")
    # the guestId, or what VMware Tools reports when the guestId is empty or generic (as VM-OSTYPE says)
    os_t = resolve_ostype(vm)[0] or ostype_for(vm.guest_id)
    findings: list[BuildNote] = []
    if h.guest_facts and h.guest_facts.readiness == Readiness.BLOCKED.value:
        findings.append(BuildNote("error", "guest facts say the guest is BLOCKED (preflight blockers not fixed): "
                                         "it would not boot on VirtIO"))
    elif not h.guest_facts:
        findings.append(BuildNote("info", "no guest facts in the hand-off: readiness not verified"))

    if vm.num_cpu % max(vm.cores_per_socket, 1) == 0:
        cores, sockets = vm.cores_per_socket, vm.num_cpu // vm.cores_per_socket
    else:
        cores, sockets = vm.num_cpu, 1
        findings.append(BuildNote("warning", f"{vm.num_cpu} vCPUs do not divide into {vm.cores_per_socket} cores per socket: using 1 socket"))

    tags = ["migrated"] + [t for t in (sanitise_tag(x) for x in pol.tags) if t and t != "migrated"]
    params: dict[str, Any] = {
        "vmid": vmid,
        "name": proxmox_name(pol.name or vm.name) or f"vm-{vmid}",
        "description": _description(h),
        "tags": ";".join(tags),
        "ostype": os_t.ostype,
        "cpu": pol.cpu,
        "sockets": sockets,
        "cores": cores,
        "memory": vm.memory_mb,
        "balloon": pol.balloon_mb if pol.balloon_mb is not None else vm.memory_mb,
        "scsihw": "virtio-scsi-single",
        "agent": "enabled=1,fstrim_cloned_disks=1",
    }
    if os_t.q35 or vm.firmware == "efi" or vm.vtpm:
        params["machine"] = "q35"
    if vm.firmware == "efi":
        params["bios"] = "ovmf"
        efi = f"{pol.storage}:1,efitype=4m,pre-enrolled-keys={1 if vm.secure_boot else 0}"
        params["efidisk0"] = efi + (f",format={pol.format}" if pol.format else "")
    elif vm.secure_boot:
        findings.append(BuildNote("warning", "Secure Boot flag set on a BIOS VM: ignored"))
    if vm.vtpm:
        params["tpmstate0"] = f"{pol.storage}:1,version=v2.0"
    if vm.uuid_bios:
        params["smbios1"] = f"uuid={vm.uuid_bios}"

    cache = pol.cache
    if cache == "writeback":
        findings.append(BuildNote("warning", WRITEBACK_WARNING))

    # ------------------------------------------------------------------ disks
    locators = {d.label: d for d in h.disks}
    carried = []
    for d in vm.disks:
        if d.independent or d.rdm_mode:
            why = f"RDM ({d.rdm_mode})" if d.rdm_mode else f"independent ({d.disk_mode})"
            findings.append(BuildNote("warning", f"disk {d.label} ({d.datastore_path or '?'}) is {why}: excluded; "
                                               "move its data separately (not captured by snapshots/conversion)"))
            continue
        carried.append(d)
    if not carried:
        raise ConfigError(f"VM {vm.name!r} has no disk that can be carried over", where="source_vm: disks")
    boot = vm.boot_disk()
    if boot not in carried:
        boot = carried[0]
        findings.append(BuildNote("warning", f"boot disk is excluded; booting from {boot.label} instead"))
    ordered = [boot] + [d for d in carried if d is not boot]
    if len(ordered) > MAX_SCSI:
        raise ConfigError(f"{len(ordered)} disks exceed Proxmox's {MAX_SCSI} SCSI slots", where="source_vm: disks")

    disk_opts = f"discard=on,iothread=1,ssd=1,cache={cache}"
    decision = decide(h, os_t.family, strategy)
    findings.append(BuildNote("info", f"strategy {decision.reason}"))
    findings.extend(BuildNote("warning", w) for w in decision.warnings)
    sata_first = decision.strategy == "sata-first"
    if sata_first and len(ordered) + 1 > MAX_SCSI:  # the VirtIO bind disk takes scsi{len(ordered)}
        raise ConfigError(f"{len(ordered)} disks and sata-first's VirtIO disk exceed Proxmox's {MAX_SCSI} SCSI "
                          "slots: give --strategy direct once a direct boot is proven, or carry fewer disks",
                          where="source_vm: disks")
    if sata_first and os_t.family != "windows":
        findings.append(BuildNote("warning", "sata-first is a Windows strategy; applied anyway as configured"))
    slots: dict[str, DiskLocator] = {}
    created, foreign = [], []
    bus_changes: list[dict[str, str]] = []
    path_refused: list[str] = []
    for i, d in enumerate(ordered):
        loc = locators.get(d.label)
        import_volid = (import_volids or {}).get(d.label) or (loc.import_volid if loc else None)
        if loc is None or not (loc.volid or import_volid or loc.import_from):
            raise ConfigError(f"disk {d.label} ({d.datastore_path or '?'}) has neither a converted volume (volid) "
                              "nor a path to import from: set policy volumes/datastores", where="hand-off: disks")
        slot = "sata0" if (sata_first and i == 0) else f"scsi{i}"
        opts = f"discard=on,ssd=1,cache={cache}" if slot.startswith("sata") else disk_opts
        if loc is not None and loc.serial:  # the guest's disk serial (disk.EnableUUID), as VM-DISK-SERIAL says
            opts += f",serial={loc.serial}"
        fmt = f",format={pol.format}" if pol.format else ""
        if loc.volid:
            value = f"{loc.volid},{opts}"
            foreign.append(loc.volid)
        elif import_volid:            # a volume id works for API tokens too
            value = f"{pol.storage}:0,import-from={import_volid}{fmt},{opts}"
            created.append(slot)
        else:
            assert loc.import_from is not None
            if auth_user is not None and auth_user != PATH_IMPORT_USER:
                path_refused.append(f"{d.label} ({loc.import_from})")
            if "," in loc.import_from or "=" in loc.import_from:
                raise ConfigError(f"import path {loc.import_from!r} contains ',' or '=', which a Proxmox "
                                  "property string cannot carry: rename or symlink it", where=f"hand-off: disks: {d.label}")
            value = f"{pol.storage}:0,import-from={loc.import_from}{fmt},{opts}"
            created.append(slot)
        params[slot] = value
        slots[slot] = loc
        if loc.serial:
            findings.append(BuildNote("info", f"disk {d.label}: serial={loc.serial} carried (the guest reads it "
                                              "with disk.EnableUUID)"))
        ctl = vm.controller(d.controller_key)
        kind = ctl.kind if ctl else "unknown"
        final = "scsi0" if slot == "sata0" else slot
        bus_changes.append({"disk": d.label, "from": f"{SOURCE_BUS.get(kind, kind)} ({ctl.label if ctl and ctl.label else kind})",
                            "to": f"VirtIO SCSI single ({final})" + (" after a first boot on sata0" if slot == "sata0" else "")})
    if path_refused:
        raise ConfigError(
            f"Proxmox lets only root@pam (password login) import from a filesystem path "
            f"(PVE::Storage::check_volume_access: \"Only root can pass arbitrary filesystem paths\"); you log in as "
            f"{auth_user}. Disk(s) {', '.join(path_refused)} have no volume id: put the file in the import/ "
            f"directory of an 'import'-content storage (policy import_storages, or a datastore mounted at "
            f"/mnt/pve/<storage>), convert it with guestprep-host convert (policy volumes), or log in as root@pam "
            f"with --password-env", where="hand-off: disks")
    for c in bus_changes:
        findings.append(BuildNote("info", f"bus change: {c['disk']} {c['from']} -> {c['to']}"))
    switch = None
    if sata_first:
        dummy = f"scsi{len(ordered)}"
        params[dummy] = f"{pol.storage}:1,{disk_opts}"
        created.append(dummy)
        system_loc = slots.get("sata0")
        system_opts = disk_opts + (f",serial={system_loc.serial}" if system_loc and system_loc.serial else "")
        switch = SataFirstSwitch("sata0", "scsi0", system_opts, dummy, "order=scsi0")
        params["boot"] = "order=sata0"
        findings.append(BuildNote("info", f"sata-first: first boot from sata0 with a 1 GiB VirtIO disk ({dummy}) so "
                                        "Windows binds vioscsi; then the system disk moves to scsi0"))
    else:
        params["boot"] = "order=scsi0"

    # ------------------------------------------------------------------ network
    missing = sorted({n.network or "(no portgroup)" for n in vm.nics if n.network not in pol.network_map})
    if missing:
        raise ConfigError(f"no network map entry for portgroup(s): {', '.join(missing)}", where="policy: network_map")
    macs = []
    for i, n in enumerate(vm.nics):
        t = pol.network_map[n.network]
        value = f"virtio={n.mac.upper()},bridge={t.bridge}"
        if t.tag is not None:
            value += f",tag={t.tag}"
        if not n.connected:
            value += ",link_down=1"
        params[f"net{i}"] = value
        macs.append(n.mac.lower())

    for what, items in (("CD-ROM", vm.cdroms), ("PCI passthrough", vm.pci_passthrough), ("vGPU", vm.vgpu),
                        ("SR-IOV NIC", vm.sriov_nics)):
        if items:
            findings.append(BuildNote("info", f"{len(items)} {what} device(s) not carried over"))
    return VmBuild(vmid=vmid, node=pol.node, params=params, disk_slots=slots, created_volumes=created,
                   foreign_volumes=foreign, findings=findings, switch=switch, expected_macs=macs,
                   expected_addresses=list(pol.expect_addresses or vm.guest_ips), strategy=decision,
                   bus_changes=bus_changes)
