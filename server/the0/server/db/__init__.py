"""Database access: async engine, typed models and Alembic migrations."""

from the0.server.db.engine import create_engine, ping, session_factory, sync_url
from the0.server.db.migrate import current_revision, upgrade_to_head
from the0.server.db.models import ApiKeyRow, Base, RefreshTokenRow, SessionRow, UserRow

__all__ = [
    "ApiKeyRow",
    "Base",
    "RefreshTokenRow",
    "SessionRow",
    "UserRow",
    "create_engine",
    "current_revision",
    "ping",
    "session_factory",
    "sync_url",
    "upgrade_to_head",
]
