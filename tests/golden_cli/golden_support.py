"""Golden files of CLI output: run the real entry point, normalise what differs between runs, compare.

GUESTPREP_UPDATE_GOLDEN=1 rewrites the files instead of comparing (review the diff like code).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

GOLDEN = Path(__file__).resolve().parent / "golden"
UPDATE = bool(os.environ.get("GUESTPREP_UPDATE_GOLDEN"))


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "CLICOLOR_FORCE", "COLUMNS", "LINES")}
    env.update(COLUMNS="100", LINES="50", NO_COLOR="1", TERM="dumb", **extra)
    return env


def guestprep(*args: str, cwd: Path | None = None, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess:
    """The real entry point (the module the console script runs), never in-process."""
    return subprocess.run([sys.executable, "-m", "guestprep.cli", *args], capture_output=True, text=True,
                          input=stdin, cwd=cwd, env=_env(**env), timeout=300)


def compare(name: str, actual: str, golden: Path = GOLDEN) -> None:
    path = golden / name
    if UPDATE:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(actual, encoding="utf-8")
        return
    assert path.is_file(), f"no golden file {path}: run with GUESTPREP_UPDATE_GOLDEN=1 and review it"
    expected = path.read_text(encoding="utf-8")
    assert actual == expected, f"CLI output differs from {path.relative_to(golden.parent)}"


_ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:\d{2}|Z)?")
_RUN_ID = re.compile(r"\b\d{8}T\d{6}-[0-9a-f]{6}\b")
_TABLE_SECONDS = re.compile(r"(?<=│ )\d+\.\d(?= +│)")  # the seconds column of the prepare/rollback tables
_FREE_MIB = re.compile(r"has \d+ MiB free")
_RUNNING_KERNEL = os.uname().release   # `--local` reports the machine's own kernel


def normalise(text: str, **literals: str) -> str:
    for placeholder, value in literals.items():
        text = text.replace(value, f"<{placeholder}>")
    text = text.replace(_RUNNING_KERNEL, "<running-kernel>")
    text = _ISO_TIME.sub("<time>", text)
    text = _RUN_ID.sub("<run-id>", text)
    text = _FREE_MIB.sub("has <n> MiB free", text)
    return _TABLE_SECONDS.sub("N.N", text)


def _normalise_doc(doc):
    """JSON: the keys whose values are clocks or this machine's free space."""
    if isinstance(doc, dict):
        out = {}
        for k, v in doc.items():
            if k in ("started", "finished") and isinstance(v, str):
                v = "<time>"
            elif k in ("duration_s", "seconds") and isinstance(v, (int, float)):
                v = "<seconds>"
            elif k == "run_id" and v:
                v = "<run-id>"
            elif k == "free_bytes":
                v = "<n>"
            elif k == "running_kernel" and isinstance(v, str):
                v = "<running-kernel>"   # this machine's kernel: the host's, it changes under the suite
            out[k] = _normalise_doc(v)
        return out
    if isinstance(doc, list):
        return [_normalise_doc(v) for v in doc]
    if isinstance(doc, str):
        return _FREE_MIB.sub("has <n> MiB free", doc)
    return doc


def json_text(doc, **literals: str) -> str:
    return normalise(json.dumps(_normalise_doc(doc), indent=2, sort_keys=True) + "\n", **literals)


