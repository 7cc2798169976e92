"""Every guestprep command: parse, call one stage function, render. Nothing below imports this package.

The console entry point is guestprep.cli:main (kept for ``python -m guestprep.cli`` and the
installed ``guestprep`` script); it is :func:`main` here.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Optional

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


def _plain_help_types() -> None:
    """Help shows what to type, not Python annotations: a flag has no value (was ``<bool>``), a
    repeatable value is ``<str> (repeatable)`` (was ``<list[str]>``), a bounded number ``<float> [x>=1.0]``."""
    from typer import core

    display_type = core._TyperParameter.display_type
    option_type = core.TyperOption.display_type_rich

    def plain(self, ctx):
        label = display_type(self, ctx)
        if label.startswith("<list[") and label.endswith("]>"):
            label = f"<{label[6:-2]}>" + (" (repeatable)" if isinstance(self, core.TyperOption) else "")
        return label.replace(" range>", ">")

    def option(self, ctx):
        return None if (self.is_flag or self.count) and self.metavar is None else option_type(self, ctx)

    core._TyperParameter.display_type = plain
    core.TyperOption.display_type_rich = option


_plain_help_types()

app = typer.Typer(
    name="guestprep",
    help="Ready VMware guests for Proxmox VE: preflight, prepare, convert, finalize.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion (bash, zsh, fish, PowerShell)
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
def _root(
    ctx: typer.Context,
    version: bool = typer.Option(False, "--version", help="Print the version and exit."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, show_default=False,
                                help="Show each connection and command run on a guest on stderr."),
    log_file: Optional[Path] = typer.Option(None, "--log-file", dir_okay=False,
                                            help="Append a JSON-lines log of what was run where (guest, transport, "
                                                 "command, rc, duration; secrets masked) to FILE."),
) -> None:
    if version:
        console.print(f"guestprep {__version__}")
        raise typer.Exit(0)
    if verbose or log_file:
        from guestprep.connectors import runlog

        runlog.configure(log_file, verbose)
        runlog.record("start", version=__version__, command=" ".join(sys.argv[1:]))


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


def _legacy_spellings(argv: list[str]) -> list[str]:
    """Old spellings that still work, with a note: ``finalize --json PATH`` is now ``--json-out PATH``
    (``--json`` means JSON on stdout, as for prepare, rollback and checks list)."""
    if not argv or argv[0] != "finalize":
        return argv
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg == "--json" and not out[i + 1].startswith("-"):
            out[i] = "--json-out"
            err_console.print(f"[yellow]note:[/] `finalize --json {safe(out[i + 1])}` is deprecated; "
                              f"write `--json-out {safe(out[i + 1])}` (`--json` alone prints the JSON on stdout)")
            break
    return out


def _late_interrupt(signum, frame) -> None:
    """Ctrl-C after the command finished (its reports written, its exit code decided), while the
    interpreter shuts down: end now as interrupted. Without this a press in that window killed the
    process by SIGINT (exit -2, not 130): seen under load when a second Ctrl-C followed the first."""
    import os

    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:   # a closed pipe: nothing more can be said anyway
            pass
    os._exit(130)


def main(argv: list[str] | None = None) -> None:
    """Entry point: bad input becomes a clear message and an exit code, never a traceback."""
    try:
        _main(argv)
    finally:
        import signal
        import threading

        if argv is None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, _late_interrupt)


def _main(argv: list[str] | None) -> None:
    try:
        app(args=_legacy_spellings(list(sys.argv[1:] if argv is None else argv)), prog_name="guestprep")  # standalone: usage errors exit 2 with Typer's message
    except GuestprepError as exc:
        err_console.print(f"[red]error:[/] {safe(exc, multiline=True)}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except OSError as exc:  # a file we were told to read or write: name it, no traceback
        err_console.print(f"[red]error:[/] {safe(exc, multiline=True)}")
        sys.exit(EXIT_USAGE)
