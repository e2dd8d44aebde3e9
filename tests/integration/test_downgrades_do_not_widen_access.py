"""Going down a migration must never widen access: scoped keys are revoked, 2FA is not silently turned off."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from the0.server.db.engine import sync_url
from the0.server.db.migrate import alembic_config, current_revision, upgrade_to_head

USER = ("INSERT INTO users (id, email, username, password_hash, first_name, last_name, role, active,"
        " created_at, updated_at) VALUES ('u1', 'a@example.com', 'a', 'x', '', '', 'user', :t, :n, :n)")


def test_downgrade_below_scopes_revokes_every_key_that_is_not_full(database_url):
    upgrade_to_head(database_url)
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        now = datetime.now(UTC)
        with engine.begin() as db:
            db.execute(text(USER), {"t": True, "n": now})
            for key_id, scopes in (("full-key", "full"), ("read-key", "read")):
                db.execute(text(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at, scopes)"
                    " VALUES (:i, 'u1', :i, :i, :i, :n, :s)"), {"i": key_id, "n": now, "s": scopes})
        command.downgrade(alembic_config(database_url), "0620_account_tokens")
        with engine.connect() as db:
            revoked = dict(db.execute(text("SELECT id, revoked_at FROM api_keys")).all())
        assert revoked["full-key"] is None
        assert revoked["read-key"] is not None
    finally:
        engine.dispose()
        upgrade_to_head(database_url)


def test_downgrade_below_totp_refuses_while_an_account_has_two_factor_on(database_url):
    upgrade_to_head(database_url)
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        now = datetime.now(UTC)
        with engine.begin() as db:
            db.execute(text(USER), {"t": True, "n": now})
            db.execute(text("UPDATE users SET totp_enabled_at = :n, totp_secret = 's' WHERE id = 'u1'"), {"n": now})
        with pytest.raises(Exception, match="two-factor"):
            command.downgrade(alembic_config(database_url), "0640_api_key_scopes")
        with engine.begin() as db:
            db.execute(text("UPDATE users SET totp_enabled_at = NULL, totp_secret = NULL WHERE id = 'u1'"))
        command.downgrade(alembic_config(database_url), "0640_api_key_scopes")
        assert current_revision(database_url) == "0640_api_key_scopes"
    finally:
        engine.dispose()
        upgrade_to_head(database_url)
