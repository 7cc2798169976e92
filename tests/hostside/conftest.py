"""hostside fixtures; the code lives in hostside_support.py (see its docstring)."""

from hostside_support import datastore, images, standins  # noqa: F401  (pytest fixtures)
