"""Every guestprep command: parse, call one stage function, render. Nothing below imports this package.

The console entry point is guestprep.cli:main (kept for ``python -m guestprep.cli`` and the
installed ``guestprep`` script); it is :func:`main` here.
"""

from __future__ import annotations

import functools
import sys

import typer

from guestprep import __version__
from guestprep.commands import checks, cutover, facts, finalize, handoff, host, inventory, preflight, prepare, rollback, vm, windows
from guestprep.console import make_console, safe
from guestprep.errors import EXIT_USAGE, GuestprepError

def _help_tables_fold() -> None:
    """Help at 80 columns: a word longer than its column (an option name, a default, a path) folds onto
    the next line instead of ending in "…", which hid the very value the reader looked for."""
    from rich.table import Table
    from typer import rich_utils

    class FoldingTable(Table):
        def add_row(self, *renderables, **kwargs):  # type: ignore[override]
            super().add_row(*renderables, **kwargs)
            for column in self.columns:
                column.overflow = "fold"

    rich_utils.Table = FoldingTable  # type: ignore[misc]
    parameter_help = rich_utils._get_parameter_help

    def folding_parameter_help(*args, **kwargs):
        cell = parameter_help(*args, **kwargs)  # a rich Columns of Text parts (help, [default: ...], ...)
        for part in getattr(cell, "renderables", ()):
            if hasattr(part, "overflow"):
                part.overflow = "fold"
        return cell

    rich_utils._get_parameter_help = folding_parameter_help


_help_tables_fold()

app = typer.Typer(
    name="guestprep",
    help="Ready VMware guests for Proxmox VE: preflight, prepare, convert, finalize.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = make_console()
err_console = make_console(stderr=True)

# The order here is the order `guestprep --help` lists them in.
app.add_typer(checks.checks_app, name="checks")
app.command()(preflight.preflight)
app.command()(facts.facts)
app.command("host", context_settings=host.CONTEXT)(host.host)
app.command()(prepare.prepare)
app.command()(rollback.rollback)
app.command("handoff")(handoff.handoff)
app.command("finalize")(finalize.finalize)
app.add_typer(inventory.inventory_app, name="inventory")
app.add_typer(vm.vm_app, name="vm")
app.add_typer(windows.windows_app, name="windows")
app.add_typer(cutover.cutover_app, name="cutover")


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"guestprep {__version__}")
        raise typer.Exit(0)


def _exit_with_return_codes(typer_app: typer.Typer) -> None:
    """Commands return their exit code; Typer's standalone mode would ignore it, so raise Exit."""

    def wrap(func):
        if getattr(func, "_returns_exit_code", False):
            return func

        @functools.wraps(func)
        def wrapper(*args, **kwargs):
            rv = func(*args, **kwargs)
            if isinstance(rv, int) and not isinstance(rv, bool) and rv != 0:
                raise typer.Exit(rv)
            return None

        wrapper._returns_exit_code = True
        return wrapper

    for cmd in typer_app.registered_commands:
        if cmd.callback is not None:
            cmd.callback = wrap(cmd.callback)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _exit_with_return_codes(group.typer_instance)


_exit_with_return_codes(app)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes a clear message and an exit code, never a traceback."""
    try:
        app(args=argv, prog_name="guestprep")  # standalone: usage errors exit 2 with Typer's message
    except GuestprepError as exc:
        err_console.print(f"[red]error:[/] {safe(exc, multiline=True)}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # a file we were told to read or write: name it, no traceback
        err_console.print(f"[red]error:[/] {safe(exc, multiline=True)}")
        sys.exit(EXIT_USAGE)
