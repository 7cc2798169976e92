"""`guestprep facts`: one guest's facts as JSON (read-only)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from guestprep import inventory
from guestprep.commands.options import (
    AcceptOpt, CaOpt, InsecureOpt, InventoryOpt, KnownHostsOpt, LocalOpt, TimeoutOpt, connect_options,
)
from guestprep.errors import ConfigError
from guestprep.secrets import redact_doc


def facts(
    guest: Optional[str] = typer.Argument(None, help="Guest name (with --inventory) or [user@]host[:port]."),
    inventory_file: Optional[Path] = InventoryOpt,
    local: bool = LocalOpt,
    raw: bool = typer.Option(False, "--raw", help="Print the collector's raw JSON instead of the typed facts."),
    timeout: float = TimeoutOpt,
    accept_new_host_keys: bool = AcceptOpt,
    known_hosts: Optional[Path] = KnownHostsOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Optional[Path] = CaOpt,
) -> int:
    """Print one guest's facts as JSON (read-only)."""
    from guestprep.connectors import open_connector
    from guestprep.facts import collect, os_of, to_jsonable

    chosen = inventory.select_guests([guest] if guest else [], inventory_file, local)
    if len(chosen) != 1:
        raise ConfigError(f"facts needs exactly one guest, {len(chosen)} matched", where="arguments")
    g = chosen[0]
    opts = connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle)
    os_name = os_of(g)
    conn = open_connector(g, opts)
    try:
        if raw:
            if os_name != "linux":
                raise ConfigError("--raw is available for Linux guests", where="--raw")
            from guestprep.connectors.base import Script
            from guestprep.facts import linux

            res = conn.run(Script(linux.collector_script(), name="collect.sh"), timeout=timeout, sudo=g.credentials.sudo)
            doc = linux.decode_output(res.stdout, res.rc, res.stderr)
        else:
            doc = to_jsonable(collect(conn, os_name, timeout=timeout, sudo=g.credentials.sudo))
    finally:
        conn.close()
    sys.stdout.write(json.dumps(redact_doc(doc), indent=2, sort_keys=True) + "\n")
    return 0
