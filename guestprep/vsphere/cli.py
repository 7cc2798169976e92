"""CLI for the vSphere source: ``inventory vsphere`` and the ``vm`` sub-app.

Every ``vm`` command that changes something plans by default and acts only with
``--apply``. Passwords come from the environment variable named by --password-env,
else from stdin when it is not a terminal, else from a hidden prompt; never argv.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from guestprep.console import make_console, safe


from guestprep import secrets
from guestprep.errors import ConfigError
from guestprep.models import Plan
from guestprep.operations.base import Applied

console = make_console()
err_console = make_console(stderr=True)

inventory_app = typer.Typer(help="Build fleet inventories from external sources.", no_args_is_help=True)
vm_app = typer.Typer(help="Act on a vSphere VM: coexistence disk, power, snapshot, disk locators. "
                          "Plans by default; --apply acts.", no_args_is_help=True)
coexist_app = typer.Typer(help="The controller-coexistence disk (attach before preparing, detach after).",
                          no_args_is_help=True)
power_app = typer.Typer(help="Power control: graceful shutdown, power on (rollback).", no_args_is_help=True)
vm_app.add_typer(coexist_app, name="coexist")
vm_app.add_typer(power_app, name="power")

DEFAULT_PASSWORD_ENV = "GUESTPREP_VSPHERE_PASSWORD"

ServerOpt = typer.Option(..., "--server", "-s", help="vCenter/ESXi host[:port].")
UserOpt = typer.Option(..., "--user", "-u", help="vSphere user, e.g. administrator@vsphere.local.")
PasswordEnvOpt = typer.Option(DEFAULT_PASSWORD_ENV, "--password-env",
                              help="Environment variable holding the password (else stdin, else a prompt).")
CaOpt = typer.Option(None, "--ca-bundle", help="PEM CA bundle that signs the vCenter certificate.", dir_okay=False)
ThumbOpt = typer.Option(None, "--thumbprint", help="Pin the server certificate by its SHA-256 fingerprint.")
InsecureOpt = typer.Option(False, "--insecure", help="Do not verify the TLS certificate. Never the default.")
TimeoutOpt = typer.Option(60.0, "--timeout", min=1.0, help="Seconds to wait for each vSphere HTTP request.")
ApplyOpt = typer.Option(False, "--apply", help="Act. Without it, print the plan and change nothing.")
JsonOpt = typer.Option(False, "--json", help="Print the plan/result as JSON.")
JournalOpt = typer.Option(None, "--journal", dir_okay=False,
                          help="Append applied VM changes to this JSONL file "
                               "(default $GUESTPREP_STATE_DIR or ~/.local/state/guestprep, vm-journal.jsonl).")


def read_password(env_name: str) -> str:
    if not env_name:
        raise ConfigError("empty environment variable name", where="--password-env")
    value = os.environ.get(env_name)
    if value is None:
        if not sys.stdin.isatty():
            value = sys.stdin.readline().rstrip("\r\n")
            if not value:
                raise ConfigError(f"no password: set {env_name} or pipe it on stdin", where="password")
        else:
            value = typer.prompt("vSphere password", hide_input=True)
    secrets.register(value)
    return value


def open_session(server: str, user: str, password_env: str, ca_bundle: Optional[Path],
                 thumbprint: Optional[str], insecure: bool, timeout: float):
    from guestprep.vsphere.client import connect

    return connect(server, user, read_password(password_env), ca_bundle=str(ca_bundle) if ca_bundle else None,
                   thumbprint=thumbprint, insecure=insecure, timeout=timeout)


# --------------------------------------------------------------------------- inventory


@inventory_app.command("vsphere")
def inventory_vsphere(
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
    timeout: float = TimeoutOpt,
    out: Path = typer.Option(..., "--out", "-o", help="Fleet YAML to write.", dir_okay=False),
    facts_out: Optional[Path] = typer.Option(None, "--facts-out", file_okay=False,
                                             help="Directory for one SourceVM JSON per VM (preflight reads them)."),
) -> int:
    """Read every VM in one PropertyCollector retrieval and write a fleet inventory."""
    from guestprep.vsphere.export import write
    from guestprep.vsphere.inventory import fetch_all

    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        vms = fetch_all(session, where=f"vsphere {server}")
    finally:
        session.close()
    summary = write(vms, out, facts_out, server=server)
    console.print(f"{summary['guests']} guest(s) written to [bold]{safe(str(out))}[/]"
                  + (f", facts in {safe(str(facts_out))}" if facts_out else ""))
    for s in summary["skipped"]:
        console.print(f"  skipped {safe(s['name'])}: {safe(s['reason'])}")
    return 0


# --------------------------------------------------------------------------- vm helpers


def _journal_path(journal: Optional[Path]) -> Path:
    if journal:
        return journal
    base = os.environ.get("GUESTPREP_STATE_DIR") or os.path.expanduser("~/.local/state/guestprep")
    return Path(base) / "vm-journal.jsonl"


def _record(journal: Optional[Path], server: str, moref: str | None, applied: Applied) -> None:
    path = _journal_path(journal)
    path.parent.mkdir(parents=True, exist_ok=True)
    entry = {"at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
             "server": server, "moref": moref, **applied.to_dict()}
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(entry, sort_keys=True) + "\n")


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
    from guestprep.operations.base import registered
    from guestprep.vsphere.actions import find_vm
    from guestprep.vsphere.inventory import fetch_one

    op = registered()[op_id]
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        vm = find_vm(session, vm_ident)
        facts = fetch_one(session, vm, where=f"vsphere {server}")
        plan = op.plan(facts, facts.name, options)
        _show_plan(plan, as_json and not apply)
        if not apply:
            if not plan.empty and not as_json:
                console.print("plan only: nothing changed (use --apply to act)")
            return 0
        applied = op.apply(session, plan, dict(options, vm_object=vm))
        if not plan.empty or applied.steps and applied.steps[0].get("action") != "none":
            _record(journal, server, facts.moref, applied)
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


VmArg = typer.Argument(..., help="VM name, moref (vm-42) or BIOS/instance UUID.")


# --------------------------------------------------------------------------- vm commands


@coexist_app.command("attach")
def coexist_attach(
    vm: str = VmArg,
    controller: Optional[str] = typer.Option(None, "--controller",
                                             help="lsisas, pvscsi, lsilogic, sata or nvme (default: a SCSI type "
                                                  "other than the boot disk's)."),
    size_mib: int = typer.Option(1024, "--size-mib", min=1, help="Size of the thin disk."),
    apply: bool = ApplyOpt, as_json: bool = JsonOpt, journal: Optional[Path] = JournalOpt,
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
    timeout: float = TimeoutOpt,
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
    ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
    timeout: float = TimeoutOpt,
) -> int:
    """Shut the guest down gracefully through VMware Tools."""
    return _run("vm.shutdown", vm, {"timeout": shutdown_timeout, "hard": hard}, apply=apply, as_json=as_json,
                journal=journal, **_conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout))


def _plain_vm_command(app: typer.Typer, name: str, op_id: str, help_text: str) -> None:
    """Register a command that runs one VM operation with no options of its own (plan, or --apply)."""

    def command(
        vm: str = VmArg, apply: bool = ApplyOpt, as_json: bool = JsonOpt, journal: Optional[Path] = JournalOpt,
        server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
        ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
        timeout: float = TimeoutOpt,
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
    ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
    timeout: float = TimeoutOpt,
) -> int:
    """Take a pre-cutover snapshot (quiesced by default)."""
    return _run("vm.snapshot", vm, {"name": name, "quiesce": quiesce}, apply=apply, as_json=as_json,
                journal=journal, **_conn(server, user, password_env, ca_bundle, thumbprint, insecure, timeout))


@vm_app.command("facts")
def facts(
    vm: str = VmArg,
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
    timeout: float = TimeoutOpt,
) -> int:
    """Print one VM's facts (SourceVM JSON)."""
    from guestprep.vsphere.actions import find_vm
    from guestprep.vsphere.inventory import fetch_one

    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    try:
        record = fetch_one(session, find_vm(session, vm), where=f"vsphere {server}")
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
    ca_bundle: Optional[Path] = CaOpt, thumbprint: Optional[str] = ThumbOpt, insecure: bool = InsecureOpt,
    timeout: float = TimeoutOpt,
) -> int:
    """Disk locators: datastore path and HTTPS datastore URL of every disk (and its flat extent)."""
    from guestprep.vsphere.actions import find_vm
    from guestprep.vsphere.inventory import fetch_one
    from guestprep.vsphere.locator import locate

    if out is not None and out.exists():
        raise ConfigError("exists already: locator files are created, never overwritten", where=str(out))
    session = open_session(server, user, password_env, ca_bundle, thumbprint, insecure, timeout)
    keep_session = False
    try:
        record = fetch_one(session, find_vm(session, vm), where=f"vsphere {server}")
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


def register(app: typer.Typer) -> None:
    """Add ``inventory vsphere`` and the ``vm`` sub-app to the main app."""
    app.add_typer(inventory_app, name="inventory")
    app.add_typer(vm_app, name="vm")
