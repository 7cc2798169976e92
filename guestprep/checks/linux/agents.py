"""Guest agents: qemu-guest-agent in, VMware Tools out (after the move)."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.facts.linux_model import LinuxFacts
from guestprep.models import Severity


@check(
    id="LNX-QEMU-GA", severity=Severity.WARNING, os="linux", phase="any",
    title="qemu-guest-agent is installed and enabled",
    rationale="Proxmox uses the agent for clean shutdown, fs-freeze during backups, fstrim of cloned disks and to "
              "report IP addresses; finalize verifies the migrated VM through it.",
    remediation="Run `guestprep prepare --apply` (package manager, or --package-source DIR for air-gapped guests).",
    fixed_by="linux.qemu_guest_agent",
)
def qemu_guest_agent(facts: LinuxFacts) -> Iterable[Outcome]:
    qga = facts.qemu_guest_agent
    if not qga.get("installed"):
        yield fail("qemu-guest-agent", "qemu-guest-agent is not installed", package_manager=facts.package_manager)
    elif qga.get("enabled") is False:
        yield fail("qemu-guest-agent", "qemu-guest-agent is installed but not enabled at boot")
    else:
        yield ok("qemu-guest-agent", "qemu-guest-agent is installed" + (" and enabled" if qga.get("enabled") else ""))


@check(
    id="LNX-VMWARE-TOOLS", severity=Severity.INFO, os="linux", phase="any",
    title="VMware Tools / open-vm-tools present: remove after the cutover",
    rationale="open-vm-tools is useless on KVM and the tarball VMware Tools can break the initramfs and X "
              "configuration; removing them before the move loses clean shutdown on VMware.",
    remediation="`guestprep prepare --apply` installs a one-shot first-boot unit that removes them only once the "
                "guest runs on KVM.",
    fixed_by="linux.vmware_tools_removal",
)
def vmware_tools(facts: LinuxFacts) -> Iterable[Outcome]:
    vt = facts.vmware_tools
    scheduled = "/etc/systemd/system/guestprep-remove-vmware-tools.service"
    if (vt.get("present") or vt.get("vmware_tools_tarball")) and scheduled in facts.guestprep_units:
        yield ok("vmware-tools", f"removal scheduled for the first boot on KVM ({scheduled})", unit=scheduled)
    elif vt.get("present") or vt.get("vmware_tools_tarball"):
        kind = "VMware Tools (tarball install)" if vt.get("vmware_tools_tarball") else "open-vm-tools"
        yield fail("vmware-tools", f"{kind} installed" + (f" ({vt['version']})" if vt.get("version") else ""),
                   **{k: v for k, v in vt.items() if v})
    else:
        yield ok("vmware-tools", "no VMware Tools installed")


@check(
    id="LNX-PRIVILEGE", severity=Severity.WARNING, os="linux", phase="pre",
    title="The connecting user can become root (for reading initramfs images and preparing)",
    rationale="Reading every initramfs and applying changes needs root; without sudo, preflight sees less and "
              "prepare cannot run.",
    remediation="Connect as root, or give the user sudo rights and set `sudo: true` (password from an env var) "
                "in the inventory.",
)
def privilege(facts: LinuxFacts) -> Iterable[Outcome]:
    if facts.is_root:
        yield ok("sudo", "running as root")
    elif facts.sudo in ("nopasswd", "password"):
        yield ok("sudo", f"sudo available ({facts.sudo})")
    else:
        yield fail("sudo", f"not root and sudo is {facts.sudo or 'unknown'}", sudo=facts.sudo)
