"""`guestprep host ...`: the host-side tools, the same as `guestprep-host`."""

from __future__ import annotations

import typer

# Every argument, --help included, belongs to guestprep-host.
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def host(ctx: typer.Context) -> int:
    """Host-side tools (inspect, audit, convert): same as guestprep-host."""
    from hostside.cli import main as host_main

    return host_main(list(ctx.args) or ["--help"])
