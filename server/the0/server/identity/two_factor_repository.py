"""SQL of two-factor login: accepted time steps, recovery codes, login challenges.

Every claim (a time step, a recovery code, a challenge) is one conditional UPDATE, so two
racing requests with the same code or challenge cannot both win.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.db.models import LoginChallengeRow, RecoveryCodeRow, SessionRow, UserRow
from the0.server.identity.repository import new_id


class TwoFactorRepository:
    def __init__(self, db: AsyncSession) -> None:
        self._db = db

    async def claim_step(self, user_id: str, step: int) -> bool:
        """True if ``step`` is later than the last accepted one (and now is it)."""
        result = await self._db.execute(
            update(UserRow)
            .where(UserRow.id == user_id, or_(UserRow.totp_last_step.is_(None), UserRow.totp_last_step < step))
            .values(totp_last_step=step)
            .returning(UserRow.id)
        )
        return result.scalar_one_or_none() is not None

    async def use_recovery_code(self, user_id: str, code_hash: str, now: datetime) -> bool:
        result = await self._db.execute(
            update(RecoveryCodeRow)
            .where(RecoveryCodeRow.user_id == user_id, RecoveryCodeRow.code_hash == code_hash,
                   RecoveryCodeRow.used_at.is_(None))
            .values(used_at=now)
            .returning(RecoveryCodeRow.id)
        )
        return result.first() is not None

    async def replace_recovery_codes(self, user_id: str, code_hashes: Iterable[str], now: datetime) -> None:
        await self.delete_recovery_codes(user_id)
        self._db.add_all(RecoveryCodeRow(id=new_id(), user_id=user_id, code_hash=h, created_at=now)
                         for h in code_hashes)

    async def delete_recovery_codes(self, user_id: str) -> None:
        await self._db.execute(delete(RecoveryCodeRow).where(RecoveryCodeRow.user_id == user_id))

    async def turn_off(self, user: UserRow, now: datetime) -> None:
        """Two-factor login off for ``user`` (a locked row): its secret, recovery codes and challenges go."""
        user.totp_secret = user.totp_enabled_at = user.totp_last_step = None
        user.updated_at = now
        await self.delete_recovery_codes(user.id)
        await self.void_challenges(user.id)

    async def add_challenge(self, user_id: str, token_hash: str, now: datetime, expires: datetime) -> None:
        # The account's spent and expired challenges go first: the table holds live ones only.
        await self._db.execute(delete(LoginChallengeRow).where(
            LoginChallengeRow.user_id == user_id,
            or_(LoginChallengeRow.used_at.is_not(None), LoginChallengeRow.expires_at <= now)))
        self._db.add(LoginChallengeRow(id=new_id(), user_id=user_id, token_hash=token_hash, created_at=now,
                                       expires_at=expires))

    async def find_challenge(self, token_hash: str) -> LoginChallengeRow | None:
        return (await self._db.execute(
            select(LoginChallengeRow).where(LoginChallengeRow.token_hash == token_hash)
        )).scalar_one_or_none()

    async def claim_challenge(self, challenge_id: str, now: datetime) -> bool:
        result = await self._db.execute(
            update(LoginChallengeRow)
            .where(LoginChallengeRow.id == challenge_id, LoginChallengeRow.used_at.is_(None),
                   LoginChallengeRow.expires_at > now)
            .values(used_at=now)
            .returning(LoginChallengeRow.id)
        )
        return result.scalar_one_or_none() is not None

    async def count_failure(self, challenge_id: str) -> None:
        await self._db.execute(
            update(LoginChallengeRow).where(LoginChallengeRow.id == challenge_id)
            .values(failed_attempts=LoginChallengeRow.failed_attempts + 1)
        )

    async def void_challenges(self, user_id: str) -> None:
        await self._db.execute(delete(LoginChallengeRow).where(LoginChallengeRow.user_id == user_id))

    async def mark_second_factor(self, session_id: str, now: datetime) -> None:
        await self._db.execute(update(SessionRow).where(SessionRow.id == session_id)
                               .values(second_factor_at=now))

    async def second_factor_time(self, session_id: str) -> datetime | None:
        session = await self._db.get(SessionRow, session_id)
        return session.second_factor_at if session is not None else None
