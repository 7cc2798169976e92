"""`guestprep windows validate`: the Windows validation kit against one lab VM (evidence kept).

The kit (guestprep.operations.windows.validation) runs the ordinary commands as child
processes and keeps their output; this command only passes the options on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

windows_app = typer.Typer(help="Windows guests: the validation kit for a lab VM.", no_args_is_help=True)


@windows_app.command("validate")
def validate(
    guest: str = typer.Argument(..., help="The guest's name in the inventory (one lab VM, never production)."),
    inventory_file: Path = typer.Option(..., "--inventory", "-i", dir_okay=False,
                                        help="Fleet YAML or Ansible inventory naming the guest."),
    evidence: Path = typer.Option(..., "--evidence", help="New directory for the evidence (must not exist)."),
    ca_bundle: Optional[Path] = typer.Option(None, "--ca-bundle",
                                             help="CA bundle for the guest's WinRM/PSRP certificate."),
    insecure: bool = typer.Option(False, "--insecure", help="Do not verify TLS (lab only)."),
    timeout: float = typer.Option(900.0, "--timeout", min=1.0, help="Per-step guest timeout in seconds."),
    skip_rollback: bool = typer.Option(False, "--skip-rollback",
                                       help="Leave the guest prepared (to go on with a cutover)."),
) -> int:
    """Validate the Windows flow on one lab VM: preflight, prepare (plan, apply, replan), verify, rollback.

    Every step's JSON output, exit code and duration go into the evidence directory
    (see docs/windows-validation.md for what only a real guest proves)."""
    from guestprep.operations.windows import validation

    argv = [guest, "--inventory", str(inventory_file), "--evidence", str(evidence), "--timeout", f"{timeout:g}"]
    if ca_bundle is not None:
        argv += ["--ca-bundle", str(ca_bundle)]
    if insecure:
        argv.append("--insecure")
    if skip_rollback:
        argv.append("--skip-rollback")
    return validation.run(argv)
