"""`guestprep inventory vsphere`: build fleet inventories from external sources."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from guestprep.commands.options import (
    PasswordEnvOpt, ServerOpt, ThumbOpt, UserOpt, VsphereCaOpt, VsphereInsecureOpt, VsphereTimeoutOpt,
)
from guestprep.commands.vsphere_login import open_session
from guestprep.console import make_console, safe

console = make_console()

inventory_app = typer.Typer(help="Build fleet inventories from external sources.", no_args_is_help=True)


@inventory_app.command("vsphere")
def inventory_vsphere(
    server: str = ServerOpt, user: str = UserOpt, password_env: str = PasswordEnvOpt,
    ca_bundle: Optional[Path] = VsphereCaOpt, thumbprint: Optional[str] = ThumbOpt,
    insecure: bool = VsphereInsecureOpt, timeout: float = VsphereTimeoutOpt,
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
