"""``guestprep handoff`` and ``guestprep finalize``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from guestprep.console import make_console, safe

from guestprep.errors import ConfigError
from guestprep.vsphere import cli as vs

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


def _fetch_source_vm(server: str, ident: str, user: Optional[str], password_env: str, ca_bundle: Optional[Path],
                     thumbprint: Optional[str], insecure: bool, timeout: float):
    """The SourceVM read from vCenter/ESXi now (the same code as `guestprep vm facts`)."""
    from datetime import datetime, timezone

    from guestprep.handoff import source_vm_from_dict
    from guestprep.vsphere.actions import find_vm
    from guestprep.vsphere.cli import open_session
    from guestprep.vsphere.inventory import fetch_one

    if not user:
        raise ConfigError("--user is required with --server", where="--user")
    if insecure:
        err.print("[yellow]warning:[/] --insecure: the vCenter certificate is NOT verified")
    where = f"vsphere {server}"
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        record = fetch_one(session, find_vm(session, ident), where=where)
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
    password_env: str = vs.PasswordEnvOpt,
    ca_bundle: Optional[Path] = vs.CaOpt,
    thumbprint: Optional[str] = vs.ThumbOpt,
    insecure: bool = vs.InsecureOpt,
    timeout: float = vs.TimeoutOpt,
    guest_facts: Optional[Path] = typer.Option(None, "--guest-facts", help="guestprep facts/report JSON for this guest."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Target policy YAML (node, storage, network map...)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Hand-off file to create (never overwritten)."),
) -> int:
    """Write the per-VM hand-off document that `finalize` (and hostside) consume."""
    from guestprep.finalize.policy import TargetPolicy, load_policy
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


def finalize(
    handoff_file: Path = typer.Option(..., "--handoff", help="Hand-off JSON written by `guestprep handoff`."),
    host: Optional[str] = typer.Option(None, "--host", help="Proxmox VE API host."),
    port: int = typer.Option(8006, "--port"),
    user: str = typer.Option("root@pam", "--user", help="user@realm (owner of the API token)."),
    token_name: Optional[str] = typer.Option(None, "--token-name", help="API token id (the part after '!')."),
    token_secret_env: Optional[str] = typer.Option(None, "--token-secret-env", help="Env var holding the token secret."),
    password_env: Optional[str] = typer.Option(None, "--password-env", help="Env var holding the password."),
    password_stdin: bool = typer.Option(False, "--password-stdin", help="Read the password from stdin."),
    ca: Optional[Path] = typer.Option(None, "--ca", help="CA certificate(s) to verify the API's TLS certificate."),
    fingerprint: Optional[str] = typer.Option(None, "--fingerprint", help="Pin the API certificate (SHA-256)."),
    insecure: bool = typer.Option(False, "--insecure", help="Do NOT verify TLS (explicit opt-out)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Read and check, print the exact write calls, send none."),
    keep_failed: bool = typer.Option(False, "--keep-failed", help="On failure keep the VM for inspection."),
    accept_blocked: bool = typer.Option(False, "--accept-blocked", help="Proceed although guest facts say BLOCKED."),
    strategy: Optional[str] = typer.Option(None, "--strategy", help="direct | sata-first: override the choice made "
                                           "from the hand-off's boot evidence (a warning says when it contradicts it)."),
    agent_timeout: float = typer.Option(600.0, "--agent-timeout", help="Seconds to wait for the guest agent."),
    boot_settle: float = typer.Option(180.0, "--boot-settle", min=0.0, help="sata-first without a known guest agent: "
                                      "seconds the VM must run before its first boot counts as done."),
    poll: float = typer.Option(1.0, "--poll", help="Seconds between task/agent polls."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the result as JSON (never overwritten)."),
) -> int:
    """Build, validate and create the Proxmox VM from a hand-off; start and verify it."""
    from guestprep.finalize.client import PveClient, PveConnection, secret_from_env
    from guestprep.finalize.flow import Finalizer, FlowOptions
    from guestprep.handoff import load_handoff, write_exclusive

    h = load_handoff(handoff_file)
    if strategy is not None and strategy not in ("direct", "sata-first"):
        raise ConfigError(f"must be direct or sata-first, got {strategy!r}", where="--strategy")
    if not host:
        raise ConfigError("--host is required (the Proxmox VE API host)", where="arguments")
    password = secret_from_env(password_env, "password")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n") or None
        if password is None:
            raise ConfigError("--password-stdin: nothing on stdin", where="arguments")
        from guestprep import secrets
        secrets.register(password)
    conn = PveConnection(host=host, port=port, user=user, token_name=token_name,
                         token_secret=secret_from_env(token_secret_env, "token secret"), password=password,
                         ca_file=str(ca) if ca else None, fingerprint=fingerprint, insecure=insecure)
    if insecure:
        err.print("[yellow]warning:[/] --insecure: the API certificate is NOT verified")
    client = PveClient(conn, dry_run=dry_run, poll_interval=poll)
    flow = Finalizer(client, FlowOptions(dry_run=dry_run, keep_failed=keep_failed, accept_blocked=accept_blocked,
                                         agent_timeout=agent_timeout, agent_poll=poll, strategy=strategy,
                                         boot_settle=boot_settle),
                     say=lambda s: err.print(f"[cyan]finalize:[/] {safe(s)}"))
    try:
        result = flow.run(h)
    finally:
        if dry_run:
            console.print("[bold]API calls (dry run: writes NOT sent)[/]")
            for call in client.calls:
                console.print(("  would " if call.method != "GET" else "  sent  ") + call.render(), markup=False)
    for f in result.build.findings:
        # findings carry names and paths from the source: never rich markup
        err.print(f"{f.level}: {f.message}", markup=False, style="yellow" if f.level == "warning" else "blue")
    if json_out:
        write_exclusive(json_out, json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n")
    if dry_run:
        console.print(f"dry run: VM {result.vmid} on {safe(result.node)} would be created; nothing was changed")
    elif result.verified.get("agent") == "ok":
        console.print(f"[green]VM {result.vmid} created on {result.node}, started and verified[/] "
                      f"(agent ok, MACs {', '.join(result.verified['macs'])})")
    elif result.verified:
        console.print(f"VM {result.vmid} created on {result.node} and started; {result.verified['boot']} "
                      f"(guest agent {result.verified['agent']}: MACs and addresses NOT verified)", markup=False)
    else:
        console.print(f"VM {result.vmid} created on {result.node} (not started: policy start=false)")
    return 0


def register(app: typer.Typer) -> None:
    app.command("handoff")(handoff)
    app.command("finalize")(finalize)
