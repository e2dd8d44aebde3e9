"""Migrations take a PostgreSQL advisory lock: replicas starting together migrate one after the other."""

from __future__ import annotations

import asyncio
import threading
import uuid

import psycopg
from alembic.script import ScriptDirectory

from tests.fixtures.services import PostgresCluster
from the0.server.db.migrate import MIGRATION_LOCK_KEY, alembic_config, current_revision, upgrade_to_head


def head_revision(url: str) -> str | None:
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


async def test_a_second_migrator_waits_for_the_first_then_finds_nothing_to_do(postgres_cluster: PostgresCluster) -> None:
    url = await postgres_cluster.acreate_database(f"the0_lock_{uuid.uuid4().hex[:8]}")
    holder = psycopg.connect(host=postgres_cluster.host, port=postgres_cluster.port, user="postgres",
                             dbname=url.rsplit("/", 1)[1], autocommit=True)
    try:
        holder.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        done = threading.Event()
        waiting = asyncio.create_task(asyncio.to_thread(lambda: (upgrade_to_head(url), done.set())))
        await asyncio.sleep(1.0)
        assert not done.is_set(), "migrated while another migrator held the lock"
        assert current_revision(url) is None
        holder.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
        await asyncio.wait_for(waiting, 120)
    finally:
        holder.close()
    # Two more at once: both succeed, the schema is at head once.
    await asyncio.gather(asyncio.to_thread(upgrade_to_head, url), asyncio.to_thread(upgrade_to_head, url))
    assert current_revision(url) == head_revision(url) is not None
