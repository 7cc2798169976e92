"""guestprep command line. Thin: parse options, call one stage, render."""

from __future__ import annotations

import fnmatch
import json
import re
import sys
from pathlib import Path
from typing import List, Optional

import functools
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from guestprep import __version__, inventory
from guestprep.console import make_console, safe
from guestprep.errors import EXIT_USAGE, ConfigError, GuestprepError
from guestprep.models import Credentials, Guest, OSFamily, Transport
from guestprep.secrets import redact_doc

app = typer.Typer(
    name="guestprep",
    help="Ready VMware guests for Proxmox VE: preflight, prepare, convert, finalize.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
checks_app = typer.Typer(help="The readiness checks guestprep knows.", no_args_is_help=True)
app.add_typer(checks_app, name="checks")

console = make_console()
err_console = make_console(stderr=True)

ADHOC_RE = re.compile(r"(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:@\s]+)(?::(?P<port>\d+))?")  # fullmatch


# --------------------------------------------------------------------------- guest selection


def select_guests(names: list[str], inventory_file: Optional[Path], local: bool) -> list[Guest]:
    """Guests from --local, an inventory (filtered by NAME globs), or ad-hoc [user@]host[:port] targets."""
    if local:
        if inventory_file or names:
            raise ConfigError("--local audits this machine; do not combine it with an inventory or guest names",
                              where="--local")
        return [inventory.local_guest()]
    if inventory_file:
        guests = inventory.load(inventory_file)
        chosen = [g for g in guests if not names or any(fnmatch.fnmatchcase(g.name, n) or n in g.groups for n in names)]
        missing = [n for n in names if not any(fnmatch.fnmatchcase(g.name, n) or n in g.groups for g in guests)]
        if missing:
            raise ConfigError(f"no guest or group named {', '.join(missing)} in the inventory", where=str(inventory_file))
        inventory.check_secret_refs(chosen)
        return chosen
    if not names:
        raise ConfigError("name guests with an --inventory file, ad-hoc [user@]host[:port] targets, or use --local",
                          where="arguments")
    return [adhoc_guest(n) for n in names]


def adhoc_guest(target: str) -> Guest:
    m = ADHOC_RE.fullmatch(target)
    if not m:
        raise ConfigError(f"{target!r} is not [user@]host[:port]", where="arguments")
    host = m.group("host").strip("[]")
    if not inventory.ADDRESS_RE.fullmatch(host):
        raise ConfigError(f"{host!r} is not a host name or IP address", where="arguments")
    user = m.group("user")
    if user is not None and not inventory.USER_RE.fullmatch(user):
        raise ConfigError(f"user {user!r} contains characters not allowed in a user name", where="arguments")
    port = int(m.group("port")) if m.group("port") else None
    if port is not None and not 0 < port < 65536:
        raise ConfigError(f"port {port} out of range", where="arguments")
    name = re.sub(r"[^A-Za-z0-9._@-]", "-", host)
    return Guest(name=name, address=host, transport=Transport.SSH, os=OSFamily.AUTO, port=port,
                 credentials=Credentials(user=user), source="arguments")


def connect_options(timeout: float, accept_new_host_keys: bool, known_hosts: Optional[Path], insecure: bool,
                    ca_bundle: Optional[Path]):
    from guestprep.connectors import ConnectOptions

    return ConnectOptions(connect_timeout=min(timeout, 30.0), command_timeout=timeout,
                          accept_new_host_keys=accept_new_host_keys,
                          known_hosts=str(known_hosts) if known_hosts else None,
                          insecure_tls=insecure, ca_bundle=str(ca_bundle) if ca_bundle else None)


# Options shared by every command that reaches guests.
InventoryOpt = typer.Option(None, "--inventory", "-i", help="Fleet YAML or Ansible inventory (YAML/INI).",
                            dir_okay=False)
LocalOpt = typer.Option(False, "--local", help="Audit the machine guestprep runs on (no inventory needed).")
TimeoutOpt = typer.Option(300.0, "--timeout", min=1.0, help="Per-guest timeout in seconds.")
AcceptOpt = typer.Option(False, "--accept-new-host-keys",
                         help="Trust unknown SSH host keys on first use and save them. A changed key is always refused.")
KnownHostsOpt = typer.Option(None, "--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts).")
InsecureOpt = typer.Option(False, "--insecure", help="Do not verify TLS certificates (WinRM/PSRP). Never the default.")
CaOpt = typer.Option(None, "--ca-bundle", help="CA bundle for TLS verification (WinRM/PSRP).")


# --------------------------------------------------------------------------- preflight


@app.command()
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
    from guestprep.fleet import FleetOptions, run_preflight
    from guestprep.report import waivers

    if fail_on not in ("blocker", "warning"):
        raise ConfigError("must be 'blocker' or 'warning'", where="--fail-on")
    if phase not in ("pre", "post"):
        raise ConfigError("must be 'pre' or 'post'", where="--phase")
    fmt_list = report.parse_formats(formats)
    waiver_list = waivers.load(waivers_file) if waivers_file else []
    selected = select_guests(guests or [], inventory_file, local)
    options = FleetOptions(parallel=parallel, timeout=timeout, phase=phase,
                           connect=connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle))
    show = not quiet and err_console.is_terminal
    with Progress(TextColumn("[bold]preflight"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.description}"), console=err_console, disable=not show, transient=True) as progress:
        task = progress.add_task("", total=len(selected))
        result = run_preflight(selected, options,
                               on_done=lambda r: progress.update(task, advance=1, description=safe(r.guest)))
    expired = waivers.apply(result.findings(), waiver_list)
    doc = redact_doc(result.to_dict())  # the files and the summary below show the same, redacted, data
    written = report.write_reports(doc, fmt_list, out)
    if not quiet:
        print_summary(doc)
    for w in expired:
        err_console.print(f"[yellow]waiver expired[/] {safe(w.where)}: {safe(w.check)} ({safe(w.reason)}), "
                          f"expired {safe(w.expires)}")
    if not result.complete:
        err_console.print(f"[yellow]interrupted:[/] {len(result.not_run)} guest(s) not checked; report marked incomplete")
    err_console.print("reports: " + ", ".join(safe(p) for p in written))
    code = report.exit_code(result.findings(), fail_on)
    return 130 if not result.complete else code


def print_summary(doc: dict) -> None:
    table = Table(title=f"guestprep preflight ({safe(doc['phase'])})", show_lines=False)
    for col in ("guest", "os", "readiness", "blockers", "warnings", "top finding"):
        table.add_column(col)
    style = {"ready": "green", "warnings": "yellow", "blocked": "red", "unknown": "magenta"}
    for g in doc["guests"]:
        open_ = [f for f in g["findings"] if f["status"] in ("fail", "error", "unreachable") and f["severity"] != "info"]
        blockers = sum(1 for f in open_ if f["severity"] == "blocker")
        warnings = sum(1 for f in open_ if f["severity"] == "warning")
        top = sorted(open_, key=lambda f: f["severity"] != "blocker")
        top_text = f"{top[0]['check_id']}: {top[0]['message']}"[:90] if top else ""  # cut before escaping
        table.add_row(safe(g["guest"]), safe(g["os"]), f"[{style.get(g['readiness'], '')}]{safe(g['readiness'])}[/]",
                      str(blockers), str(warnings), safe(top_text))
    console.print(table)
    s = doc["summary"]
    console.print(f"{s['total']} guest(s): {s['ready']} ready, {s['warnings']} with warnings, {s['blocked']} blocked, "
                  f"{s['unknown']} unknown")


# --------------------------------------------------------------------------- facts


@app.command()
def facts(
    guest: Optional[str] = typer.Argument(None, help="Guest name (with --inventory) or [user@]host[:port]."),
    inventory_file: Optional[Path] = InventoryOpt,
    local: bool = LocalOpt,
    raw: bool = typer.Option(False, "--raw", help="Print the collector's raw JSON instead of the typed facts."),
    timeout: float = TimeoutOpt,
    accept_new_host_keys: bool = AcceptOpt,
    known_hosts: Optional[Path] = KnownHostsOpt,
    insecure: bool = InsecureOpt,
    ca_bundle: Optional[Path] = CaOpt,
) -> int:
    """Print one guest's facts as JSON (read-only)."""
    from guestprep.connectors import open_connector
    from guestprep.facts import collect, os_of, to_jsonable

    chosen = select_guests([guest] if guest else [], inventory_file, local)
    if len(chosen) != 1:
        raise ConfigError(f"facts needs exactly one guest, {len(chosen)} matched", where="arguments")
    g = chosen[0]
    opts = connect_options(timeout, accept_new_host_keys, known_hosts, insecure, ca_bundle)
    os_name = os_of(g)
    with _closing(open_connector(g, opts)) as conn:
        if raw:
            if os_name != "linux":
                raise ConfigError("--raw is available for Linux guests", where="--raw")
            from guestprep.connectors.base import Script
            from guestprep.facts import linux

            res = conn.run(Script(linux.collector_script(), name="collect.sh"), timeout=timeout, sudo=g.credentials.sudo)
            doc = linux.decode_output(res.stdout, res.rc, res.stderr)
        else:
            doc = to_jsonable(collect(conn, os_name, timeout=timeout, sudo=g.credentials.sudo))
    sys.stdout.write(json.dumps(redact_doc(doc), indent=2, sort_keys=True) + "\n")
    return 0


class _closing:
    def __init__(self, conn):
        self.conn = conn

    def __enter__(self):
        return self.conn

    def __exit__(self, *exc):
        self.conn.close()


# --------------------------------------------------------------------------- checks


@checks_app.command("list")
def checks_list(
    os: Optional[str] = typer.Option(None, "--os", help="linux, windows, vm or image."),
    as_json: bool = typer.Option(False, "--json", help="Full metadata as JSON."),
) -> int:
    """List every check: id, severity, OS, phase, title."""
    from guestprep.checks import registry

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


# --------------------------------------------------------------------------- host side


@app.command("host", context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                                       "help_option_names": []})
def host(ctx: typer.Context) -> int:
    """Host-side tools (inspect, audit, convert): same as guestprep-host."""
    from hostside.cli import main as host_main

    return host_main(list(ctx.args) or ["--help"])


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        console.print(f"guestprep {__version__}")
        raise typer.Exit(0)


def _register_areas() -> None:
    from guestprep.finalize import cli as finalize_cli
    from guestprep.operations import cli as operations_cli
    from guestprep.vsphere import cli as vsphere_cli

    for mod in (operations_cli, vsphere_cli, finalize_cli):
        mod.register(app)
    _exit_with_return_codes(app)


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


_register_areas()


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


if __name__ == "__main__":
    main()
