"""Run the Alembic migrations from code (no alembic.ini, no logging config).

Sync on purpose: Alembic drives a sync engine. Async callers use
``await asyncio.to_thread(upgrade_to_head, url)``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy.pool import NullPool

from the0.server.db.engine import sync_url

# server/the0/server/db/migrate.py -> repository root / migrations
MIGRATIONS_DIR = Path(__file__).resolve().parents[4] / "migrations"


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for ``database_url``; env.py reads the URL from ``attributes``.

    The URL goes through ``attributes`` rather than ``sqlalchemy.url`` so that a
    ``%`` in a password is not taken for configparser interpolation.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["database_url"] = sync_url(database_url)
    return config


def upgrade_to_head(database_url: str) -> None:
    """Apply every pending migration."""
    command.upgrade(alembic_config(database_url), "head")


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
