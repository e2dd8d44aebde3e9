"""The database layer on SQLite and PostgreSQL: migrations, the users table, ping."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from the0.devtools.embedded.processes import free_port
from the0.server.db.engine import create_engine, ping, session_factory, sync_url
from the0.server.db.migrate import current_revision
from the0.server.db.models import Base, UserRow


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    try:
        yield engine
    finally:
        await engine.dispose()


def _user(email: str, username: str) -> UserRow:
    now = datetime.now(UTC)
    return UserRow(
        id=str(uuid.uuid4()),
        email=email,
        username=username,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$x$y",
        created_at=now,
        updated_at=now,
    )


def test_migrations_reach_head(database_url: str) -> None:
    from alembic.script import ScriptDirectory

    from the0.server.db.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    assert head is not None and current_revision(database_url) == head


def test_migration_matches_models(database_url: str) -> None:
    # Autogenerate finds no difference: the migration creates exactly the model's schema.
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


async def test_user_round_trip_keeps_aware_datetimes(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    login = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    user = _user("ada@example.com", "ada")
    user.last_login_at = login
    async with sessions() as session, session.begin():
        session.add(user)
    async with sessions() as session:
        row = (await session.execute(select(UserRow).where(UserRow.id == user.id))).scalar_one()
    assert row.email == "ada@example.com"
    assert (row.first_name, row.last_name, row.role, row.active) == ("", "", "user", True)
    assert row.last_login_at == login
    assert row.last_login_at.tzinfo is not None and row.last_login_at.utcoffset() == timedelta(0)
    assert row.created_at.tzinfo is not None


async def test_server_defaults_apply_to_raw_inserts(engine: AsyncEngine) -> None:
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        await conn.execute(
            UserRow.__table__.insert().values(
                id=str(uuid.uuid4()), email="raw@example.com", username="raw",
                password_hash="h", created_at=now, updated_at=now,
            )
        )
        row = (await conn.execute(text("SELECT first_name, role, active FROM users"))).one()
    assert (row[0], row[1], bool(row[2])) == ("", "user", True)


async def test_naive_datetime_is_rejected(engine: AsyncEngine) -> None:
    user = _user("naive@example.com", "naive")
    user.last_login_at = datetime(2024, 1, 1)  # naive on purpose: the point of the test
    async with session_factory(engine)() as session:
        session.add(user)
        with pytest.raises(Exception, match="naive datetime"):
            await session.commit()


@pytest.mark.parametrize("field", ["email", "username"])
async def test_unique_email_and_username(engine: AsyncEngine, field: str) -> None:
    sessions = session_factory(engine)
    async with sessions() as session, session.begin():
        session.add(_user("grace@example.com", "grace"))
    other = {"email": "grace2@example.com", "username": "grace2", field: "grace@example.com"}
    if field == "username":
        other["username"] = "grace"
    async with sessions() as session:
        session.add(_user(other["email"], other["username"]))
        with pytest.raises(IntegrityError):
            await session.commit()


async def test_sqlite_pragmas(tmp_path_factory: pytest.TempPathFactory) -> None:
    engine = create_engine(f"sqlite:///{tmp_path_factory.mktemp('pragmas') / 'the0.db'}")
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar() == "wal"
            assert (await conn.execute(text("PRAGMA foreign_keys"))).scalar() == 1
            assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 5000
    finally:
        await engine.dispose()


async def test_ping(engine: AsyncEngine) -> None:
    await ping(engine)


@pytest.mark.parametrize("dead", ["postgres", "sqlite"])
async def test_ping_fails_against_a_dead_database(dead: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    if dead == "postgres":
        url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing"
    else:
        # A directory where the database file should be: SQLite cannot open it.
        url = f"sqlite:///{tmp_path_factory.mktemp('dead')}"
    engine = create_engine(url)
    try:
        with pytest.raises(Exception):  # noqa: B017 - driver-specific errors
            await ping(engine, timeout=3.0)
    finally:
        await engine.dispose()


def test_sync_url() -> None:
    assert sync_url("postgresql+psycopg://u:p%40ss@h:5432/db") == "postgresql+psycopg://u:p%40ss@h:5432/db"
    assert sync_url("sqlite+aiosqlite:////tmp/x.db") == "sqlite:////tmp/x.db"
    assert sync_url("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


def test_create_engine_makes_the_sqlite_parent_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("parent") / "a" / "b" / "the0.db"
    engine = create_engine(f"sqlite:///{path}")
    assert path.parent.is_dir()
    assert engine.url.drivername == "sqlite+aiosqlite"
