"""report.html in a real browser (Debian's chromium, headless, through Playwright): filtering,
sorting, the phone and print layouts, no request leaving the file, JavaScript off, and a
500-guest fleet (issue 16, "The report people open"). Screenshots go to tests/artifacts/report/."""

from __future__ import annotations

import json
import shutil
import subprocess
import time

import pytest

from guestprep import report
from tests.report.browser_support import A4_CSS_PX, artifact, pdftoppm
from tests.report.fleet import HOSTILE, fleet_doc

pytestmark = pytest.mark.integration

VISIBLE_ROWS = "Array.from(document.querySelectorAll('#guest-table tbody tr')).filter(r => !r.hidden)" \
               ".map(r => r.dataset.idx)"


def _doc(reports):
    return json.loads((reports / "report.json").read_text())


def test_dashboard_desktop_and_no_request_leaves_the_file(page_of, fleet_reports):
    html = fleet_reports / "report.html"
    page = page_of(html)
    assert page.requests == [html.as_uri()]  # nothing else: no font, image, script or beacon
    assert page.console_errors == []  # the CSP let the (hashed) inline script run and blocked nothing else
    assert page.is_visible("#filters")  # the script ran: the filters appear
    doc = _doc(fleet_reports)
    legend = page.inner_text(".legend")
    blocked = sum(1 for g in doc["guests"] if g["readiness"] == "blocked")
    assert f"blocked\n{blocked}" in legend.replace(" ", "\n") or f"blocked {blocked}" in legend
    top = page.locator("table.top tbody tr").first.inner_text()
    assert "WIN-VIOSCSI-BOOTSTART" in top or "INITRAMFS" in top
    page.screenshot(path=artifact("dashboard-desktop.png"))
    page.screenshot(path=artifact("report-dashboard.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 900})
    page.evaluate("document.querySelector('#guests').scrollIntoView()")
    page.screenshot(path=artifact("guests-desktop.png"))
    assert page.evaluate("window.__xss === undefined") and page.locator("img[src=x]").count() == 0
    assert HOSTILE in page.inner_text("#guest-table")  # shown literally, not interpreted


def test_filters_hide_rows_and_sections(page_of, fleet_reports):
    doc = _doc(fleet_reports)
    page = page_of(fleet_reports / "report.html")
    n = len(doc["guests"])
    assert len(page.evaluate(VISIBLE_ROWS)) == n

    page.select_option("#f-readiness", "blocked")
    blocked = [str(i) for i, g in enumerate(doc["guests"], 1) if g["readiness"] == "blocked"]
    assert page.evaluate(VISIBLE_ROWS) == blocked
    assert page.inner_text("#f-count") == f"{len(blocked)} of {n} guests shown"
    hidden_sections = page.evaluate("Array.from(document.querySelectorAll('section.guest')).filter(s => s.hidden).length")
    assert hidden_sections == n - len(blocked)

    page.click("button[type=reset]")
    page.select_option("#f-os", "windows")
    page.select_option("#f-group", "db")
    expect = [str(i) for i, g in enumerate(doc["guests"], 1) if g["os"] == "windows" and "db" in g["groups"]]
    assert page.evaluate(VISIBLE_ROWS) == expect and expect

    page.click("button[type=reset]")
    page.select_option("#f-check", "LNX-INITRAMFS-VIRTIO")
    expect = [str(i) for i, g in enumerate(doc["guests"], 1)
              if any(f["check_id"] == "LNX-INITRAMFS-VIRTIO" and f["status"] in ("fail", "error") for f in g["findings"])]
    assert page.evaluate(VISIBLE_ROWS) == expect and expect

    page.click("button[type=reset]")
    page.fill("#f-search", "EVIL-<script")  # search by name, case-insensitive, literal
    assert page.evaluate(VISIBLE_ROWS) == ["2"]
    page.fill("#f-search", "")
    assert len(page.evaluate(VISIBLE_ROWS)) == n

    # a dashboard link filters the table to the guests a check blocks
    page.click("table.top tbody tr >> nth=0 >> a[data-filter-check]")
    cid = page.input_value("#f-check")
    assert cid and len(page.evaluate(VISIBLE_ROWS)) == int(page.locator("table.top tbody tr >> nth=0 >> a[data-filter-check]").inner_text())


def test_sorting_columns(page_of, fleet_reports):
    page = page_of(fleet_reports / "report.html")
    names = lambda: page.evaluate("Array.from(document.querySelectorAll('#guest-table tbody tr td:first-child')).map(t => t.textContent.trim())")  # noqa: E731
    page.click("#guest-table th:nth-child(1) button.sort")
    assert names() == sorted(names(), key=str.lower)
    assert page.get_attribute("#guest-table th:nth-child(1)", "aria-sort") == "ascending"
    page.click("#guest-table th:nth-child(1) button.sort")
    assert names() == sorted(names(), key=str.lower, reverse=True)
    page.click("#guest-table th:nth-child(6) button.sort")  # blockers, numeric
    counts = page.evaluate("Array.from(document.querySelectorAll('#guest-table tbody tr td:nth-child(6)')).map(t => +t.textContent)")
    assert counts == sorted(counts)


def test_passes_are_collapsed_by_default(page_of, fleet_reports):
    page = page_of(fleet_reports / "report.html")
    assert page.locator("details.passes").count() > 0
    assert page.locator("details.passes[open]").count() == 0
    assert not page.locator("details.passes >> nth=0 >> ul.passes").is_visible()


def test_phone_width_has_no_sideways_scrolling(page_of, fleet_reports):
    page = page_of(fleet_reports / "report.html", width=400, height=860, is_mobile=True, device_scale_factor=1)
    sizes = page.evaluate("[document.scrollingElement.scrollWidth, window.innerWidth]")
    assert sizes[0] <= sizes[1], sizes
    wide = page.evaluate("""Array.from(document.querySelectorAll('body *')).filter(e => {
        const r = e.getBoundingClientRect(); return r.width && r.right > window.innerWidth + 1
          && !e.closest('details:not([open]), [hidden], .sr-only')
          && getComputedStyle(e.closest('thead') || document.body).position !== 'absolute';  // visually hidden headers
        }).map(e => e.tagName + '.' + e.className).slice(0, 5)""")
    assert wide == []
    page.screenshot(path=artifact("dashboard-phone.png"))
    page.evaluate("document.querySelector('#guests').scrollIntoView()")
    page.screenshot(path=artifact("guests-phone.png"))
    page.evaluate("document.querySelector('section.guest').scrollIntoView()")
    page.screenshot(path=artifact("findings-phone.png"))


def test_print_layout_fits_a4(page_of, fleet_reports, tmp_path):
    width = int(A4_CSS_PX)
    page = page_of(fleet_reports / "report.html", width=width, height=1000)
    page.emulate_media(media="print")
    assert page.evaluate("matchMedia('print').matches")
    assert not page.is_visible("#filters")  # no controls on paper
    assert page.evaluate("document.scrollingElement.scrollWidth") <= width
    wide = page.evaluate("""(w) => Array.from(document.querySelectorAll('body *')).filter(e => {
        const r = e.getBoundingClientRect(); return r.width && r.right > w + 1;}).map(e => e.tagName + '.' + e.className + ' ' + Math.round(e.getBoundingClientRect().right)).slice(0, 5)""", width)
    assert wide == []  # no clipped column: every element inside the A4 content width
    # the findings of every guest and the per-check lists are printed (passes stay one line)
    assert page.evaluate("getComputedStyle(document.querySelector('details.check ul')).display") != "none"
    pdf = artifact("report-print.pdf")
    page.pdf(path=str(pdf), format="A4", prefer_css_page_size=True, print_background=True)
    assert pdf.stat().st_size > 10_000
    subprocess.run([pdftoppm(), "-png", "-r", "60", "-f", "1", "-l", "3", str(pdf), str(artifact("print"))], check=True)
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    doc = _doc(fleet_reports)
    assert doc["run_id"] in text and "page 1 of" in text  # the page header and footer
    assert "Sign-off" in text and "Reviewed by" in text


def test_javascript_off_shows_the_whole_table(page_of, fleet_reports):
    doc = _doc(fleet_reports)
    page = page_of(fleet_reports / "report.html", javascript=False)
    assert page.locator("#guest-table tbody tr").count() == len(doc["guests"])
    assert page.locator("#guest-table tbody tr:visible").count() == len(doc["guests"])
    assert page.locator("section.guest:visible").count() == len(doc["guests"])
    assert not page.is_visible("#filters")  # controls that cannot work are not shown
    waiver = page.locator(".waiver:not(.expired)").first.text_content()
    assert "waived by" in waiver and "until" in waiver
    assert page.locator(".waiver.expired").count() > 0 and "waiver expired" in page.locator(".waiver.expired").first.text_content()
    page.screenshot(path=artifact("nojs-desktop.png"))


def test_500_guests_render(page_of, tmp_path, capsys):
    out = tmp_path / "r500"
    report.write_reports(fleet_doc(500, hostile=False, tmp=tmp_path), ["html"], out)
    started = time.monotonic()
    page = page_of(out / "report.html")
    page.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    elapsed = time.monotonic() - started
    assert page.locator("#guest-table tbody tr").count() == 500
    page.select_option("#f-readiness", "ready")
    shown = len(page.evaluate(VISIBLE_ROWS))
    assert 0 < shown < 500
    with capsys.disabled():  # informational, never asserted (timings are for benchmarks/)
        print(f"\n[info] 500-guest report.html ({(out / 'report.html').stat().st_size // 1024} KiB) "
              f"loaded and painted in chromium in {elapsed:.2f} s")


def test_readme_screenshot_is_from_this_suite():
    """docs/img/report-dashboard.png is a copy of what test_dashboard_desktop... writes."""
    shot = artifact("report-dashboard.png")
    assert shot.exists()
    docs = shot.parents[3] / "docs" / "img" / "report-dashboard.png"
    if not docs.exists():
        docs.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, docs)
    assert docs.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
