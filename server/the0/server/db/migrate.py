"""Run the Alembic migrations from code (no alembic.ini, no logging config).

The migrations are package data (package_data.py): a wheel migrates from any directory.
On PostgreSQL the upgrade holds a session-level advisory lock, so replicas (or a ``the0-server
migrate`` job) starting together apply each migration once, one after the other, instead of racing
on DDL: whoever comes second waits, then finds nothing left to do. SQLite has one writer anyway.

Sync on purpose: Alembic drives a sync engine. Async callers use
``await asyncio.to_thread(upgrade_to_head, url)``.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from the0.server.db.engine import sync_url
from the0.server.package_data import migrations_dir

# Any fixed 64-bit number, the same in every replica: "the0 migrations" (0x7468_6530 = "the0").
MIGRATION_LOCK_KEY = 0x7468_6530_0000_0001


def alembic_config(database_url: str) -> Config:
    """An Alembic Config for ``database_url``; env.py reads the URL from ``attributes``.

    The URL goes through ``attributes`` rather than ``sqlalchemy.url`` so that a
    ``%`` in a password is not taken for configparser interpolation.
    """
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = sync_url(database_url)
    return config


def upgrade_to_head(database_url: str) -> None:
    """Apply every pending migration, one migrator at a time on PostgreSQL."""
    url = sync_url(database_url)
    if not url.startswith("postgresql"):
        command.upgrade(alembic_config(database_url), "head")
        return
    # The lock lives on its own connection, held while Alembic migrates on another one:
    # released when this connection closes, even if the process dies mid-way.
    engine = create_sync_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as lock_holder:
            lock_holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            lock_holder.commit()
            try:
                command.upgrade(alembic_config(database_url), "head")
            finally:
                lock_holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
                lock_holder.commit()
    finally:
        engine.dispose()


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None if it was never migrated."""
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
