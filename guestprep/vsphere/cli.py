"""CLI commands for this area; ``register(app)`` adds them to the main Typer app."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app`` (filled in by its issue)."""
