"""`guestprep checks list|show`: the readiness checks guestprep knows."""

from __future__ import annotations

import difflib
import json
import sys
from typing import Optional

import typer
from rich.table import Table

from guestprep.console import make_console, safe
from guestprep.errors import ConfigError

console = make_console()

checks_app = typer.Typer(help="The readiness checks guestprep knows.", no_args_is_help=True)


@checks_app.command("list")
def checks_list(
    os: Optional[str] = typer.Option(None, "--os", help="linux, windows, vm or image."),
    as_json: bool = typer.Option(False, "--json", help="Full metadata as JSON."),
) -> int:
    """List every check: id, severity, OS, phase, title."""
    from guestprep.checks import registry
    from guestprep.checks.base import OS_VALUES

    if os is not None and os not in OS_VALUES:
        hint = difflib.get_close_matches(os, sorted(OS_VALUES), n=1)
        raise ConfigError(f"unknown OS {os!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                          + f"; one of: {', '.join(sorted(OS_VALUES))}", where="--os")
    checks = registry.all_checks(os)
    if as_json:
        sys.stdout.write(json.dumps([c.meta.to_dict() for c in checks], indent=2) + "\n")
        return 0
    table = Table(title=f"{len(checks)} checks")
    for col in ("id", "severity", "os", "phase", "title", "fixed by"):
        table.add_column(col)
    for c in checks:
        m = c.meta
        table.add_row(*(safe(v) for v in (m.id, m.severity.value, m.os, m.phase, m.title, m.fixed_by or "")))
    console.print(table)
    return 0


@checks_app.command("show")
def checks_show(check_id: str = typer.Argument(..., help="Check id, e.g. LNX-INITRAMFS-VIRTIO.")) -> int:
    """Show one check's metadata: rationale, remediation, references."""
    from guestprep.checks import registry

    try:
        c = registry.get(check_id.upper())
    except registry.RegistryError as exc:
        raise ConfigError(str(exc), where="CHECK_ID") from None
    sys.stdout.write(json.dumps(c.meta.to_dict(), indent=2) + "\n")
    return 0
