"""`guestprep rollback`: restore what each guest's journal recorded."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from guestprep import inventory
from guestprep.commands.fleet_output import console, emit, on_interrupt
from guestprep.commands.options import (
    CHANGE_PARALLEL, AcceptOpt, CaOpt, InsecureOpt, InventoryOpt, JsonOutOpt, KnownHostsOpt, LocalOpt, ParallelOpt,
    TimeoutOpt, connect_options,
)
from guestprep.errors import ConfigError


def rollback(
    guests: List[str] = typer.Argument(None, help="Guest names/globs/groups from the inventory, or "
                                                  "[user@]host[:port]; '*' selects the whole inventory."),
    inventory_file: Optional[Path] = InventoryOpt,
    local: bool = LocalOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (instead of text)."),
    json_out: Optional[Path] = JsonOutOpt,
    parallel: Optional[int] = ParallelOpt,
    timeout: float = TimeoutOpt,
    accept_new_host_keys: bool = AcceptOpt,
    known_hosts: Optional[Path] = KnownHostsOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Optional[Path] = CaOpt,
) -> int:
    """Restore the files recorded in each guest's journal (/var/lib/guestprep/journal.json)."""
    from guestprep.operations import outcome
    from guestprep.operations.runs import rollback_fleet
    from guestprep.operations.render import rollback_block, rollback_table

    if not guests and not local:
        raise ConfigError("name the guests to roll back (a glob such as '*' or a group selects several)",
                          where="GUEST")
    if json_out is not None:
        outcome.check_out_path(json_out)
    selected = inventory.select_guests(guests or [], inventory_file, local)
    doc, code = rollback_fleet(
        selected, connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle),
        {"timeout": timeout}, parallel=parallel or CHANGE_PARALLEL,
        on_done=None if as_json else (lambda r: console.print(rollback_block(r))), on_interrupt=on_interrupt)
    emit(doc, as_json, json_out, rollback_table)
    return code
