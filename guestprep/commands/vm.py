"""`guestprep vm ...`: act on one vSphere VM (coexistence disk, power, snapshot, facts, disk locators).

Every command that changes something plans by default and acts only with ``--apply``; the
change runs through the operations engine (guestprep.operations.engine.run_one) and is
journaled there (guestprep.operations.vm.journal).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from guestprep.commands.options import (
    PasswordEnvOpt, ServerOpt, ThumbOpt, UserOpt, VsphereCaOpt, VsphereInsecureOpt, VsphereTimeoutOpt,
)
from guestprep.commands.vsphere_login import open_session
from guestprep.console import make_console, safe
from guestprep.errors import ConfigError
from guestprep.models import Plan

console = make_console()

vm_app = typer.Typer(help="Act on a vSphere VM: coexistence disk, power, snapshot, disk locators. "
                          "Plans by default; --apply acts.", no_args_is_help=True)
coexist_app = typer.Typer(help="The controller-coexistence disk (attach before preparing, detach after).",
                          no_args_is_help=True)
power_app = typer.Typer(help="Power control: graceful shutdown, power on (rollback).", no_args_is_help=True)
vm_app.add_typer(coexist_app, name="coexist")
vm_app.add_typer(power_app, name="power")

ApplyOpt = typer.Option(False, "--apply", help="Act. Without it, print the plan and change nothing.")
JsonOpt = typer.Option(False, "--json", help="Print the plan/result as JSON.")
JournalOpt = typer.Option(None, "--journal", dir_okay=False,
                          help="Append applied VM changes to this JSONL file "
                               "(default $GUESTPREP_STATE_DIR or ~/.local/state/guestprep, vm-journal.jsonl).")
VmArg = typer.Argument(..., help="VM name, moref (vm-42) or BIOS/instance UUID.")


def _show_plan(plan: Plan, as_json: bool) -> None:
    if as_json:
        console.print_json(json.dumps({"mode": "plan", "plan": plan.to_dict()}))
        return
    head = f"[bold]{safe(plan.guest)}[/] {plan.operation}: "
    console.print(head + safe(plan.reason or ("no change" if plan.empty else "")))
    for c in plan.changes:
        console.print(f"  {safe(c.diff or c.kind + ' ' + c.target)}")
    for w in plan.warnings:
        console.print(f"  [yellow]warning:[/] {safe(w)}")


def _run(op_id: str, vm_ident: str, options: dict[str, Any], *, apply: bool, as_json: bool,
         server: str, user: str, password_env: str, ca_bundle: Optional[Path], thumbprint: Optional[str],
         insecure: bool, timeout: float, journal: Optional[Path]) -> int:
    """Plan one VM operation (printed before anything changes); with --apply, apply it."""
    from guestprep.operations import engine
    from guestprep.operations.vm import target

    where = f"vsphere {server}"
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        vm, facts = target.load(session, vm_ident, where)
        plan, applied = engine.run_one(
            op_id, session, facts, facts.name, options, apply=apply,
            apply_options={"vm_object": vm, "server": server, "moref": facts.moref, "journal": journal},
            on_plan=lambda p: _show_plan(p, as_json and not apply),
            recollect=lambda: target.reread(session, vm, where))
        if applied is None:
            if not plan.empty and not as_json:
                console.print("plan only: nothing changed (use --apply to act)")
            return 0
        if as_json:
            console.print_json(json.dumps({"mode": "apply", "plan": plan.to_dict(), "applied": applied.to_dict()}))
        else:
            console.print(f"[green]done:[/] {safe(applied.message)}")
        return 0
    finally:
        session.close()


def _conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout) -> dict[str, Any]:
    return dict(server=server, user=user, password_env=password_env, ca_bundle=ca_bundle,
                thumbprint=thumbprint, insecure=insecure, timeout=timeout)


@coexist_app.command("attach")
def coexist_attach(
    vm: str = VmArg,
    controller: Optional[str] = typer.Option(None, "--controller",
                                             help="lsisas, pvscsi, lsilogic, sata or nvme (default: a SCSI type "
                                                  "other than the boot disk's)."),
    size_mib: int = typer.Option(1024, "--size-mib", min=1, help="Size of the thin disk."),
    apply: bool = ApplyOpt, as_json: bool = JsonOpt, journal: Optional[Path] = JournalOpt,
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
) -> int:
    """Attach a small thin disk on a new controller of another type than the boot disk's."""
    return _run("vm.coexistence_disk", vm, {"controller": controller, "size_bytes": size_mib << 20},
                apply=apply, as_json=as_json, journal=journal,
                **_conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout))


