"""`guestprep finalize`: build, validate and create the Proxmox VM from a hand-off; start and verify it."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from guestprep.console import make_console, safe
from guestprep.errors import ConfigError

console = make_console()
err = make_console(stderr=True)


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
    manifests: Optional[list[Path]] = typer.Option(None, "--manifests", metavar="DIR", help="Directory holding guestprep-host "
                                                   "conversion manifests (repeatable; default: the hand-off's "
                                                   "directory). A converted volume is attached only with its manifest."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout (messages go to stderr)."),
    json_out: Optional[Path] = typer.Option(None, "--json-out", dir_okay=False,
                                            help="Also write the result as JSON to FILE (never overwritten)."),
) -> int:
    """Build, validate and create the Proxmox VM from a hand-off; start and verify it."""
    from guestprep.proxmox.client import PveClient, PveConnection, secret_from_env
    from guestprep.finalize.flow import Finalizer, FlowOptions
    from guestprep.handoff import load_handoff, write_exclusive

    if json_out is not None and json_out.exists():
        raise ConfigError("already exists; refusing to overwrite", where=f"--json-out {json_out}")
    out = err if as_json else console  # --json: stdout holds the JSON document only
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
                                         boot_settle=boot_settle, manifest_dirs=[str(d) for d in manifests or ()]),
                     say=lambda s: err.print(f"[cyan]finalize:[/] {safe(s)}"))
    try:
        result = flow.run(h)
    finally:
        if dry_run:
            out.print("[bold]API calls (dry run: writes NOT sent)[/]")
            for call in client.calls:
                out.print(("  would " if call.method != "GET" else "  sent  ") + call.render(), markup=False)
    for f in result.build.findings:
        # findings carry names and paths from the source: never rich markup
        err.print(f"{f.level}: {f.message}", markup=False, style="yellow" if f.level == "warning" else "blue")
    document = json.dumps(result.to_dict(), indent=2, sort_keys=True) + "\n"
    if json_out:
        write_exclusive(json_out, document)
    if dry_run:
        out.print(f"dry run: VM {result.vmid} on {safe(result.node)} would be created; nothing was changed")
    elif result.verified.get("agent") == "ok":
        out.print(f"[green]VM {result.vmid} created on {result.node}, started and verified[/] "
                f"(agent ok, MACs {', '.join(result.verified['macs'])})")
    elif result.verified:
        out.print(f"VM {result.vmid} created on {result.node} and started; {result.verified['boot']} "
                f"(guest agent {result.verified['agent']}: MACs and addresses NOT verified)", markup=False)
    else:
        out.print(f"VM {result.vmid} created on {result.node} (not started: policy start=false)")
    if as_json:
        sys.stdout.write(document)
    return 0
