"""`guestprep prepare` and `guestprep rollback`: plans by default, changes only with --apply."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from guestprep.console import make_console, safe
from guestprep.errors import ConfigError, GuestprepError
from guestprep.secrets import redact_doc
from guestprep.operations.render import prepare_block

console = make_console()
err_console = make_console(stderr=True)

# Plans only read guests, like preflight. Apply and rollback change guests: at most 8 at once keeps
# a mistake (bad package source, wrong inventory group) to a few guests before Ctrl-C, and keeps
# initramfs rebuilds off shared datastores and package mirrors in bursts of dozens.
PLAN_PARALLEL = 32
CHANGE_PARALLEL = 8

ParallelOpt = typer.Option(None, "--parallel", "-p", min=1, max=1024,
                           help=f"Guests handled at once (default {PLAN_PARALLEL} for plans, "
                                f"{CHANGE_PARALLEL} for --apply and rollback).")
JsonOutOpt = typer.Option(None, "--json-out", dir_okay=False,
                          help="Also write per-guest results (status, planned/applied/verified ops, error) to FILE "
                               "as JSON, atomically.")


def _on_interrupt(presses: int) -> None:
    if presses == 1:
        err_console.print("[yellow]interrupted:[/] no new guest starts; running guests stop after the operation in "
                          "progress (their journals stay valid). Ctrl-C again closes their connections.")
    else:
        err_console.print("[yellow]aborting:[/] closing connections; steps already on a guest finish there")


def _crashed_result(guest, exc: BaseException):
    from guestprep.facts import os_of
    from guestprep.operations.engine import GuestResult

    return GuestResult(guest.name, os_of(guest), error=f"internal error: {type(exc).__name__}: {exc}", error_code=1)


def register(app: typer.Typer) -> None:
    from guestprep.cli import AcceptOpt, CaOpt, InsecureOpt, InventoryOpt, KnownHostsOpt, LocalOpt, TimeoutOpt

    @app.command()
    def prepare(
        guests: List[str] = typer.Argument(None, help="Guest names/globs/groups from the inventory, or [user@]host[:port]."),
        inventory_file: Optional[Path] = InventoryOpt,
        local: bool = LocalOpt,
        apply: bool = typer.Option(False, "--apply", help="Execute the plans (default: print them, change nothing)."),
        package_source: Optional[Path] = typer.Option(
            None, "--package-source", file_okay=False,
            help="Directory of package files (qemu-guest-agent and its dependencies) for air-gapped guests."),
        as_json: bool = typer.Option(False, "--json", help="Print plans/results as JSON (instead of the per-guest text)."),
        json_out: Optional[Path] = JsonOutOpt,
        parallel: Optional[int] = ParallelOpt,
        timeout: float = TimeoutOpt,
        accept_new_host_keys: bool = AcceptOpt,
        known_hosts: Optional[Path] = KnownHostsOpt,
        insecure: bool = InsecureOpt,
        ca_bundle: Optional[Path] = CaOpt,
    ) -> int:
        """Plan (and with --apply execute and verify) the changes that make guests boot on Proxmox VE.

        Guests run in parallel; each one's output is printed whole when it finishes, then a summary table."""
        from guestprep.cli import connect_options, select_guests
        from guestprep.connectors import open_connector
        from guestprep.facts import os_of
        from guestprep.operations import engine, outcome
        from guestprep.operations.parallel import run_guests
        from guestprep.operations.render import prepare_table

        if package_source is not None and not package_source.is_dir():
            raise ConfigError("not a directory", where=f"--package-source {package_source}")
        if json_out is not None:
            outcome.check_out_path(json_out)
        selected = select_guests(guests or [], inventory_file, local)
        copts = connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle)
        options = {"timeout": timeout, "package_source": str(package_source) if package_source else None}
        width = parallel or (CHANGE_PARALLEL if apply else PLAN_PARALLEL)

        def job(g, interrupt):
            r = engine.prepare_guest(g, options, interrupt.tracking(lambda g: open_connector(g, copts)),
                                     apply=apply, stop=interrupt.requested)
            if interrupt.aborted and r.error:
                r.interrupted, r.error = True, f"aborted (Ctrl-C twice): {r.error}"
            return r

        started = outcome.now()
        run = run_guests(selected, job, width, _crashed_result,
                         on_done=None if as_json else (lambda r: console.print(prepare_block(r, apply))),
                         on_interrupt=_on_interrupt)
        entries = {r.guest: outcome.prepare_entry(r, apply) for r in run.results}
        ordered = [entries.get(g.name) or outcome.not_run_entry(g.name, os_of(g)) for g in selected]
        doc = outcome.fleet_doc("guestprep.prepare/1", ordered, apply=apply, started=started, parallel=width,
                                complete=run.complete, not_run=run.not_run)
        _emit(doc, as_json, json_out, prepare_table)
        return outcome.prepare_exit(run.results, run.interrupted)

    @app.command()
    def rollback(
        guests: List[str] = typer.Argument(None, help="Guest names/globs/groups from the inventory, or "
                                                      "[user@]host[:port]; '*' selects the whole inventory."),
        inventory_file: Optional[Path] = InventoryOpt,
        local: bool = LocalOpt,
        as_json: bool = typer.Option(False, "--json", help="Print the results as JSON (instead of text)."),
        json_out: Optional[Path] = JsonOutOpt,
        parallel: Optional[int] = ParallelOpt,
        timeout: float = TimeoutOpt,
        accept_new_host_keys: bool = AcceptOpt,
        known_hosts: Optional[Path] = KnownHostsOpt,
        insecure: bool = InsecureOpt,
        ca_bundle: Optional[Path] = CaOpt,
    ) -> int:
        """Restore the files recorded in each guest's journal (/var/lib/guestprep/journal.json)."""
        import time

        from guestprep.cli import connect_options, select_guests
        from guestprep.connectors import open_connector
        from guestprep.facts import os_of
        from guestprep.operations import engine, outcome
        from guestprep.operations.parallel import run_guests
        from guestprep.operations.render import rollback_block, rollback_table

        if not guests and not local:
            raise ConfigError("name the guests to roll back (a glob such as '*' or a group selects several)",
                              where="GUEST")
        if json_out is not None:
            outcome.check_out_path(json_out)
        selected = select_guests(guests or [], inventory_file, local)
        copts = connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle)

        def job(g, interrupt):
            r = outcome.RollbackResult(g.name, os_of(g))
            started = time.monotonic()
            try:
                r.restored = engine.rollback_guest(g, {"timeout": timeout},
                                                   interrupt.tracking(lambda g: open_connector(g, copts)))
            except GuestprepError as exc:
                r.error, r.error_code = str(exc), exc.exit_code
            r.seconds = time.monotonic() - started
            return r

        def crashed(g, exc):
            return outcome.RollbackResult(g.name, os_of(g), error=f"internal error: {type(exc).__name__}: {exc}",
                                          error_code=1)

        started = outcome.now()
        run = run_guests(selected, job, parallel or CHANGE_PARALLEL, crashed,
                         on_done=None if as_json else (lambda r: console.print(rollback_block(r))),
                         on_interrupt=_on_interrupt)
        entries = {r.guest: r.to_dict() for r in run.results}
        ordered = [entries.get(g.name) or {"guest": g.name, "os": os_of(g), "status": "not_run", "restored": [],
                                           "error": None, "seconds": 0.0} for g in selected]
        doc = outcome.fleet_doc("guestprep.rollback/1", ordered, started=started, parallel=parallel or CHANGE_PARALLEL,
                                complete=run.complete, not_run=run.not_run)
        _emit(doc, as_json, json_out, rollback_table)
        return outcome.rollback_exit(run.results, run.interrupted)


def _emit(doc: dict, as_json: bool, json_out: Optional[Path], table) -> None:
    """The end of a fleet run: the JSON file, then stdout (JSON or the summary table)."""
    from guestprep.operations import outcome
    from guestprep.operations.render import summary_line

    doc = redact_doc(doc)  # the one redaction pass for the file and stdout
    if json_out is not None:
        outcome.write_json(json_out, doc)
    if as_json:
        print(json.dumps(doc, indent=2))
    else:
        console.print(table(doc))
        console.print(summary_line(doc))
    if not doc["complete"]:
        err_console.print(f"[yellow]interrupted:[/] {len(doc['not_run'])} guest(s) not started; results marked "
                          "\"complete\": false")
    if json_out is not None:
        err_console.print(f"results: {safe(json_out)}")
