"""Migration 0640_api_key_scopes: existing keys become "full"; it goes down and up again (SQLite, PostgreSQL)."""

from __future__ import annotations

from datetime import UTC, datetime

from alembic import command
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect, text
from sqlalchemy.pool import NullPool

from the0.server.db.engine import sync_url
from the0.server.db.migrate import alembic_config, current_revision, upgrade_to_head

BEFORE = "0620_account_tokens"


def test_keys_made_before_scopes_are_full_after_the_migration(database_url):
    command.downgrade(alembic_config(database_url), BEFORE)
    assert current_revision(database_url) == BEFORE
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        assert "scopes" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        now = datetime.now(UTC)
        with engine.begin() as db:
            db.execute(text(
                "INSERT INTO users (id, email, username, password_hash, first_name, last_name, role, active,"
                " created_at, updated_at) VALUES ('u1', 'old@example.com', 'old', 'x', '', '', 'user', :t, :n, :n)"),
                {"t": True, "n": now})
            db.execute(text(
                "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at)"
                " VALUES ('k1', 'u1', 'old key', 'the0_abc', 'h1', :n)"), {"n": now})
        upgrade_to_head(database_url)
        with engine.connect() as db:
            assert db.execute(text("SELECT scopes FROM api_keys WHERE id = 'k1'")).scalar_one() == "full"
        command.downgrade(alembic_config(database_url), BEFORE)
        assert "scopes" not in {c["name"] for c in inspect(engine).get_columns("api_keys")}
        upgrade_to_head(database_url)
    finally:
        engine.dispose()
