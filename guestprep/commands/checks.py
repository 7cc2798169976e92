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
    # A narrow terminal gets the columns that matter (id, severity, os, title) rather than six squeezed ones;
    # piped output is never narrow (guestprep.console), so scripts always see every column.
    wide = console.width >= 120
    cols = ("severity", "os", "phase", "title", "fixed by") if wide else ("severity", "os", "title")
    table = Table(title=f"{len(checks)} checks")
    table.add_column("id", no_wrap=True)  # an id is never cut: `checks list | grep ID` and a narrow terminal
    for col in cols:
        if col == "title":
            table.add_column(col, overflow="fold", ratio=1)  # whole words wrap; a longer word folds, never "…"
        else:
            table.add_column(col, no_wrap=col != "fixed by", overflow="fold")
    for c in checks:
        m = c.meta
        values = {"severity": m.severity.value, "os": m.os, "phase": m.phase, "title": m.title,
                  "fixed by": m.fixed_by or ""}
        table.add_row(safe(m.id), *(safe(values[col]) for col in cols))
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
