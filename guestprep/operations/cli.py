"""`guestprep prepare` and `guestprep rollback`: plans by default, changes only with --apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.syntax import Syntax

from guestprep.errors import ConfigError

console = Console()


def render(results, applied: bool) -> None:
    for r in results:
        console.rule(f"[bold]{escape(r.guest)}[/] ({r.os})" + (f"  run {r.run_id}" if applied else ""))
        if r.error:
            console.print(f"[red]error:[/] {escape(r.error)}")
            continue
        for o in r.ops:
            if o.error:
                console.print(f"[red]✗ {o.operation}[/]: {escape(o.error)}")
                continue
            p = o.plan
            if p.empty:
                console.print(f"[green]✓ {o.operation}[/]: nothing to do ({escape(p.reason)})")
            else:
                state = ""
                if o.verified is True:
                    state = " [green]applied, verified[/]"
                elif o.verified is False:
                    state = " [red]applied, NOT verified[/]"
                console.print(f"[yellow]● {o.operation}[/]: {escape(p.reason)}{state}")
                for c in p.changes:
                    console.print(f"    {c.kind:18} {escape(c.target)}")
                    if c.diff:
                        console.print(Syntax(c.diff.rstrip("\n"), "diff", theme="ansi_dark", background_color="default"))
            for w in p.warnings:
                console.print(f"    [yellow]warning:[/] {escape(w)}")
            for prob in o.problems:
                console.print(f"    [red]verify:[/] {escape(prob)}")
        total = r.changes
        verb = "applied" if applied else "planned (run with --apply to change the guest)"
        console.print(f"{total} change(s) {verb}" if total else "nothing to change")


def register(app: typer.Typer) -> None:
    from guestprep.cli import AcceptOpt, CaOpt, InsecureOpt, InventoryOpt, KnownHostsOpt, LocalOpt, TimeoutOpt

    @app.command()
    def prepare(
        guests: List[str] = typer.Argument(None, help="Guest names/globs/groups from the inventory, or [user@]host[:port]."),
        inventory_file: Optional[Path] = InventoryOpt,
        local: bool = LocalOpt,
        apply: bool = typer.Option(False, "--apply", help="Execute the plans (default: print them, change nothing)."),
        package_source: Optional[Path] = typer.Option(
            None, "--package-source", file_okay=False,
            help="Directory of package files (qemu-guest-agent and its dependencies) for air-gapped guests."),
        as_json: bool = typer.Option(False, "--json", help="Print plans/results as JSON."),
        timeout: float = TimeoutOpt,
        accept_new_host_keys: bool = AcceptOpt,
        known_hosts: Optional[Path] = KnownHostsOpt,
        insecure: bool = InsecureOpt,
        ca_bundle: Optional[Path] = CaOpt,
    ) -> int:
        """Plan (and with --apply execute and verify) the changes that make guests boot on Proxmox VE."""
        from guestprep.cli import connect_options, select_guests
        from guestprep.connectors import open_connector
        from guestprep.operations import engine

        if package_source is not None and not package_source.is_dir():
            raise ConfigError("not a directory", where=f"--package-source {package_source}")
        selected = select_guests(guests or [], inventory_file, local)
        copts = connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle)
        options = {"timeout": timeout, "package_source": str(package_source) if package_source else None}
        results = [engine.prepare_guest(g, options, lambda g: open_connector(g, copts), apply=apply)
                   for g in selected]
        if as_json:
            print(json.dumps({"schema": "guestprep.prepare/1", "apply": apply,
                              "guests": [r.to_dict() for r in results]}, indent=2))
        else:
            render(results, apply)
        return engine.exit_code(results)

    @app.command()
    def rollback(
        guest: str = typer.Argument(..., help="Guest name from the inventory, or [user@]host[:port]."),
        inventory_file: Optional[Path] = InventoryOpt,
        local: bool = LocalOpt,
        timeout: float = TimeoutOpt,
        accept_new_host_keys: bool = AcceptOpt,
        known_hosts: Optional[Path] = KnownHostsOpt,
        insecure: bool = InsecureOpt,
        ca_bundle: Optional[Path] = CaOpt,
    ) -> int:
        """Restore the files recorded in the guest's journal (/var/lib/guestprep/journal.json)."""
        from guestprep.cli import connect_options, select_guests
        from guestprep.connectors import open_connector
        from guestprep.operations import engine

        selected = select_guests([] if local else [guest], inventory_file, local)
        if len(selected) != 1:
            raise ConfigError(f"{guest!r} names {len(selected)} guests; rollback takes exactly one", where="GUEST")
        copts = connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle)
        done = engine.rollback_guest(selected[0], {"timeout": timeout}, lambda g: open_connector(g, copts))
        if not done:
            console.print("nothing to roll back")
        for d in done:
            console.print(f"{escape(d['action'])} {escape(d['target'])}")
        return 0
