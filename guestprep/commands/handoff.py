"""`guestprep handoff`: write the per-VM hand-off document that `finalize` (and hostside) consume."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from guestprep.commands.options import PasswordEnvOpt, ThumbOpt, VsphereCaOpt, VsphereInsecureOpt, VsphereTimeoutOpt
from guestprep.commands.vsphere_login import open_session
from guestprep.console import make_console, safe
from guestprep.errors import ConfigError

console = make_console()
err = make_console(stderr=True)


def _pick_source_vm(vm_name: str, vmx: Optional[Path], source_vm: Optional[Path]):
    from guestprep.handoff import read_json_file, source_vm_from_dict
    from guestprep.vmx import parse_vmx_file

    if vmx:
        vm, origin = parse_vmx_file(vmx), {"kind": "vmx", "path": str(vmx)}
        candidates = [vm]
    else:
        assert source_vm is not None   # the command checked: exactly one of --vmx/--source-vm/--server
        data = read_json_file(source_vm)
        items = data if isinstance(data, list) else [data]
        candidates = [source_vm_from_dict(x, f"{source_vm}[{i}]") for i, x in enumerate(items)]
        origin = {"kind": "source-vm", "path": str(source_vm)}
    match = [v for v in candidates if v.name == vm_name] or [v for v in candidates if v.name.lower() == vm_name.lower()]
    if not match:
        names = ", ".join(repr(v.name) for v in candidates[:10])
        raise ConfigError(f"no VM named {vm_name!r} (found {names})", where=origin["path"])
    return match[0], origin


def _names_in_facts(data) -> list[str]:
    """The guest(s) a facts document or a preflight report describes."""
    if isinstance(data, dict) and isinstance(data.get("guests"), list):
        return [str(g["guest"]) for g in data["guests"] if isinstance(g, dict) and g.get("guest")]
    if isinstance(data, dict) and data.get("hostname"):
        return [str(data["hostname"])]
    return []


def _same_guest(path: Path, vm_name: str, allowed: bool) -> None:
    """Refuse facts that describe another guest: a report for `vm` silently became the evidence of VM
    `BZ1308535_21disks`. A host name matches its VM name case-insensitively, with or without the domain."""
    from guestprep.handoff import read_json_file

    names = _names_in_facts(read_json_file(path))
    if not names:
        return  # nothing names a guest: guest_facts_ref notes what it could not find

    def same(n: str) -> bool:
        a, b = n.lower(), vm_name.lower()
        return a == b or a.split(".")[0] == b.split(".")[0]

    if any(same(n) for n in names):
        return
    shown = ", ".join(repr(n) for n in names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    if allowed:
        err.print(f"[yellow]warning:[/] --guest-facts {safe(path)} describe {safe(shown)}, not VM {safe(vm_name)!s}; "
                  "used as told (--facts-for-other-guest)")
        return
    raise ConfigError(f"these guest facts describe {shown}, not VM {vm_name!r}; give the facts of this VM, or pass "
                      "--facts-for-other-guest if they really belong to it (the guest has another name)",
                      where=str(path))


def _fetch_source_vm(server: str, ident: str, user: Optional[str], password_env: str, ca_bundle: Optional[Path],
                     thumbprint: Optional[str], insecure: bool, timeout: float):
    """The SourceVM read from vCenter/ESXi now (the same code as `guestprep vm facts`)."""
    from datetime import datetime, timezone

    from guestprep.handoff import source_vm_from_dict
    from guestprep.operations.vm import target

    if not user:
        raise ConfigError("--user is required with --server", where="--user")
    if insecure:
        err.print("[yellow]warning:[/] --insecure: the vCenter certificate is NOT verified")
    where = f"vsphere {server}"
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        _, record = target.load(session, ident, where)
    finally:
        session.close()
    # the same checks a --source-vm file gets: the hand-off never holds a VM it could not read back
    vm = source_vm_from_dict(record.to_dict(), f"{where}: {ident}")
    origin = {"kind": "vsphere", "server": server, "moref": vm.moref,
              "fetched": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return vm, origin


def handoff(
    vm: Optional[str] = typer.Argument(None, help="VM name (as vSphere / the .vmx displayName knows it)."),
    vm_opt: Optional[str] = typer.Option(None, "--vm", help="VM name, moref (vm-42) or BIOS/instance UUID "
                                                            "(same as the argument)."),
    vmx: Optional[Path] = typer.Option(None, "--vmx", help="VMware .vmx file (standalone ESXi, datastore over NFS)."),
    source_vm: Optional[Path] = typer.Option(None, "--source-vm", help="SourceVM JSON (object or list) from vSphere."),
    server: Optional[str] = typer.Option(None, "--server", "-s", help="Read the VM from this vCenter/ESXi host[:port]."),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="vSphere user (with --server)."),
    # the same connection options as the vsphere commands (password from env/stdin/prompt, never argv)
    password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt,
    thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt,
    timeout: float = VsphereTimeoutOpt,
    guest_facts: Optional[Path] = typer.Option(None, "--guest-facts", help="guestprep facts/report JSON for this guest."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Target policy YAML (node, storage, network map...)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Hand-off file to create (never overwritten)."),
    facts_for_other_guest: bool = typer.Option(False, "--facts-for-other-guest",
                                               help="Use --guest-facts although they name another guest than the "
                                                    "VM (e.g. the inventory name differs from the VM name)."),
) -> int:
    """Write the per-VM hand-off document that `finalize` (and hostside) consume."""
    from guestprep.finalize.policy import load_policy
    from guestprep.target_policy import TargetPolicy
    from guestprep.handoff import build_handoff, guest_facts_ref, write_handoff

    if vm and vm_opt and vm != vm_opt:
        raise ConfigError(f"the VM is given twice ({vm!r} and --vm {vm_opt!r})", where="arguments")
    name = vm or vm_opt
    if not name:
        raise ConfigError("which VM? give its name (argument or --vm)", where="arguments")
    if sum(1 for x in (vmx, source_vm, server) if x) != 1:
        raise ConfigError("give exactly one of --vmx FILE.vmx, --source-vm FILE.json or --server HOST",
                          where="arguments")
    if not server:
        stray = [flag for flag, given in (("--user", user), ("--ca-bundle", ca_bundle), ("--thumbprint", thumbprint),
                                          ("--insecure", insecure)) if given]
        if stray:
            verb = "apply" if len(stray) > 1 else "applies"
            raise ConfigError(f"{', '.join(stray)} only {verb} with --server", where="arguments")
    # everything read from local files is checked before vCenter is asked anything
    pol = load_policy(policy) if policy else TargetPolicy()
    target = out
    if target is not None and target.exists():
        raise ConfigError("already exists; refusing to overwrite", where=str(target))
    if server:
        source, origin = _fetch_source_vm(server, name, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    else:
        source, origin = _pick_source_vm(name, vmx, source_vm)
    if guest_facts:
        _same_guest(guest_facts, source.name, facts_for_other_guest)
    facts = guest_facts_ref(guest_facts, source.name) if guest_facts else None
    evidence = None
    if guest_facts:
        from guestprep.finalize.evidence import boot_evidence
        from guestprep.handoff import read_json_file
        evidence = boot_evidence(read_json_file(guest_facts), source.name, str(guest_facts))
    for w in source.extra.get("vmx_warnings") or []:
        err.print(f"warning: {w}", markup=False)
    h = build_handoff(source, pol, origin=origin, guest_facts=facts, boot_evidence=evidence)
    target = target or Path(f"{source.name.replace('/', '_')}.handoff.json")
    write_handoff(h, target)
    console.print(f"hand-off for {source.name} written to {target}: {len(h.disks)} disk(s), "
                  f"{len(source.nics)} NIC(s), firmware {source.firmware}"
                  + (f", readiness {facts.readiness or 'unknown'}" if facts else ", no guest facts"), markup=False)
    if evidence is not None:
        err.print(f"boot evidence: direct VirtIO SCSI boot {'PROVEN' if evidence.proven else 'not proven'}: "
                  f"{evidence.reason}", markup=False)
    missing = [d.label for d in h.disks if not (d.volid or d.import_from)]
    if missing:
        err.print(f"[yellow]note:[/] no volume or import path yet for {safe(', '.join(missing))} "
                  "(set policy volumes/datastores before finalize)")
    return 0
