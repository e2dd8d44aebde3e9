"""Rules of the platform API: what the runtime and the analyzer may fetch, each fetch audited."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, runtime_checkable

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from the0.server.audit.trail import Actor, AuditTrail
from the0.server.custom_bots.catalog import CUSTOM_BOTS_BUCKET, CustomBotVersion, version_from_row
from the0.server.errors import AlreadyExists, NotFound, PermissionDenied, Unavailable
from the0.server.identity.principal import Principal
from the0.server.platform import keys
from the0.server.platform.authenticator import ServiceKeys
from the0.server.platform.models import ServiceAccountRow
from the0.server.platform.repository import PlatformRepository
from the0.server.secrets.box import ConfigSecrets
from the0.server.storage.object_store import ObjectNotFound, ObjectStore, ObjectStoreError

log = logging.getLogger("the0.platform")
# How long a download URL in GetBotDeployment works (docs/limits.md, "Platform API").
DOWNLOAD_URL_TTL = timedelta(minutes=5)


@runtime_checkable
class MakesDownloadUrls(Protocol):
    """A store that can hand out a URL for an object (MinIO: presigned GET; local: file://)."""

    async def download_url(self, bucket: str, key: str, expires: timedelta) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Archive:
    bucket: str
    object_key: str
    sha256: str
    size_bytes: int
    download_url: str | None
    download_url_expire_time: datetime | None


@dataclass(frozen=True, slots=True)
class BotDeployment:
    bot_id: str
    owner_id: str
    name: str
    state: str
    config: dict[str, Any]
    custom_bot: CustomBotVersion
    archive: Archive
    entrypoints: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    id: str
    name: str
    role: str
    create_time: datetime


class PlatformService:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        store: ObjectStore,
        service_keys: ServiceKeys,
        secrets: ConfigSecrets,
        audit: AuditTrail | None = None,
    ) -> None:
        self._audit = audit or AuditTrail(())
        self._secrets = secrets
        self._sessions = sessions
        self._store = store
        self._service_keys = service_keys

    async def get_bot_deployment(self, caller: Principal, bot_id: str) -> BotDeployment:
        async with self._sessions() as db:
            repository = PlatformRepository(db)
            bot = await repository.bot(bot_id)
            custom_row = None if bot is None else await repository.custom_bot(bot.custom_bot_id)
            if bot is None or custom_row is None:
                raise NotFound("no such bot")
            version = version_from_row(custom_row)
            # The one place a config leaves the server with its secrets in clear: audited below.
            config = self._secrets.reveal(bot.id, bot.config, version.bot_schema)
            revealed = config != bot.config
            repository.audit(account_id=caller.user_id, method="GetBotDeployment", kind="bot",
                             resource_id=bot.id, owner_id=bot.owner_id, secrets_revealed=revealed)
            if revealed:  # the account-wide trail names the fetches that handed out an owner's secrets
                self._audit.record(db, "platform.secret-fetched", actor=Actor.of(caller), subject_user_id=bot.owner_id,
                                   details={"botId": bot.id, "method": "GetBotDeployment"})
            await db.commit()
        # Who fetched which bot, never what: no config value is logged.
        log.info("bot deployment fetched", extra={
            "service_account_id": caller.user_id, "bot_id": bot.id, "owner_id": bot.owner_id,
            "secrets_revealed": revealed,
        })
        archive = await self._archive(custom_row.object_key, custom_row.sha256, custom_row.size_bytes)
        return BotDeployment(bot_id=bot.id, owner_id=bot.owner_id, name=bot.name, state=bot.state,
                             config=config, custom_bot=version, archive=archive,
                             entrypoints=dict(version.entrypoints))

    async def _archive(self, key: str, sha256: str, size: int) -> Archive:
        url = expires = None
        if isinstance(self._store, MakesDownloadUrls):
            try:
                url = await self._store.download_url(CUSTOM_BOTS_BUCKET, key, DOWNLOAD_URL_TTL)
            except ObjectStoreError:
                raise Unavailable("the archive store is unavailable; try again later",
                                  metadata={"dependency": "objectStore"}) from None
            if url is not None and not url.startswith("file:"):
                expires = datetime.now(UTC) + DOWNLOAD_URL_TTL
        return Archive(bucket=CUSTOM_BOTS_BUCKET, object_key=key, sha256=sha256, size_bytes=size,
                       download_url=url, download_url_expire_time=expires)

    async def open_custom_bot_archive(self, caller: Principal, custom_bot_id: str) -> AsyncGenerator[bytes, None]:
        async with self._sessions() as db:
            repository = PlatformRepository(db)
            row = await repository.custom_bot(custom_bot_id)
            if row is None:
                raise NotFound("no such custom bot")
            repository.audit(account_id=caller.user_id, method="GetCustomBotArchive", kind="custom_bot",
                             resource_id=row.id, owner_id=row.owner_id, secrets_revealed=False)
            await db.commit()
        log.info("custom bot archive fetched",
                 extra={"service_account_id": caller.user_id, "custom_bot_id": row.id})
        try:
            return await self._store.open_stream(CUSTOM_BOTS_BUCKET, row.object_key)
        except ObjectNotFound:
            log.error("archive missing from the store", extra={"custom_bot_id": row.id})
            raise Unavailable("the archive is not available right now") from None
        except ObjectStoreError:
            raise Unavailable("the archive store is unavailable; try again later") from None

    async def create_service_account(self, caller: Principal, name: str, role: str) -> tuple[ServiceAccount, str]:
        # The role first, so non-admins learn nothing about which names exist.
        if not caller.is_admin:
            raise PermissionDenied("only an admin may create service accounts")
        key = keys.new_key()
        row = ServiceAccountRow(id=str(uuid.uuid4()), name=name, role=role, key_hash=keys.key_hash(key),
                                created_by=caller.user_id, create_time=datetime.now(UTC))
        async with self._sessions() as db:
            PlatformRepository(db).add_account(row)
            try:
                await db.commit()
            except IntegrityError:
                raise AlreadyExists("a service account of that name exists", metadata={"name": name}) from None
        log.info("service account created", extra={"service_account_id": row.id, "role": role,
                                                   "created_by": caller.user_id})
        return ServiceAccount(id=row.id, name=row.name, role=row.role, create_time=row.create_time), key

    async def bootstrap(self, accounts: Iterable[tuple[str, str, str]]) -> None:
        """Accounts from THE0_SERVICE_ACCOUNTS: created, or given the configured role and key."""
        accounts = list(accounts)
        if not accounts:
            return
        async with self._sessions() as db:
            repository = PlatformRepository(db)
            for role, name, key in accounts:
                row = await repository.account_by_name(name)
                if row is None:
                    repository.add_account(ServiceAccountRow(id=str(uuid.uuid4()), name=name, role=role,
                                                             key_hash=keys.key_hash(key)))
                else:
                    row.role, row.key_hash = role, keys.key_hash(key)
            try:
                await db.commit()
            except IntegrityError:  # another replica bootstrapped the same accounts at once
                await db.rollback()
        self._service_keys.forget()
        log.info("service accounts bootstrapped", extra={"count": len(accounts)})
