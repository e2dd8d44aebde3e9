"""Migrations 0300_backtests and 0540_backtest_results_verdict go down and up again cleanly on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import inspect
from sqlalchemy.pool import NullPool

from the0.server.db.engine import sync_url
from the0.server.db.migrate import alembic_config, current_revision, upgrade_to_head


def _tables(database_url: str) -> set[str]:
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_backtests_migration_downgrades_and_upgrades(database_url):
    assert {"backtests", "backtest_requests"} <= _tables(database_url)
    command.downgrade(alembic_config(database_url), "0200_bots")
    assert current_revision(database_url) == "0200_bots"
    assert not {"backtests", "backtest_requests"} & _tables(database_url)
    upgrade_to_head(database_url)
    assert {"backtests", "backtest_requests"} <= _tables(database_url)


def _backtest_columns(database_url: str) -> set[str]:
    engine = create_sync_engine(sync_url(database_url), poolclass=NullPool)
    try:
        return {column["name"] for column in inspect(engine).get_columns("backtests")}
    finally:
        engine.dispose()


def test_the_results_verdict_migration_downgrades_and_upgrades(database_url):
    verdict = {"analysis_size", "analysis_version", "analysis_valid"}
    assert verdict <= _backtest_columns(database_url)
    command.downgrade(alembic_config(database_url), "0530_service_accounts")
    assert not verdict & _backtest_columns(database_url)
    upgrade_to_head(database_url)
    assert verdict <= _backtest_columns(database_url)
