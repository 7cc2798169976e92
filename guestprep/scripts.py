"""Where the guest scripts live: beside the package in a checkout (editable install), or under
``<prefix>/share/guestprep/guest_scripts`` in an installed wheel (pyproject data-files)."""

from __future__ import annotations

import sys
from functools import lru_cache
from pathlib import Path

from guestprep.errors import GuestprepError


@lru_cache(maxsize=None)
def scripts_dir() -> Path:
    candidates = [
        Path(__file__).resolve().parents[1] / "guest_scripts",
        Path(sys.prefix) / "share" / "guestprep" / "guest_scripts",
        Path(sys.base_prefix) / "share" / "guestprep" / "guest_scripts",
    ]
    for c in candidates:
        if (c / "linux" / "collect.sh").is_file():
            return c
    raise GuestprepError("guest scripts not found (looked in " + ", ".join(map(str, candidates)) + "); reinstall guestprep")


def script_path(*parts: str) -> Path:
    return scripts_dir().joinpath(*parts)


def read_script(*parts: str) -> str:
    path = script_path(*parts)
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise GuestprepError(f"cannot read guest script {path}: {exc.strerror}") from None
