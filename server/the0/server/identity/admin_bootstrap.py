"""Create or update the admin named by THE0_ADMIN_EMAIL / THE0_ADMIN_PASSWORD at start-up.

Idempotent, and safe when several replicas start together: a replica that loses
the insert race (unique violation) updates the winner's row instead.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.db.models import UserRow
from the0.server.identity.passwords import Passwords
from the0.server.identity.repository import UserRepository, new_id
from the0.server.identity.service import normalise_email

log = logging.getLogger("the0.identity.admin")


async def bootstrap_admin(
    sessions: async_sessionmaker[AsyncSession], passwords: Passwords, email: str, password: str
) -> None:
    email = normalise_email(email)
    for _attempt in range(3):
        async with sessions() as db:
            users = UserRepository(db)
            user = await users.find_by_email(email)
            now = datetime.now(UTC)
            if user is None:
                users.add(UserRow(
                    id=new_id(), email=email, username=await _free_username(users, email),
                    password_hash=await passwords.hash(password), role="admin", active=True,
                    created_at=now, updated_at=now,
                ))
                action = "created"
            else:
                verified = await passwords.verify(user.password_hash, password)
                if not verified.ok or verified.needs_rehash:
                    user.password_hash = await passwords.hash(password)
                user.role, user.active = "admin", True
                action = "updated"
            try:
                await db.commit()
            except IntegrityError:  # another replica inserted it meanwhile: update theirs
                await db.rollback()
                continue
        log.info("admin account %s", action, extra={"email": email})
        return
    raise RuntimeError("could not create or update the admin account")


async def _free_username(users: UserRepository, email: str) -> str:
    base = "".join(c for c in email.split("@")[0] if c.isalnum() or c in "_.-")[:40] or "admin"
    base = base if len(base) >= 3 else f"{base}-admin"
    candidate, suffix = base, 1
    while (await users.taken(email="", username=candidate))[1]:
        suffix += 1
        candidate = f"{base}-{suffix}"
    return candidate
