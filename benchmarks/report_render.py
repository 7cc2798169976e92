#!/usr/bin/env python3
"""report.html for a 500-guest fleet (built from the fixture facts in tests/facts and
tests/windows/guests): time to write it (Python) and to load and paint it in Debian's chromium,
headless (Playwright pointed at /usr/bin/chromium). Prints the median of --reps runs.
Target from issue 16: the browser renders it in under 2 s.

    python benchmarks/report_render.py [--guests 500] [--reps 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.preflight_fleet import machine  # noqa: E402
from guestprep import report  # noqa: E402
from tests.report.browser_support import ARGS, CHROMIUM  # noqa: E402
from tests.report.fleet import fleet_doc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--guests", type=int, default=500)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    work = Path(tempfile.mkdtemp(prefix="gp-report-bench-"))
    doc = fleet_doc(args.guests, hostile=False, tmp=work)
    writes = []
    for _ in range(args.reps):
        start = time.perf_counter()
        report.write_reports(doc, ["html"], work / "out")
        writes.append(time.perf_counter() - start)
    html = work / "out" / "report.html"
    loads = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        version = browser.version
        for _ in range(args.reps):
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            start = time.perf_counter()
            page.goto(html.as_uri(), wait_until="load")
            page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")  # painted
            loads.append(time.perf_counter() - start)
            page.close()
        browser.close()
    print(f"machine: {machine()}; chromium {version}")
    print(f"report.html: {args.guests} guests, {html.stat().st_size / 1e6:.1f} MB")
    print(f"write (python, median of {args.reps}): {statistics.median(writes):.2f} s")
    print(f"load + first paint (chromium, median of {args.reps}): {statistics.median(loads):.2f} s (target < 2 s)")


if __name__ == "__main__":
    main()
