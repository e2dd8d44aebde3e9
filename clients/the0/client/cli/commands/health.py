"""`the0 health`: is the API up, and are its database, NATS and object store?"""

from __future__ import annotations

import typer

from the0.client.cli.output import show
from the0.client.cli.runtime import current


def health() -> None:
    """The API's health and that of its dependencies (no login needed)."""
    show(current().client.health(), "health")


def install(root: typer.Typer) -> None:
    root.command(rich_help_panel="Setup")(health)
