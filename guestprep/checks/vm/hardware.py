"""VM hardware that does not move: passthrough devices, vTPM state, Secure Boot, EFI, USB,
hot-add/remove, affinity, CBT, Fault Tolerance, NUMA affinity, the cluster's services."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.checks.vm.target import FORKLIFT_RULES
from guestprep.models import Severity, SourceVM


@check(
    id="VM-PASSTHROUGH", severity=Severity.BLOCKER, os="vm",
    title="No PCI or SCSI passthrough, SR-IOV or vGPU devices",
    rationale="Passthrough devices are tied to a physical host's PCI addresses or SCSI targets (tape "
              "drives, media changers) and VMware drivers; the guest loses them on Proxmox and may "
              "depend on them to boot or to serve.",
    remediation="Plan the equivalent Proxmox hostpci/mdev mapping on the target node, remove the "
                "device from the VM in vSphere before the cutover, and accept the downtime.",
)
def passthrough(vm: SourceVM) -> Iterable[Outcome]:
    found = ([("pci", x) for x in vm.pci_passthrough] + [("sriov", x) for x in vm.sriov_nics]
             + [("vgpu", x) for x in vm.vgpu] + [("scsi", x) for x in vm.scsi_passthrough])
    for kind, label in found:
        yield fail(label, f"{kind} device {label}", kind=kind)
    if not found:
        yield ok(vm.name, "no passthrough devices")


@check(
    id="VM-VTPM", severity=Severity.WARNING, os="vm",
    title="No virtual TPM (its state is not migrated)",
    rationale="The vTPM's keys stay in vSphere: BitLocker/LUKS volumes sealed to it ask for their "
              "recovery key on Proxmox, and Windows 11 needs a new TPM state there.",
    remediation="Suspend BitLocker (or re-seal LUKS to a passphrase) and keep the recovery keys "
                "before the cutover; add a tpmstate disk in Proxmox.",
)
def vtpm(vm: SourceVM) -> Iterable[Outcome]:
    yield fail(vm.name, "the VM has a vTPM") if vm.vtpm else ok(vm.name, "no vTPM")


@check(
    id="VM-SECURE-BOOT", severity=Severity.WARNING, os="vm",
    title="Secure Boot is off, or planned for on Proxmox",
    rationale="With Secure Boot the guest boots only through signed loaders: the Proxmox VM needs "
              "OVMF with pre-enrolled Microsoft keys, and unsigned drivers (old virtio) will not load.",
    remediation="Create the target with an EFI disk and pre-enrolled keys (finalize does this when "
                "secure_boot is true) and use signed virtio-win drivers.",
)
def secure_boot(vm: SourceVM) -> Iterable[Outcome]:
    if vm.secure_boot:
        yield fail(vm.name, "Secure Boot is enabled", firmware=vm.firmware)
    else:
        yield ok(vm.name, "Secure Boot is off")


@check(
    id="VM-EFI-FIRMWARE", severity=Severity.INFO, os="vm",
    title="Firmware type noted for the finalizer (EFI needs OVMF and an EFI disk)",
    rationale="A UEFI guest does not boot under SeaBIOS: the Proxmox VM needs bios=ovmf and an "
              "efidisk, and the boot entry may need re-creating on the new bus.",
    remediation="Nothing to do before the move; finalize sets bios=ovmf and adds an EFI disk.",
)
def efi_firmware(vm: SourceVM) -> Iterable[Outcome]:
    if vm.firmware == "efi":
        yield fail(vm.name, "firmware is EFI: the target needs OVMF and an EFI disk", firmware="efi")
    else:
        yield ok(vm.name, f"firmware is {vm.firmware}", firmware=vm.firmware)


@check(
    id="VM-USB", severity=Severity.WARNING, os="vm",
    title="No USB controllers or passed-through USB devices",
    rationale="USB dongles (licence keys) and host USB devices are tied to the ESXi host; they "
              "must be re-attached on the Proxmox node.",
    remediation="Note the devices and plan a usbN mapping on the target node; remove the USB "
                "controller if nothing uses it.",
)
def usb(vm: SourceVM) -> Iterable[Outcome]:
    devices = int(vm.extra.get("usb_devices", 0) or 0)
    if vm.usb_controllers or devices:
        yield fail(vm.name, f"{vm.usb_controllers} USB controller(s), {devices} USB device(s)",
                   controllers=vm.usb_controllers, devices=devices)
    else:
        yield ok(vm.name, "no USB")


@check(
    id="VM-HOTADD", severity=Severity.INFO, os="vm",
    title="CPU/memory hot-add and CPU hot-remove settings noted",
    rationale="Hot-add on VMware disables vNUMA for the guest; Proxmox needs hotplug and NUMA "
              "enabled explicitly for the same behaviour, and unplugging vCPUs needs the guest agent.",
    remediation="Decide whether the target needs hotplug (cpu,memory) and NUMA; finalize carries "
                "the setting over when asked.",
    references=(FORKLIFT_RULES + "cpu_memory_hotplug.rego",),
)
def hotadd(vm: SourceVM) -> Iterable[Outcome]:
    enabled = [n for n, on in (("cpu hot-add", vm.cpu_hot_add), ("memory hot-add", vm.mem_hot_add),
                               ("cpu hot-remove", vm.cpu_hot_remove)) if on]
    if enabled:
        yield fail(vm.name, f"enabled: {', '.join(enabled)}", hotplug=enabled)
    else:
        yield ok(vm.name, "hot-add and hot-remove disabled")


@check(
    id="VM-AFFINITY", severity=Severity.WARNING, os="vm",
    title="No CPU affinity or enabled DRS affinity rules",
    rationale="Affinity rules encode licensing or availability constraints (keep apart, keep on "
              "licensed hosts) that vSphere enforced and Proxmox will not know about.",
    remediation="Recreate the constraint on Proxmox (HA groups, node pinning, CPU affinity) and "
                "record it in the migration plan.",
)
def affinity(vm: SourceVM) -> Iterable[Outcome]:
    cpu = vm.affinity.get("cpu_affinity") or []
    rules = vm.affinity.get("rules") or []
    if cpu:
        yield fail("cpu", f"CPU affinity set to {cpu}", cpu_affinity=cpu)
    for r in rules:
        kind = f"{r.get('type')} rule {r.get('name')!r}{' (mandatory)' if r.get('mandatory') else ''}"
        if r.get("enabled", True):
            yield fail(r.get("name", "rule"), kind, rule=r)
        else:  # vSphere does not enforce a disabled rule: nothing to recreate, but say it exists
            yield ok(r.get("name", "rule"), f"{kind} is disabled: vSphere does not enforce it", rule=r)
    if not cpu and not rules:
        yield ok(vm.name, "no affinity")


@check(
    id="VM-CBT", severity=Severity.INFO, os="vm",
    title="Changed Block Tracking is enabled (needed for future warm copies)",
    rationale="Warm migration copies the disk while the VM runs, then only the changed blocks at "
              "cutover; that needs CBT. Cold copies work without it.",
    remediation="Enable CBT (ctkEnabled) in vSphere if you plan warm copies; it takes effect after "
                "a snapshot create/delete or power cycle. A disk with scsiX:Y.ctkEnabled=FALSE stays "
                "untracked while the VM has CBT on.",
    references=(FORKLIFT_RULES + "changed_block_tracking.rego",
                FORKLIFT_RULES + "changed_block_tracking_per_disk.rego"),
)
def cbt(vm: SourceVM) -> Iterable[Outcome]:
    if not vm.cbt_enabled:
        yield fail(vm.name, "CBT disabled")
        return
    yield ok(vm.name, "CBT enabled")
    for d in vm.disks:
        if d.cbt_enabled is False:
            yield fail(d.label, f"{d.label}: CBT is off for this disk although the VM has it on", disk=d.label)
        elif d.cbt_enabled:
            yield ok(d.label, f"{d.label}: CBT on")


@check(
    id="VM-FAULT-TOLERANCE", severity=Severity.WARNING, os="vm",
    title="Fault Tolerance is off",
    rationale="A Fault Tolerance VM runs a shadow copy on a second host; Proxmox has no equivalent "
              "(HA restarts, it does not mirror), and FT VMs take no snapshots, which the cutover's "
              "safety snapshot needs.",
    remediation="Turn Fault Tolerance off for the VM (vSphere: Fault Tolerance > Turn Off) before the "
                "cutover and plan Proxmox HA for it instead.",
    references=(FORKLIFT_RULES + "fault_tolerance.rego",),
)
def fault_tolerance(vm: SourceVM) -> Iterable[Outcome]:
    if vm.fault_tolerance:
        yield fail(vm.name, "Fault Tolerance is on (config.ftInfo is set)")
    else:
        yield ok(vm.name, "Fault Tolerance is off")


@check(
    id="VM-NUMA-AFFINITY", severity=Severity.WARNING, os="vm",
    title="No NUMA node affinity (numa.nodeAffinity)",
    rationale="numa.nodeAffinity pins the VM's memory and vCPUs to given NUMA nodes of the ESXi host, "
              "usually for latency-sensitive workloads; the Proxmox VM is not pinned unless you say so.",
    remediation="Recreate the placement on the Proxmox node (numaN: hostnodes=..., policy=bind, and "
                "CPU affinity) or accept an unpinned VM.",
    references=(FORKLIFT_RULES + "numa_affinity.rego",),
)
def numa_affinity(vm: SourceVM) -> Iterable[Outcome]:
    if vm.numa_node_affinity:
        nodes = ",".join(vm.numa_node_affinity)
        yield fail(vm.name, f"numa.nodeAffinity = {nodes}", numa_node_affinity=vm.numa_node_affinity)
    else:
        yield ok(vm.name, "no NUMA node affinity")


@check(
    id="VM-CLUSTER-SERVICES", severity=Severity.INFO, os="vm",
    title="Cluster services the VM relies on noted (DRS, DPM, HA)",
    rationale="In a DRS cluster vSphere balances the VM between hosts, DPM powers hosts off when idle, "
              "and HA restarts the VM after a host failure. Proxmox does none of this unless the VM is "
              "put in an HA group (and has no DRS/DPM equivalent).",
    remediation="Add the VM to a Proxmox HA group if it relied on vSphere HA; plan node placement by hand.",
    references=(FORKLIFT_RULES + "drs_enabled.rego", FORKLIFT_RULES + "dpm_enabled.rego",
                FORKLIFT_RULES + "ha_enabled.rego"),
)
def cluster_services(vm: SourceVM) -> Iterable[Outcome]:
    names = {"drs": "DRS", "dpm": "DPM", "ha": "HA"}
    on = [names[k] for k in ("drs", "dpm", "ha") if vm.cluster_services.get(k)]
    where = f"cluster {vm.cluster}" if vm.cluster else "the VM's cluster"
    if on:
        yield fail(vm.cluster or vm.name, f"{', '.join(on)} enabled on {where}", services=on)
    else:
        yield ok(vm.cluster or vm.name, f"no DRS, DPM or HA on {where}" if vm.cluster else "not in a cluster")
