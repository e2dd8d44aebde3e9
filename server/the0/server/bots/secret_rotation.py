"""``the0-server rotate-secrets``: every sealed config value of every bot sealed again under the current key.

Runs beside serving replicas: each batch of bots is read FOR UPDATE and rewritten in one
transaction, so a concurrent UpdateBot waits for it (or it for the update). The etag is
left as it is: the config a caller sees did not change. Once the command reports no value
it could not open, the old key can be removed from THE0_SECRETS_KEY (docs/operations.md).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.bots.models import BotRow
from the0.server.secrets.box import ConfigSecrets, SecretUnreadable

log = logging.getLogger("the0.secrets")
BATCH = 200


@dataclass(frozen=True, slots=True)
class RotationReport:
    bots_seen: int
    values_resealed: int
    # Bot ids whose values no key of the ring opens: their secrets must be sent again.
    unreadable: tuple[str, ...]


async def rotate_secrets(sessions: async_sessionmaker[AsyncSession], secrets: ConfigSecrets) -> RotationReport:
    seen = resealed = 0
    unreadable: list[str] = []
    after = ""
    while True:
        async with sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(BotRow.id, BotRow.config)
                    .where(BotRow.id > after)
                    .order_by(BotRow.id)
                    .limit(BATCH)
                    .with_for_update()
                )
            ).all()
            for bot_id, config in rows:
                seen += 1
                try:
                    new_config, count = secrets.reseal(bot_id, dict(config))
                except SecretUnreadable as error:
                    log.warning("secret not rotated: %s", error)
                    unreadable.append(bot_id)
                    continue
                if count:
                    resealed += count
                    # A bulk UPDATE, not the ORM's unit of work: that would give the row a new etag.
                    await session.execute(
                        update(BotRow).where(BotRow.id == bot_id).values(config=new_config),
                        execution_options={"synchronize_session": False},
                    )
        if len(rows) < BATCH:
            break
        after = rows[-1][0]
    log.info("secrets rotated", extra={"bots": seen, "values": resealed, "unreadable": len(unreadable),
                                       "kid": secrets.current_kid})
    return RotationReport(seen, resealed, tuple(unreadable))
