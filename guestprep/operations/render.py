"""Terminal output of prepare/rollback: one block per guest (printed whole) and a summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.constrain import Constrain
from rich.rule import Rule
from rich.syntax import Syntax
from rich.table import Table

from guestprep.console import RULE_WIDTH, safe, visible

STATUS_STYLE = {"planned": "yellow", "applied": "green", "unchanged": "green", "rolled_back": "green",
                "nothing": "green", "failed": "red", "not_verified": "red", "error": "red", "unreachable": "magenta",
                "interrupted": "yellow", "not_run": "dim", "unknown": "magenta"}


_text = safe  # every guest/journal/plan value passes guestprep.console.safe before rich sees it


def _rule(title: str) -> RenderableType:
    return Constrain(Rule(title), RULE_WIDTH)  # piped consoles are unbounded; a header rule is not


def prepare_block(r: Any, applied: bool) -> Group:
    """Everything about one guest's plan/apply, as one renderable."""
    out: list[RenderableType] = [_rule(f"[bold]{_text(r.guest)}[/] ({_text(r.os)})"
                                       + (f"  run {_text(r.run_id)}" if applied else ""))]
    if r.error:
        out.append(f"[red]error:[/] {_text(r.error)}")
    for o in r.ops:
        if o.error and "cannot tell: " in o.error:
            out.append(f"[magenta]? {_text(o.operation)}[/]: {_text(o.error)}")
            continue
        if o.error:
            out.append(f"[red]✗ {_text(o.operation)}[/]: {_text(o.error)}")
            continue
        p = o.plan
        if p.empty:
            out.append(f"[green]✓ {_text(o.operation)}[/]: nothing to do ({_text(p.reason)})")
        else:
            state = ""
            if o.verified is True:
                state = " [green]applied, verified[/]"
            elif o.verified is False:
                state = " [red]applied, NOT verified[/]"
            elif applied and o.applied is not None:
                state = " [yellow]applied, not verified (interrupted)[/]"
            elif applied and r.interrupted:
                state = " [yellow]not applied (interrupted)[/]"
            out.append(f"[yellow]● {_text(o.operation)}[/]: {_text(p.reason)}{state}")
            for c in p.changes:
                out.append(f"    {_text(c.kind):18} {_text(c.target)}")
                if c.diff:  # Syntax does not parse markup, but guest file content may hold escape sequences
                    out.append(Syntax(visible(c.diff.rstrip("\n"), multiline=True), "diff", theme="ansi_dark",
                                      background_color="default"))
        for w in p.warnings:
            out.append(f"    [yellow]warning:[/] {_text(w)}")
        for prob in o.problems:
            out.append(f"    [red]verify:[/] {_text(prob)}")
    if not r.changes:
        if not r.error:
            out.append("nothing to change")
    elif not applied:
        out.append(f"{r.changes} change(s) planned (run with --apply to change the guest)")
    else:
        done = sum(len(o.plan.changes) for o in r.ops if o.plan and o.applied is not None)
        out.append(f"{done} change(s) applied" + (f", {r.changes - done} not applied" if done < r.changes else ""))
    return Group(*out)


def rollback_block(r: Any) -> Group:
    out: list[RenderableType] = [_rule(f"[bold]{_text(r.guest)}[/] ({_text(r.os)})")]
    if r.error:
        out.append(f"[red]error:[/] {_text(r.error)}")
    elif not r.restored:
        out.append("nothing to roll back")
    for d in r.restored:
        out.append(f"{_text(str(d.get('action', '')))} {_text(str(d.get('target', '')))}")
    return Group(*out)


def _status(s: str) -> str:
    return f"[{STATUS_STYLE.get(s, '')}]{_text(s)}[/]"


def prepare_table(doc: dict[str, Any]) -> Table:
    table = Table(title=f"guestprep prepare ({'apply' if doc['apply'] else 'plan'})")
    for col in ("guest", "os", "status", "planned", "applied", "verified", "seconds"):
        table.add_column(col, overflow="fold")
    table.add_column("problem", overflow="fold", ratio=1)  # never cut: wraps at whole words on a terminal
    for g in doc["guests"]:
        table.add_row(_text(g["guest"]), _text(g["os"]), _status(g["status"]), str(len(g["planned"])),
                      str(len(g["applied"])), str(len(g["verified"])), f"{g['seconds']:.1f}",
                      _text(g["failure"] or ""))
    return table


def rollback_table(doc: dict[str, Any]) -> Table:
    table = Table(title="guestprep rollback")
    for col in ("guest", "os", "status", "restored", "seconds"):
        table.add_column(col, overflow="fold")
    table.add_column("problem", overflow="fold", ratio=1)
    for g in doc["guests"]:
        problem = g["error"] or ("not started: interrupted (Ctrl-C)" if g["status"] == "not_run" else "")
        table.add_row(_text(g["guest"]), _text(g["os"]), _status(g["status"]), str(len(g["restored"])),
                      f"{g['seconds']:.1f}", _text(problem))
    return table


def summary_line(doc: dict[str, Any]) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in doc["summary"].items() if s != "total")
    return _text(f"{doc['summary']['total']} guest(s): {counts}")
