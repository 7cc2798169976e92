from __future__ import annotations

from pathlib import Path

import pytest

from guestprep import report
from tests.report.browser_support import launch, sync_playwright
from tests.report.fleet import fleet_doc


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


@pytest.fixture(scope="session")
def fleet_reports(tmp_path_factory) -> Path:
    """The four reports of a 12-guest fleet (hostile names, groups, waivers active and expired)."""
    out = tmp_path_factory.mktemp("fleet12")
    report.write_reports(fleet_doc(12, tmp=out), list(report.FORMATS), out / "reports")
    return out / "reports"


@pytest.fixture
def page_of(browser):
    """A fresh page (own context) that records every request it makes."""
    contexts = []

    def make(path: Path, *, width: int = 1280, height: int = 900, javascript: bool = True, **kw):
        ctx = browser.new_context(viewport={"width": width, "height": height}, java_script_enabled=javascript, **kw)
        contexts.append(ctx)
        page = ctx.new_page()
        page.requests = []
        page.console_errors = []
        page.on("request", lambda r: page.requests.append(r.url))
        page.on("console", lambda m: page.console_errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: page.console_errors.append(str(e)))
        page.goto(path.as_uri())
        return page

    yield make
    for ctx in contexts:
        ctx.close()
