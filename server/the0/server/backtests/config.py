"""Backtest configs: the custom-bots domain's config validation, plus the one rule it leaves to us.

``custom_bots.config_validation.validate_config(..., schema="backtest")`` resolves
``type``/``version`` to an APPROVED version of the owner's custom bot, refuses a
version without a backtest entrypoint (BACKTEST_NOT_SUPPORTED) and checks the
config against ``schema.backtest`` when there is one. A backtest also needs that
schema (DESIGN.md §3: "validated against schema.backtest"), so a version with a
backtest entrypoint but no backtest schema is refused here, with the same reason.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.custom_bots.catalog import CustomBotCatalog
from the0.server.custom_bots.config_validation import ValidatedConfig, validate_config
from the0.server.errors import FailedPrecondition


async def validate_backtest_config(
    session: AsyncSession, catalog: CustomBotCatalog, owner_id: str, config: dict[str, Any]
) -> ValidatedConfig:
    validated = await validate_config(session, catalog, owner_id, config, schema="backtest")
    custom_bot = validated.custom_bot
    if custom_bot.backtest_schema is None:
        raise FailedPrecondition(
            f"custom bot {custom_bot.name!r} version {custom_bot.version} has no backtest schema",
            reason="BACKTEST_NOT_SUPPORTED",
            metadata={"customBot": custom_bot.name, "version": custom_bot.version},
        )
    return validated
