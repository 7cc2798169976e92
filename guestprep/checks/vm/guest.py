"""What the controller needs to reach and prepare the guest, and Proxmox naming/OS mapping."""

from __future__ import annotations

from typing import Iterable

from guestprep.checks.base import Outcome, fail, ok
from guestprep.checks.registry import check
from guestprep.checks.vm.target import FORKLIFT_RULES, resolve_ostype
from guestprep.models import Severity, SourceVM
from guestprep.target_policy import proxmox_name, valid_proxmox_name


@check(
    id="VM-POWERED-ON", severity=Severity.WARNING, os="vm",
    title="The VM is powered on (guest preparation needs a running guest)",
    rationale="Drivers, initramfs and agent installs happen inside the running guest on VMware; a "
              "powered-off VM cannot be prepared (or even inspected).",
    remediation="Power the VM on for the preparation window: guestprep vm power on VM --apply.",
    fixed_by="vm.power_on",
)
def powered_on(vm: SourceVM) -> Iterable[Outcome]:
    if vm.extra.get("template"):
        yield fail(vm.name, "the VM is a template: convert it to a VM to prepare it", power_state=vm.power_state)
    elif vm.power_state == "poweredOn":
        yield ok(vm.name, "powered on")
    else:
        yield fail(vm.name, f"power state is {vm.power_state}", power_state=vm.power_state)


@check(
    id="VM-TOOLS-RUNNING", severity=Severity.WARNING, os="vm",
    title="VMware Tools is running (guest facts and IPs available)",
    rationale="Without running Tools vSphere knows neither the guest's IPs nor hostname, graceful "
              "shutdown is impossible, and the inventory cannot say how to reach the guest.",
    remediation="Install or start VMware Tools / open-vm-tools in the guest.",
)
def tools_running(vm: SourceVM) -> Iterable[Outcome]:
    if vm.power_state != "poweredOn":
        yield fail(vm.name, f"Tools cannot run while the VM is {vm.power_state}",
                   tools_running=vm.tools_running)
    elif vm.tools_running == "guestToolsRunning":
        yield ok(vm.name, f"Tools running (version {vm.tools_version})", tools_version=vm.tools_version)
    else:
        yield fail(vm.name, f"Tools status {vm.tools_status}, running status {vm.tools_running}",
                   tools_status=vm.tools_status, tools_running=vm.tools_running)


@check(
    id="VM-GUEST-IP", severity=Severity.WARNING, os="vm",
    title="vSphere reports a usable guest IP address",
    rationale="The fleet inventory takes the guest's address from vSphere; with no IP the "
              "controller cannot reach the guest over SSH/WinRM.",
    remediation="Start VMware Tools, or set the guest's address in the fleet file by hand.",
)
def guest_ip(vm: SourceVM) -> Iterable[Outcome]:
    ips = vm.usable_ips()
    if ips:
        yield ok(vm.name, f"guest IPs {', '.join(ips)}", ips=ips)
    else:
        yield fail(vm.name, "no usable guest IP reported", reported=list(vm.guest_ips))


@check(
    id="VM-OSTYPE", severity=Severity.WARNING, os="vm",
    title="The guest OS maps to a Proxmox ostype",
    rationale="Proxmox tunes timers, Hyper-V enlightenments and defaults by ostype; an unknown "
              "guest OS gets 'other', and Windows guests then run slower and may misbehave.",
    remediation="Set the correct guest OS in vSphere (VM options), or give finalize --ostype.",
    references=(FORKLIFT_RULES + "vm_os.rego",),
)
def ostype(vm: SourceVM) -> Iterable[Outcome]:
    # an empty or generic guestId (otherGuest...) yields to the OS VMware Tools reports
    found, source = resolve_ostype(vm)
    if found:
        yield ok(vm.guest_id or "(empty)", f"{source} -> {found.ostype}", ostype=found.ostype,
                 guest_id=vm.guest_id, tools_guest_full_name=vm.tools_guest_full_name)
    else:
        yield fail(vm.guest_id or "(empty)", f"no Proxmox ostype for guestId {vm.guest_id!r} "
                   f"({vm.guest_full_name or 'no full name'}; VMware Tools reports "
                   f"{vm.tools_guest_full_name or 'nothing'})", guest_id=vm.guest_id)


@check(
    id="VM-NAME", severity=Severity.WARNING, os="vm",
    title="The VM name is valid as a Proxmox VM name (dns-name)",
    rationale="Proxmox accepts only letters, digits, hyphens and dots (DNS name) as a VM name; "
              "vSphere allows spaces, underscores and parentheses.",
    remediation="finalize uses the suggested name unless you pass --name; rename in vSphere to keep "
                "names aligned.",
)
def name_valid(vm: SourceVM) -> Iterable[Outcome]:
    if valid_proxmox_name(vm.name):
        yield ok(vm.name, "valid")
    else:
        suggested = proxmox_name(vm.name) or "vm"
        yield fail(vm.name, f"not a dns-name; suggested: {suggested}", suggested=suggested)


@check(
    id="VM-HOSTNAME", severity=Severity.WARNING, os="vm",
    title="The guest reports a real hostname (not empty, not localhost)",
    rationale="The fleet inventory and the cutover's checks name the guest by the hostname VMware Tools "
              "reports; an empty or default hostname (localhost, localhost.localdomain) usually means a "
              "cloned image whose identity (DNS, DHCP, machine-id) is not the guest's own.",
    remediation="Set the guest's hostname (hostnamectl set-hostname / Rename-Computer) and let VMware "
                "Tools report it, or name the guest explicitly in the fleet file.",
    references=(FORKLIFT_RULES + "hostname.rego",),
)
def hostname(vm: SourceVM) -> Iterable[Outcome]:
    name = (vm.guest_hostname or "").strip()
    if not name:
        yield fail(vm.name, "VMware Tools reports no hostname", hostname=vm.guest_hostname)
    elif name.lower().startswith("localhost"):
        yield fail(vm.name, f"hostname is the default {name!r}", hostname=name)
    else:
        yield ok(vm.name, f"hostname {name}", hostname=name)
