"""`guestprep checks list|show`: the readiness checks guestprep knows."""

from __future__ import annotations

import difflib
import json
import sys
from typing import Optional

import typer
from rich.console import Group
from rich.padding import Padding
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
def checks_show(
    check_id: str = typer.Argument(..., help="Check id, e.g. LNX-INITRAMFS-VIRTIO."),
    as_json: bool = typer.Option(False, "--json", help="The metadata as JSON (for scripts)."),
) -> int:
    """Show one check: what it looks at, why it matters, how to fix it, references."""
    from guestprep.checks import registry

    try:
        c = registry.get(check_id.strip().upper())
    except registry.RegistryError:
        ids = [k.meta.id for k in registry.all_checks()]
        hints = difflib.get_close_matches(check_id.strip().upper(), ids, n=3, cutoff=0.8)
        raise ConfigError(f"unknown check {check_id!r}"
                          + (f" (did you mean {' or '.join(repr(h) for h in hints)}?)" if hints else "")
                          + "; `guestprep checks list` shows them all", where="CHECK_ID") from None
    if as_json:
        sys.stdout.write(json.dumps(c.meta.to_dict(), indent=2, ensure_ascii=False) + "\n")
        return 0
    console.print(check_page(c.meta))
    return 0


def check_page(m) -> Group:
    """One check as a page a person reads: heading, facts line, then prose sections."""
    style = {"blocker": "red", "warning": "yellow", "info": "cyan"}.get(m.severity.value, "")
    out: list = [f"[bold]{safe(m.id)}[/]  {safe(m.title)}",
                 f"[{style}]{safe(m.severity.value)}[/] · os {safe(m.os)} · phase {safe(m.phase)}"
                 + (f" · fixed by {safe(m.fixed_by)} (guestprep prepare --apply)" if m.fixed_by else "")]
    for heading, text in (("Why it matters", m.rationale), ("How to fix it", m.remediation)):
        if text:
            out += ["", f"[bold]{heading}[/]", Padding(safe(text), (0, 0, 0, 2), expand=False)]
    if m.references:
        out += ["", "[bold]References[/]"] + [Padding(safe(r), (0, 0, 0, 2), expand=False) for r in m.references]
    extra = [f"tags: {', '.join(m.tags)}" if m.tags else "", f"sources: {', '.join(m.sources)}" if m.sources else ""]
    if any(extra):
        out += [""] + [f"[dim]{safe(e)}[/]" for e in extra if e]
    return Group(*out)
