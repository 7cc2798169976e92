"""Reports: one Finding model, many formats (JSON, HTML, JUnit XML, CSV), written atomically."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable

from guestprep.errors import EXIT_FINDINGS, EXIT_OK, EXIT_UNREACHABLE, ConfigError
from guestprep.models import Finding, Severity, Status
from guestprep.secrets import redact_doc

FORMATS = {"json": "report.json", "html": "report.html", "junit": "junit.xml", "csv": "findings.csv"}


def parse_formats(spec: str) -> list[str]:
    formats = [f.strip().lower() for f in spec.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise ConfigError(f"unknown report format(s) {', '.join(bad) or spec!r}; choose from {', '.join(FORMATS)}",
                          where="--format")
    return formats


def annotate(doc: dict[str, Any], **inputs: Any) -> dict[str, Any]:
    """Run id, input files (path + SHA-256) and guest groups: see guestprep.report.enrich.annotate."""
    from guestprep.report.enrich import annotate as _annotate

    return _annotate(doc, **inputs)


def render(fmt: str, doc: dict[str, Any]) -> str:
    from guestprep.report import csv, html, json, junit
    from guestprep.report.enrich import complete

    doc = complete(doc)
    return {"json": json.render, "html": html.render, "junit": junit.render, "csv": csv.render}[fmt](doc)


def write_reports(doc: dict[str, Any], formats: Iterable[str], out_dir: str | Path) -> list[Path]:
    """Render every format first, then write each through a temp file + rename: no half-written reports.

    Every format renders from one redacted copy: a secret a guest echoed back reaches no file."""
    from guestprep.report.enrich import complete

    out = Path(out_dir)
    doc = complete(redact_doc(doc))
    rendered = {fmt: render(fmt, doc) for fmt in formats}
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create output directory: {exc.strerror}", where=str(out)) from None
    written = []
    for fmt, text in rendered.items():
        target = out / FORMATS[fmt]
        fd, tmp = tempfile.mkstemp(dir=out, prefix=f".{target.name}.", suffix=".tmp")
        try:
            # a lone surrogate (a JSON "\\ud800" from a guest) must not abort the write halfway
            with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(text)
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        written.append(target)
    return written


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def exit_code(findings: Iterable[Finding], fail_on: str) -> int:
    """0 clean; 1 failing findings at/above the threshold; 3 unreachable guests or tool errors."""
    threshold = Severity(fail_on).rank
    code = EXIT_OK
    for f in findings:
        if f.status in (Status.UNREACHABLE, Status.ERROR):
            return EXIT_UNREACHABLE
        if f.is_open and not f.severity.is_notice and f.severity.rank >= threshold:
            code = EXIT_FINDINGS
    return code
