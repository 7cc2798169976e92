"""Debian's chromium, headless, driven by Playwright for Python (its bundled node driver; no
browser download: the suite points it at /usr/bin/chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "report"
A4_CSS_PX = (210 - 2 * 12) / 25.4 * 96  # A4 width minus the 12 mm side margins of @page, in CSS px


def launch(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail("chromium missing: apt-get install chromium (scripts/system-packages.txt; make test does this as root)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)


def sync_playwright():
    try:
        from playwright.sync_api import sync_playwright as sp
    except ImportError:
        pytest.fail("playwright missing: pip install playwright (the [test] extra); never `playwright install`")
    return sp()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def pdftoppm() -> str:
    path = shutil.which("pdftoppm")
    if not path:
        pytest.fail("pdftoppm missing: apt-get install poppler-utils (scripts/system-packages.txt)")
    return path
