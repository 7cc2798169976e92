"""The suite's own layout: test modules need unique basenames (pytest's rootdir-relative import mode)."""

from collections import Counter
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit


def test_test_module_basenames_are_unique():
    tests = Path(__file__).resolve().parents[1]
    names = Counter(p.name for p in tests.rglob("test_*.py"))
    dupes = sorted(n for n, c in names.items() if c > 1)
    assert not dupes, f"rename these so each test module basename is unique: {dupes}"


def test_no_test_imports_another_conftest_by_name():
    """`from conftest import x` resolves to whichever conftest.py was imported first: use a *_support module."""
    tests = Path(__file__).resolve().parents[1]
    import re

    pattern = re.compile(r"^\s*(from conftest import|import conftest)", re.M)
    offenders = [str(p.relative_to(tests)) for p in tests.rglob("*.py") if pattern.search(p.read_text())]
    assert not offenders, offenders
