"""`guestprep prepare`: plans by default, changes guests only with --apply."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from guestprep import inventory
from guestprep.commands.fleet_output import console, emit, on_interrupt
from guestprep.commands.options import (
    CHANGE_PARALLEL, PLAN_PARALLEL, AcceptOpt, CaOpt, InsecureOpt, InventoryOpt, JsonOutOpt, KnownHostsOpt, LocalOpt,
    ParallelOpt, TimeoutOpt, connect_options,
)
from guestprep.errors import ConfigError


def prepare(
    guests: List[str] = typer.Argument(None, help="Guest names/globs/groups from the inventory, or [user@]host[:port]."),
    inventory_file: Optional[Path] = InventoryOpt,
    local: bool = LocalOpt,
    apply: bool = typer.Option(False, "--apply", help="Execute the plans (default: print them, change nothing)."),
    package_source: Optional[Path] = typer.Option(
        None, "--package-source", file_okay=False,
        help="Directory of package files (qemu-guest-agent and its dependencies) for air-gapped guests."),
    as_json: bool = typer.Option(False, "--json", help="Print plans/results as JSON (instead of the per-guest text)."),
    json_out: Optional[Path] = JsonOutOpt,
    parallel: Optional[int] = ParallelOpt,
    timeout: float = TimeoutOpt,
    accept_new_host_keys: bool = AcceptOpt,
    known_hosts: Optional[Path] = KnownHostsOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Optional[Path] = CaOpt,
) -> int:
    """Plan (and with --apply execute and verify) the changes that make guests boot on Proxmox VE.

    Guests run in parallel; each one's output is printed whole when it finishes, then a summary table."""
    from guestprep.operations import outcome
    from guestprep.operations.runs import prepare_fleet
    from guestprep.operations.render import prepare_block, prepare_table

    if package_source is not None and not package_source.is_dir():
        raise ConfigError("not a directory", where=f"--package-source {package_source}")
    if json_out is not None:
        outcome.check_out_path(json_out)
    selected = inventory.select_guests(guests or [], inventory_file, local)
    width = parallel or (CHANGE_PARALLEL if apply else PLAN_PARALLEL)
    doc, code = prepare_fleet(
        selected, connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle),
        {"timeout": timeout, "package_source": str(package_source) if package_source else None},
        apply=apply, parallel=width,
        on_done=None if as_json else (lambda r: console.print(prepare_block(r, apply))), on_interrupt=on_interrupt)
    emit(doc, as_json, json_out, prepare_table)
    return code
