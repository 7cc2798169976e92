"""linux.vmware_tools_removal: VMware Tools stay while on VMware and go on the first KVM boot.

Removing them before the move loses clean shutdown and quiescing on VMware, so a one-shot
systemd unit (ConditionVirtualization=!vmware) removes them on the first boot elsewhere
and then removes itself.
"""

from __future__ import annotations

from typing import Any

from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation
from guestprep.operations.linux import state as S

REMOVE = {
    "apt-get": "DEBIAN_FRONTEND=noninteractive apt-get remove -y -q open-vm-tools open-vm-tools-desktop",
    "dnf": "dnf remove -y open-vm-tools open-vm-tools-desktop",
    "yum": "yum remove -y open-vm-tools open-vm-tools-desktop",
    "zypper": "zypper --non-interactive remove open-vm-tools open-vm-tools-desktop",
    "pacman": "pacman -R --noconfirm open-vm-tools",
}
UNIT_NAME = "guestprep-remove-vmware-tools.service"


def removal_script(manager: str | None) -> str:
    remove = REMOVE.get(manager or "", ": no package manager known")
    return f"""#!/bin/sh
# guestprep: remove VMware Tools on the first boot outside VMware, then remove this unit.
case "$(systemd-detect-virt 2>/dev/null)" in vmware|none|"") exit 0 ;; esac
if [ -x /usr/bin/vmware-uninstall-tools.pl ]; then /usr/bin/vmware-uninstall-tools.pl -d default || true; fi
{remove} || exit 1
systemctl disable {UNIT_NAME}
rm -f {S.VMTOOLS_UNIT} {S.VMTOOLS_SCRIPT}
systemctl daemon-reload
"""


UNIT = f"""[Unit]
Description=guestprep: remove VMware Tools once the guest no longer runs on VMware
ConditionVirtualization=!vmware
After=local-fs.target

[Service]
Type=oneshot
ExecStart={S.VMTOOLS_SCRIPT}

[Install]
WantedBy=multi-user.target
"""


@operation
class VmwareToolsRemoval(LinuxOperation):
    id = "linux.vmware_tools_removal"
    order = 60
    title = "Remove VMware Tools on the first boot on KVM"
    # LNX-VMWARE-TOOLS keeps failing on VMware by design (the tools stay until the move);
    # the engine verifies this operation through verify_state instead.
    fixes: tuple[str, ...] = ()

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest)
        vt = facts.vmware_tools
        st = options.get("state") or {}
        if not (vt.get("present") or vt.get("vmware_tools_tarball")):
            plan.reason = "no VMware Tools installed"
            return plan
        if facts.init_system != "systemd":
            plan.warnings.append("no systemd: remove VMware Tools by hand after the move")
            plan.reason = "cannot schedule the removal without systemd"
            return plan
        if S.text(st, S.VMTOOLS_UNIT) == UNIT:
            plan.reason = "removal on the first non-VMware boot is already scheduled"
            return plan
        plan.changes += [
            C.write_file(S.VMTOOLS_SCRIPT, removal_script(facts.package_manager), None, mode="0755"),
            C.write_file(S.VMTOOLS_UNIT, UNIT, S.text(st, S.VMTOOLS_UNIT)),
            C.service(UNIT_NAME, "enable"),
        ]
        plan.reason = "schedule VMware Tools removal for the first boot on KVM"
        return plan

    def verify_state(self, facts: LinuxFacts, state: dict[str, Any]) -> list[str]:
        vt = facts.vmware_tools
        if (vt.get("present") or vt.get("vmware_tools_tarball")) and facts.init_system == "systemd" \
                and S.text(state, S.VMTOOLS_UNIT) != UNIT:
            return [f"{S.VMTOOLS_UNIT} is not installed"]
        return []
