"""Alembic environment for PostgreSQL and SQLite, driven by the0.server.db.migrate.

Deliberately no ``fileConfig``: the server owns logging configuration.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from the0.server.db.engine import sync_url
from the0.server.db.models import Base

# Every domain's tables, so autogenerate sees the whole schema.
import the0.server.audit.models  # noqa: E402,F401
import the0.server.backtests.models  # noqa: E402,F401
import the0.server.bots.models  # noqa: E402,F401
import the0.server.custom_bots.models  # noqa: E402,F401
import the0.server.db.counters  # noqa: E402,F401
import the0.server.events.models  # noqa: E402,F401
import the0.server.platform.models  # noqa: E402,F401

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("database_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through the0.server.db.migrate")
    return sync_url(url)


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=url.startswith("sqlite"),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    url = _url()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            context.configure(
                connection=connection,
                target_metadata=target_metadata,
                # SQLite cannot ALTER most things: batch mode recreates tables instead.
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
