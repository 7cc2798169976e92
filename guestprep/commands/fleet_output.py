"""The end of a prepare/rollback fleet run on the terminal: Ctrl-C messages, the JSON file, the summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from guestprep.console import make_console, safe
from guestprep.secrets import redact_doc

console = make_console()
err_console = make_console(stderr=True)


def on_interrupt(presses: int, running: list[str] | tuple = ()) -> None:
    names = ", ".join(safe(n) for n in running[:10]) + (f" and {len(running) - 10} more" if len(running) > 10 else "")
    if presses == 1:
        waiting = (f" Waiting for {len(running)} guest(s) to finish the operation in progress: {names}."
                   if running else "")
        err_console.print("[yellow]interrupted:[/] no new guest starts; running guests stop after the operation in "
                          f"progress (their journals stay valid).{waiting} Ctrl-C again closes their connections.")
    else:
        err_console.print("[yellow]aborting:[/] closing connections" + (f" of {names}" if running else "")
                          + "; a step already running on a guest finishes there")


def emit(doc: dict, as_json: bool, json_out: Optional[Path], table) -> None:
    """The JSON file, then stdout (JSON or the summary table)."""
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
