"""Live progress of a cutover wave (`run`, `resume`, `rollback`, `rehearse`), on stderr (stdout keeps the per-VM outcome).

On a terminal: one table row per VM (VM, node, step, elapsed, state, what it does now),
redrawn a few times a second; failures and final phases are also printed above it, so they
stay in the scrollback. Elsewhere (a pipe, a CI log): one plain line per event, in the order
they happened, with no colour, cursor movement or carriage return, even when FORCE_COLOR or
TTY_COMPATIBLE make rich believe the pipe is a terminal:

    08:12:03 app01 [pve1] convert ...
    08:12:03 app01 [pve1] converting Hard disk 1 -> local:120/vm-120-disk-0.qcow2 on pve1
    08:12:09 app01 [pve1] convert done 5.8 s
    08:12:15 app01 [pve1] verify FAILED 5.0 s: the guest agent did not answer ...
    08:12:15 app01 [pve1] phase rolling_back

Thread-safe: events arrive from the VM jobs' threads.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable

from rich.console import Console
from rich.live import Live
from rich.table import Table
from rich.text import Text

from guestprep.console import make_console, visible
from guestprep.cutover.controller import Event

STATE_STYLE = {"done": "green", "running": "cyan", "pending": "dim", "failed": "red", "rollback_failed": "red",
               "hold_failed": "red", "rolled_back": "yellow", "held": "yellow", "rolling_back": "yellow",
               "holding": "yellow", "rehearsing": "cyan", "cleaning": "yellow", "would_boot": "green",
               "would_not_boot": "red", "cleaned": "green", "left_behind": "red"}
FINAL = ("done", "failed", "rolled_back", "held", "rollback_failed", "hold_failed",
         "would_boot", "would_not_boot", "cleaned", "left_behind")   # the last four: `cutover rehearse`
ENDINGS = FINAL + ("rolling_back", "holding")   # phases printed above the live table too
NOTE_WIDTH = 100   # a note (a step's words, an error) in the live table; the plain lines keep it whole


@dataclass
class Row:
    vm: str
    node: str
    phase: str = "pending"
    step: str = ""
    step_status: str = ""
    step_started: float | None = None    # monotonic, while a step runs
    step_seconds: float | None = None    # the last step's duration, once it ended
    vm_started: float | None = None
    vm_ended: float | None = None
    note: str = ""


def _on_screen(console: Console) -> bool:
    """The real file, not rich's is_terminal (FORCE_COLOR would make a pipe a 'terminal')."""
    try:
        return bool(console.file.isatty())
    except (AttributeError, ValueError):
        return False


def _elapsed(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    return f"{seconds:.1f}s" if seconds < 60 else f"{s // 60}m{s % 60:02d}s"


class WaveProgress:
    """Context manager; ``event`` is the controller's ``events`` callback."""

    def __init__(self, vms: Iterable[tuple[str, str]], *, console: Console | None = None, live: bool | None = None,
                 title: str = "cutover"):
        self.title = title
        self.console = console or make_console(stderr=True)
        self.live = _on_screen(self.console) if live is None else live
        self.rows = {vm: Row(vm, node) for vm, node in vms}
        self._lock = threading.Lock()
        self._live: Live | None = None
        self.started = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> "WaveProgress":
        if self.live:
            self._live = Live(console=self.console, get_renderable=self.table, refresh_per_second=4,
                              transient=False, redirect_stdout=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)   # the last table stays on screen as the summary
            self._live = None

    # ------------------------------------------------------------------ events
    def event(self, ev: Event) -> None:
        with self._lock:
            row = self.rows.setdefault(ev.vm, Row(ev.vm, ev.node))
            now = time.monotonic()
            if ev.kind == "step":
                row.step, row.step_status = ev.step or "", ev.status or ""
                if ev.status == "running":
                    row.step_started, row.step_seconds = now, None
                    row.vm_started = row.vm_started or now
                    row.note = ""
                else:
                    row.step_started, row.step_seconds = None, ev.seconds
                    if ev.status == "failed":
                        row.note = ev.text
            elif ev.kind == "phase":
                row.phase = ev.status or "?"
                if row.phase in FINAL:
                    row.vm_ended = now
            else:
                row.note = ev.text
            if not self.live:   # printed under the lock: the lines keep the order of the events
                self._plain(ev)
                return
        # On a terminal, printed after the lock is released: rich's refresh thread holds the Live's
        # lock while it asks for the table (which takes ours), and printing takes the Live's lock.
        if (ev.kind == "step" and ev.status == "failed") or (ev.kind == "phase" and ev.status in ENDINGS):
            line = Text(f"{visible(ev.vm)} [{visible(ev.node)}] ")
            line.append(self._words(ev), style=STATE_STYLE.get(ev.status or "", "red"))
            self.console.print(line)   # stays in the scrollback above the table

    def _plain(self, ev: Event) -> None:
        """A Text without style (no markup parsed, no colour even when forced), never wrapped."""
        clock = time.strftime("%H:%M:%S", time.localtime(ev.at or time.time()))
        self.console.print(Text(f"{clock} {visible(ev.vm)} [{visible(ev.node)}] {self._words(ev)}"), soft_wrap=True)

    @staticmethod
    def _words(ev: Event) -> str:
        if ev.kind == "step":
            again = f" (attempt {ev.attempt})" if ev.attempt and ev.attempt > 1 else ""
            took = f" {ev.seconds:.1f} s" if ev.seconds is not None else ""
            if ev.status == "running":
                return f"{ev.step} ...{again}"
            if ev.status == "failed":
                return f"{ev.step} FAILED{took}{again}: {visible(ev.text)}"
            return f"{ev.step} done{took}{again}" + (" (post-condition already held)" if ev.held else "")
        if ev.kind == "phase":
            return f"phase {ev.status}" + (f" ({visible(ev.text)})" if ev.text else "")
        return visible(ev.text)

    # ------------------------------------------------------------------ the live table
    def table(self) -> Table:
        with self._lock:
            rows = list(self.rows.values())
            now = time.monotonic()
        counts: dict[str, int] = {}
        for r in rows:
            counts[r.phase] = counts.get(r.phase, 0) + 1
        caption = ", ".join(f"{n} {p}" for p, n in sorted(counts.items())) + f" · {_elapsed(now - self.started)}"
        t = Table(title=self.title, caption=caption, caption_justify="left", title_justify="left", expand=False)
        for col in ("VM", "node", "step", "elapsed", "state"):
            t.add_column(col, no_wrap=col != "VM", overflow="fold")
        t.add_column("now", overflow="fold", max_width=NOTE_WIDTH)
        for r in rows:
            if r.step_started is not None:
                elapsed = _elapsed(now - r.step_started)
            elif r.vm_started is not None:
                elapsed = _elapsed((r.vm_ended or now) - r.vm_started)
            else:
                elapsed = ""
            step = r.step + ("" if not r.step or r.step_status in ("running", "done") else f" ({r.step_status})")
            t.add_row(Text(visible(r.vm)), Text(visible(r.node)), Text(step), Text(elapsed, justify="right"),
                      Text(r.phase, style=STATE_STYLE.get(r.phase, "")), Text(visible(r.note)[:NOTE_WIDTH * 3]))
        return t
