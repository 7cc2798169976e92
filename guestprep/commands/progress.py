"""Progress of a fleet run, on stderr so stdout (JSON, tables) stays clean.

On a terminal: a bar with the guests still in progress and for how long ("running: db01 41s,
web02 3s"), not the last one that finished. Elsewhere (a pipe, a CI log): one line per guest
as it finishes, so a long run is never silent until the end.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Any, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from guestprep.console import make_console, safe

err_console = make_console(stderr=True)
SHOWN = 3  # guests named in the bar; the rest are counted


def running_text(running: list[tuple[str, float]]) -> str:
    if not running:
        return ""
    longest = sorted(running, key=lambda r: -r[1])
    names = ", ".join(f"{safe(n)} {s:.0f}s" for n, s in longest[:SHOWN])
    more = f" +{len(running) - SHOWN} more" if len(running) > SHOWN else ""
    return f"running: {names}{more}"


def outcome_of(r: Any) -> str:
    """One finished guest, in a few words (a GuestReport)."""
    open_ = [f for f in r.findings if f.status.is_open and not f.severity.is_notice]
    blockers = sum(1 for f in open_ if f.severity.value == "blocker")
    warnings = sum(1 for f in open_ if f.severity.value == "warning")
    undecided = sum(1 for f in r.findings if f.status.undecided)
    detail = f"{blockers} blocker(s), {warnings} warning(s)" + (f", {undecided} cannot tell" if undecided else "")
    if r.error:
        detail = r.error
    return f"{r.readiness.value} ({detail})"


class FleetProgress:
    def __init__(self, verb: str, total: int, quiet: bool):
        self.verb, self.total, self.quiet = verb, total, quiet
        self.interactive = not quiet and err_console.is_terminal
        self.finished = 0
        self._progress: Progress | None = None

    def __enter__(self) -> "FleetProgress":
        if self.interactive:
            self._progress = Progress(TextColumn(f"[bold]{self.verb}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), TextColumn("{task.description}"), console=err_console,
                                      transient=True)
            self._progress.__enter__()
            self._task = self._progress.add_task("", total=self.total)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def tick(self, running: list[tuple[str, float]]) -> None:
        if self._progress is not None:
            self._progress.update(self._task, description=running_text(running))

    def done(self, r: Any) -> None:
        self.finished += 1
        if self._progress is not None:
            self._progress.update(self._task, advance=1)
        elif not self.quiet:
            err_console.print(f"[{self.finished}/{self.total}] {safe(r.guest)}: {safe(outcome_of(r))} "
                              f"in {r.duration:.1f}s")


@contextlib.contextmanager
def finish_first(what: str) -> Iterator[list[int]]:
    """Ctrl-C while ``what`` runs is noted and said, never a half-written file or a traceback; the
    caller sees the presses in the yielded list and exits 130 once ``what`` is done."""
    pressed: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield pressed
        return

    def note(signum: int, frame: Any) -> None:
        pressed.append(signum)
        err_console.print(f"[yellow]interrupted:[/] finishing {what} first (a moment)")

    old = signal.signal(signal.SIGINT, note)
    try:
        yield pressed
    finally:
        signal.signal(signal.SIGINT, old)