@power_app.command("off")
def power_off(
    vm: str = VmArg,
    shutdown_timeout: float = typer.Option(300.0, "--shutdown-timeout", min=1.0,
                                           help="Seconds to wait for the guest to shut down."),
    hard: bool = typer.Option(False, "--hard", help="Power off hard if a graceful shutdown is impossible or "
                                                    "times out. Risks data loss in the guest."),
    apply: bool = ApplyOpt, as_json: bool = JsonOpt, journal: Optional[Path] = JournalOpt,
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
) -> int:
    """Shut the guest down gracefully through VMware Tools."""
    return _run("vm.shutdown", vm, {"timeout": shutdown_timeout, "hard": hard}, apply=apply, as_json=as_json,
                journal=journal, **_conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout))


def _plain_vm_command(app: typer.Typer, name: str, op_id: str, help_text: str) -> None:
    """Register a command that runs one VM operation with no options of its own (plan, or --apply)."""

    def command(
        vm: str = VmArg, apply: bool = ApplyOpt, as_json: bool = JsonOpt, journal: Optional[Path] = JournalOpt,
        server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
        ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
        insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
    ) -> int:
        return _run(op_id, vm, {}, apply=apply, as_json=as_json, journal=journal,
                    **_conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout))

    command.__name__ = f"{op_id.replace('.', '_')}_command"
    app.command(name, help=help_text)(command)


# The operations that take no options: (group, command, operation, help)
_PLAIN_VM_COMMANDS = (
    (coexist_app, "detach", "vm.coexistence_disk_detach",
     "Remove the coexistence disk guestprep attached, delete its file and its empty controller."),
    (power_app, "on", "vm.power_on", "Power the VM on (preparation window, or rollback after a cutover)."),
)
for _group, _name, _op_id, _help in _PLAIN_VM_COMMANDS:
    _plain_vm_command(_group, _name, _op_id, _help)


@vm_app.command("snapshot")
def snapshot(
    vm: str = VmArg,
    name: str = typer.Option("guestprep-pre-cutover", "--name", help="Snapshot name."),
    quiesce: bool = typer.Option(True, "--quiesce/--no-quiesce", help="Quiesce the guest file systems via Tools."),
    apply: bool = ApplyOpt, as_json: bool = JsonOpt, journal: Optional[Path] = JournalOpt,
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
) -> int:
    """Take a pre-cutover snapshot (quiesced by default)."""
    return _run("vm.snapshot", vm, {"name": name, "quiesce": quiesce}, apply=apply, as_json=as_json,
                journal=journal, **_conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout))


@vm_app.command("facts")
def facts(
    vm: str = VmArg,
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
) -> int:
    """Print one VM's facts (SourceVM JSON)."""
    from guestprep.operations.vm import target

    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        _, record = target.load(session, vm, f"vsphere {server}")
    finally:
        session.close()
    sys.stdout.write(json.dumps(record.to_dict(), indent=1, sort_keys=True) + "\n")
    return 0


@vm_app.command("disks")
def disks(
    vm: str = VmArg,
    out: Optional[Path] = typer.Option(None, "--out", "-o", dir_okay=False,
                                       help="Write the locators with the session cookie to this new file (mode "
                                            "0600); the session is left open for the converter."),
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
) -> int:
    """Disk locators: datastore path and HTTPS datastore URL of every disk (and its flat extent)."""
    from guestprep.operations.vm import target
    from guestprep.vsphere.locator import locate

    if out is not None and out.exists():
        raise ConfigError("exists already: locator files are created, never overwritten", where=str(out))
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    keep_session = False
    try:
        _, record = target.load(session, vm, f"vsphere {server}")
        doc = locate(record, session.host, session.port, session.cookie() if out else None)
        if out is not None:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(json.dumps(doc, indent=1) + "\n")
            keep_session = True  # logging out would invalidate the cookie the converter needs
            console.print(f"locators for {len(doc['disks'])} disk(s) written to {safe(str(out))} (contains the "
                          "session cookie: keep it private)")
        else:
            sys.stdout.write(json.dumps(doc, indent=1) + "\n")
    finally:
        if not keep_session:
            session.close()
    return 0
