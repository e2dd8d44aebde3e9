"""``the0-server rotate-secrets``, second half: every user's sealed TOTP secret sealed again under
the current key of THE0_SECRETS_KEY (the first half, ``bots/secret_rotation.py``, does bot configs).

Same shape as the bots' rotation: batches of users read FOR UPDATE and rewritten in one
transaction each (a concurrent enrolment or login waits for it), keyset-paged by id. Safe to
rerun: a secret already under the current key is left alone. Pending secrets (enrolment begun,
not confirmed) are resealed too, so no value stays under a key that is about to go.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.db.models import UserRow
from the0.server.identity.totp import TotpSecrets
from the0.server.secrets.box import ConfigSecrets, SecretUnreadable

log = logging.getLogger("the0.secrets")
BATCH = 200


@dataclass(frozen=True, slots=True)
class TotpRotationReport:
    users_seen: int  # users holding a TOTP secret
    secrets_resealed: int
    # User ids whose secret no key of the ring opens: they must enrol again.
    unreadable: tuple[str, ...]


async def rotate_totp_secrets(sessions: async_sessionmaker[AsyncSession], box: ConfigSecrets) -> TotpRotationReport:
    secrets = TotpSecrets(box)
    seen = resealed = 0
    unreadable: list[str] = []
    after = ""
    while True:
        async with sessions() as session, session.begin():
            rows = (
                await session.execute(
                    select(UserRow.id, UserRow.totp_secret)
                    .where(UserRow.id > after, UserRow.totp_secret.is_not(None))
                    .order_by(UserRow.id)
                    .limit(BATCH)
                    .with_for_update()
                )
            ).all()
            for user_id, sealed in rows:
                seen += 1
                try:
                    fresh = secrets.reseal(user_id, str(sealed))  # not None: the query says so
                except SecretUnreadable:
                    # box's message names a "bot"; say what this is instead (never the value).
                    log.warning("TOTP secret not rotated: no key of the ring opens it", extra={"user_id": user_id})
                    unreadable.append(user_id)
                    continue
                if fresh is not None:
                    resealed += 1
                    # updated_at kept (its onupdate would fire): the account did not change.
                    await session.execute(
                        update(UserRow).where(UserRow.id == user_id)
                        .values(totp_secret=fresh, updated_at=UserRow.updated_at),
                        execution_options={"synchronize_session": False},
                    )
        if len(rows) < BATCH:
            break
        after = rows[-1][0]
    log.info("TOTP secrets rotated", extra={"users": seen, "values": resealed, "unreadable": len(unreadable),
                                            "kid": box.current_kid})
    return TotpRotationReport(seen, resealed, tuple(unreadable))
