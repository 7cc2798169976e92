"""linux.lvm_devices_file: volume groups stay findable when the disks' ids change (RHEL 9 family).

The devices file keys PVs on WWID/serial/device name; the VirtIO disks have other ids,
so LVM would ignore the PVs and the root VG would not be found. Without the file LVM
scans all devices (its filter still applies), so the file is moved aside (backed up),
every initramfs that carries a copy is rebuilt, and a one-shot unit re-creates the file
from the new devices on the first boot outside VMware.
"""

from __future__ import annotations

from typing import Any

from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation
from guestprep.operations.linux import state as S
from guestprep.operations.linux.initramfs import WANTED, builtin, missing_modules

UNIT_NAME = "guestprep-lvm-reimport.service"
SCRIPT = f"""#!/bin/sh
# guestprep: re-create the LVM devices file from the new disks, then remove this unit.
case "$(systemd-detect-virt 2>/dev/null)" in vmware|none|"") exit 0 ;; esac
vgimportdevices -a || exit 1
systemctl disable {UNIT_NAME}
rm -f {S.LVM_UNIT} {S.LVM_SCRIPT}
systemctl daemon-reload
"""
UNIT = f"""[Unit]
Description=guestprep: re-create the LVM devices file on the first boot outside VMware
ConditionVirtualization=!vmware
After=local-fs.target

[Service]
Type=oneshot
ExecStart={S.LVM_SCRIPT}

[Install]
WantedBy=multi-user.target
"""


@operation
class LvmDevicesFile(LinuxOperation):
    id = "linux.lvm_devices_file"
    order = 30
    title = "LVM devices file that survives new disk ids"
    fixes = ("LNX-LVM-DEVICESFILE",)

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="LNX-LVM-DEVICESFILE")
        if facts.lvm_devices_file is None or facts.lvm_use_devicesfile is False:
            plan.reason = "no LVM devices file in use"
            return plan
        st = options.get("state") or {}
        plan.changes.append(C.delete_file(S.LVM_DEVICES, S.text(st, S.LVM_DEVICES)))
        if facts.initramfs_generator == "dracut":
            for k in facts.kernels:
                # kernels lacking virtio are rebuilt by linux.initramfs_virtio (ordered after this one)
                if k.initramfs and not missing_modules(k):
                    plan.changes.append(C.rebuild_initramfs("dracut", k.version, k.initramfs,
                                                            [m for m in WANTED if not builtin(k, m)
                                                             and k.initramfs_modules and m in k.initramfs_modules]))
        if facts.init_system == "systemd":
            plan.changes += [
                C.write_file(S.LVM_SCRIPT, SCRIPT, None, mode="0755"),
                C.write_file(S.LVM_UNIT, UNIT, S.text(st, S.LVM_UNIT)),
                C.service(UNIT_NAME, "enable"),
            ]
        else:
            plan.warnings.append("no systemd: run `vgimportdevices -a` after the first boot on Proxmox")
        plan.reason = "move the devices file aside until the first boot on the new disks"
        return plan
