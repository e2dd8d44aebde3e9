"""Session factories derived from the composition root's one ``async_sessionmaker``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


def autocommit_sessions(sessions: async_sessionmaker[AsyncSession]) -> async_sessionmaker[AsyncSession]:
    """Sessions for reads that are one statement each: in autocommit they skip BEGIN and ROLLBACK."""
    bind = sessions.kw["bind"]
    return async_sessionmaker(bind.execution_options(isolation_level="AUTOCOMMIT"), expire_on_commit=False)
