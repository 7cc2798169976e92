"""linux.qemu_guest_agent: install and enable qemu-guest-agent.

From the guest's repositories with its own package manager, or, for air-gapped fleets,
from package files the admin provides (``--package-source DIR``): the files matching
the guest's package format are uploaded and installed locally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guestprep.errors import ConfigError, OperationError
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Plan
from guestprep.operations.base import operation
from guestprep.operations.linux import changes as C
from guestprep.operations.linux.operation import LinuxOperation

PACKAGE = {"apt-get": "qemu-guest-agent", "dnf": "qemu-guest-agent", "yum": "qemu-guest-agent",
           "zypper": "qemu-guest-agent", "pacman": "qemu-guest-agent"}
FILE_SUFFIX = {"apt-get": (".deb",), "dnf": (".rpm",), "yum": (".rpm",), "zypper": (".rpm",),
               "pacman": (".pkg.tar.zst", ".pkg.tar.xz")}
UNIT = "qemu-guest-agent.service"


def package_files(source: str, manager: str) -> list[str]:
    d = Path(source)
    if not d.is_dir():
        raise ConfigError(f"--package-source {source}: not a directory")
    files = sorted(str(p.resolve()) for p in d.iterdir() if p.is_file() and p.name.endswith(FILE_SUFFIX[manager]))
    if not any("qemu-guest-agent" in Path(f).name for f in files):
        raise ConfigError(f"--package-source {source}: no qemu-guest-agent*{FILE_SUFFIX[manager][0]} for this "
                          f"guest's package manager ({manager})")
    return files


@operation
class QemuGuestAgent(LinuxOperation):
    id = "linux.qemu_guest_agent"
    order = 50
    title = "qemu-guest-agent installed and enabled"
    fixes = ("LNX-QEMU-GA",)

    def plan(self, facts: LinuxFacts, guest: str, options: dict[str, Any]) -> Plan:
        plan = Plan(self.id, guest, verify="LNX-QEMU-GA")
        qga = facts.qemu_guest_agent
        if qga.get("installed") and qga.get("enabled") is not False:
            plan.reason = "qemu-guest-agent is installed" + (" and enabled" if qga.get("enabled") else "")
            return plan
        if not qga.get("installed"):
            mgr = facts.package_manager
            if mgr not in PACKAGE:
                raise OperationError(f"no supported package manager on the guest (found {mgr or 'none'}; supported: "
                                     f"{', '.join(PACKAGE)}): install qemu-guest-agent by hand")
            source = options.get("package_source")
            if source:
                plan.changes.append(C.packages(mgr, [PACKAGE[mgr]], package_files(source, mgr)))
            else:
                plan.changes.append(C.packages(mgr, [PACKAGE[mgr]]))
        if facts.init_system == "systemd":
            # on Debian the unit is static (started by udev when the virtio-serial port appears)
            plan.changes.append(C.service(UNIT, "enable"))
        plan.reason = "install and enable qemu-guest-agent" if not qga.get("installed") else "enable qemu-guest-agent"
        return plan
