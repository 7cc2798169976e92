"""Eight source VM shapes the issue names, as SourceVM records (+ the policy for each)."""

from __future__ import annotations

from guestprep.target_policy import TargetPolicy
from guestprep.handoff import BootEvidence, Handoff, build_handoff
from guestprep.models import SourceVM, VMController, VMDisk, VMNic
from guestprep.ostype import ostype_for

GIB = 1 << 30
NETMAP = {"VM Network": {"bridge": "vmbr0"}, "prod-vlan20": {"bridge": "vmbr0", "tag": 20},
          "backup-vlan30": {"bridge": "vmbr1", "tag": 30}}


def _vm(name, guest_id, ctl_kind, firmware="bios", disks=1, nics=None, **kw) -> SourceVM:
    ctl_key = 31000 if ctl_kind == "nvme" else 15000 if ctl_kind == "sata" else 1000
    vm = SourceVM(
        name=name, guest_id=guest_id, firmware=firmware, num_cpu=4, cores_per_socket=2, memory_mb=4096,
        uuid_bios="421b4b87-e6b7-d881-07a0-c9d221cd3c6b", moref="vm-42", source="vsphere",
        controllers=[VMController(key=ctl_key, kind=ctl_kind, label=f"{ctl_kind} controller 0")],
        disks=[VMDisk(key=2000 + i, label=f"Hard disk {i + 1}", controller_key=ctl_key, unit_number=i,
                      capacity_bytes=(40 + 10 * i) * GIB, datastore_path=f"[ds1] {name}/{name}_{i}.vmdk",
                      is_boot=(i == 0)) for i in range(disks)],
        nics=nics or [VMNic(label="Network adapter 1", model="vmxnet3", mac="00:50:56:9b:5f:0d", network="VM Network")],
        **kw,
    )
    return vm


def shapes() -> dict[str, tuple[SourceVM, dict]]:
    base = {"node": "pve1", "storage": "local-zfs", "network_map": NETMAP, "datastores": {"ds1": "/mnt/pve/ds1"}}
    out = {
        "linux-bios-lsi": (_vm("web-01", "rhel8_64Guest", "lsilogic"), {}),
        "linux-efi-pvscsi": (_vm("db-el9", "rhel9_64Guest", "pvscsi", firmware="efi"), {}),
        "win2019-bios-lsisas": (_vm("WIN2019-APP", "windows2019srv_64Guest", "lsisas"), {}),
        "win2022-efi-secureboot": (_vm("win2022 dc01", "windows2019srvNext_64Guest", "lsisas", firmware="efi",
                                       secure_boot=True), {}),
        "win11-efi-vtpm": (_vm("W11_desk", "windows11_64Guest", "nvme", firmware="efi", secure_boot=True, vtpm=True),
                           {"strategy": "sata-first"}),
        "multi-disk-multi-nic-vlan": (_vm("app.multi", "ubuntu64Guest", "pvscsi", disks=3, nics=[
            VMNic(label="Network adapter 1", model="vmxnet3", mac="00:50:56:aa:00:01", network="prod-vlan20"),
            VMNic(label="Network adapter 2", model="vmxnet3", mac="00:50:56:aa:00:02", network="backup-vlan30"),
            VMNic(label="Network adapter 3", model="e1000e", mac="00:50:56:aa:00:03", network="VM Network",
                  connected=False)]), {"cache": "writeback", "tags": ["Wave-3"]}),
        "nvme-boot": (_vm("nvme-host", "debian12_64Guest", "nvme", firmware="efi"), {"format": "qcow2", "storage": "local"}),
        "independent-disk": (_vm("legacy-sql", "windows9srv_64Guest", "lsisas", disks=3), {}),
    }
    ind = out["independent-disk"][0]
    ind.disks[1].disk_mode = "independent_persistent"
    ind.disks[2].rdm_mode = "physicalMode"
    return {k: (vm, {**base, **extra}) for k, (vm, extra) in out.items()}


def proven(vm: SourceVM, agent: bool | None = True) -> BootEvidence:
    """Evidence as a guest whose facts passed the proof check (the shapes are prepared guests)."""
    os_name = ostype_for(vm.guest_id).family
    check = "WIN-VIOSCSI-BOOTSTART" if os_name == "windows" else "LNX-INITRAMFS-VIRTIO"
    return BootEvidence(os=os_name, check=check, proven=True, reason=f"{check} passed", agent_installed=agent,
                        outcomes=[{"resource": "r", "status": "pass", "message": "ok"}], source="facts")


def handoff_for(shape: str) -> Handoff:
    vm, pol = shapes()[shape]
    h = build_handoff(vm, TargetPolicy.from_dict(pol), origin={"kind": "source-vm", "path": f"{shape}.json"},
                      boot_evidence=proven(vm))
    h.created = "2026-01-01T00:00:00+00:00"  # golden files must not depend on the clock
    return h
