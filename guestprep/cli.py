"""The console entry point (pyproject [project.scripts] and ``python -m guestprep.cli``).

The commands live in guestprep.commands; this module only starts them.
"""

from __future__ import annotations

from guestprep.commands import app, main

__all__ = ["app", "main"]

if __name__ == "__main__":
    main()
