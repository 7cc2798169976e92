"""`guestprep preflight`: check migration readiness (read-only) and write reports."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from guestprep import inventory
from guestprep.commands.options import (
    AcceptOpt, CaOpt, InsecureOpt, InventoryOpt, KnownHostsOpt, LocalOpt, TimeoutOpt, connect_options,
)
from guestprep.commands.progress import FleetProgress, finish_first
from guestprep.console import make_console, safe
from guestprep.errors import EXIT_OK, EXIT_UNREACHABLE, ConfigError
from guestprep.models import Severity, Status
from guestprep.secrets import redact_doc

console = make_console()
err_console = make_console(stderr=True)


def preflight(
    guests: List[str] = typer.Argument(None, help="Guest names/globs/groups from the inventory, or [user@]host[:port]."),
    inventory_file: Optional[Path] = InventoryOpt,
    local: bool = LocalOpt,
    parallel: int = typer.Option(32, "--parallel", "-p", min=1, max=1024, help="Guests checked at once."),
    timeout: float = TimeoutOpt,
    formats: str = typer.Option("json,html", "--format", "-f", help="Comma list of json, html, junit, csv."),
    out: Path = typer.Option(Path("reports"), "--out", "-o", help="Directory for the reports.", file_okay=False),
    fail_on: str = typer.Option("blocker", "--fail-on", help="Exit 1 when findings at/above: blocker or warning."),
    phase: str = typer.Option("pre", "--phase", help="pre (on VMware) or post (after the move)."),
    waivers_file: Optional[Path] = typer.Option(None, "--waivers", help="Waivers YAML (reason and expiry required)."),
    accept_new_host_keys: bool = AcceptOpt,
    known_hosts: Optional[Path] = KnownHostsOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Optional[Path] = CaOpt,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary table."),
) -> int:
    """Check migration readiness (read-only) and write reports."""
    from guestprep import report
    from guestprep.preflight import FleetOptions, run_preflight
    from guestprep.report import waivers

    if fail_on not in ("blocker", "warning"):
        raise ConfigError("must be 'blocker' or 'warning'", where="--fail-on")
    if phase not in ("pre", "post"):
        raise ConfigError("must be 'pre' or 'post'", where="--phase")
    fmt_list = report.parse_formats(formats)
    waiver_list = waivers.load(waivers_file) if waivers_file else []
    selected = inventory.select_guests(guests or [], inventory_file, local)
    if waivers_file:
        from guestprep.checks import registry
        from guestprep.commands.waiver_check import validate as validate_waivers

        validate_waivers(waivers_file, waiver_list, [g.name for g in selected],
                              [c.meta.id for c in registry.all_checks(None)])
    options = FleetOptions(parallel=parallel, timeout=timeout, phase=phase,
                           connect=connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle))
    with FleetProgress("preflight", len(selected), quiet) as progress:
        result = run_preflight(selected, options, on_done=progress.done, on_tick=progress.tick,
                               on_interrupt=_on_interrupt)
    expired = result.apply_waivers(waiver_list)
    # run id, the input files (path + SHA-256) and inventory groups, then the one redaction pass:
    # the files and the summary below show the same, redacted, data
    doc = redact_doc(report.annotate(result.to_dict(), guests=selected, inventory=inventory_file,
                                     waivers=waivers_file))
    with finish_first("writing the reports") as late_interrupt:
        written = report.write_reports(doc, fmt_list, out)
    if not quiet:
        print_summary(doc)
    if waivers_file:
        from guestprep.commands.waiver_check import expired as expired_waivers, line_of

        for w in expired_waivers(waiver_list):
            effect = "the findings it covered are open again" if w in expired else "it matched no failing finding"
            err_console.print(f"[yellow]waiver expired[/] {safe(line_of(waivers_file, waiver_list, w))}: "
                              f"{safe(w.check)} for {safe(w.guest)} ({safe(w.reason)}), expired {safe(w.expires)}; "
                              f"{effect}")
    if not result.complete:
        names = ", ".join(safe(n) for n in result.not_run[:10]) + (" ..." if len(result.not_run) > 10 else "")
        err_console.print(f"[yellow]interrupted:[/] {len(result.not_run)} guest(s) not checked ({names}); they are in "
                          "every report as not_checked, and the report is marked incomplete")
    err_console.print("reports: " + ", ".join(safe(p) for p in written))
    code = report.exit_code(result.findings(), fail_on)
    if code == EXIT_OK and any(f.status.undecided and not f.severity.is_notice for f in result.findings()):
        code = EXIT_UNREACHABLE  # a check that cannot tell is not a pass: the fleet is not known to be ready
    return 130 if not result.complete or late_interrupt else code


def _on_interrupt(presses: int, running: list[str] | tuple = ()) -> None:
    if presses == 1:
        err_console.print(f"[yellow]interrupted:[/] closing {len(running)} connection(s) in progress; not waiting "
                          "for them (preflight changes nothing on a guest). Writing the reports of the guests "
                          "checked so far.")


def counts_in_summary(finding: dict) -> bool:
    """A rendered finding the summary counts: open, and not a notice (info)."""
    return Status(finding["status"]).is_open and not Severity(finding["severity"]).is_notice


def print_summary(doc: dict) -> None:
    table = Table(title=f"guestprep preflight ({safe(doc['phase'])})", show_lines=False)
    table.add_column("guest", overflow="fold")
    for col in ("os", "readiness", "blockers", "warnings"):
        table.add_column(col, no_wrap=True)
    table.add_column("top finding", overflow="fold", ratio=1)  # never cut: wraps at whole words on a terminal
    style = {"ready": "green", "warnings": "yellow", "blocked": "red", "unknown": "magenta"}
    for g in doc["guests"]:
        open_ = [f for f in g["findings"] if counts_in_summary(f)]
        blockers = sum(1 for f in open_ if f["severity"] == "blocker")
        warnings = sum(1 for f in open_ if f["severity"] == "warning")
        undecided = [f for f in g["findings"] if Status(f["status"]).undecided]
        # what makes the verdict: a failing blocker, else what could not be told, else a warning
        top = ([f for f in open_ if f["severity"] == "blocker"] + undecided
               + [f for f in open_ if f["severity"] != "blocker"])
        top_text = f"{top[0]['check_id']}: {top[0]['message']}" if top else ""
        table.add_row(safe(g["guest"]), safe(g["os"]), f"[{style.get(g['readiness'], '')}]{safe(g['readiness'])}[/]",
                      str(blockers), str(warnings), safe(top_text))
    console.print(table)
    s = doc["summary"]
    console.print(f"{s['total']} guest(s): {s['ready']} ready, {s['warnings']} with warnings, {s['blocked']} blocked, "
                  f"{s['unknown']} unknown")
