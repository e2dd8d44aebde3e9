"""Bot rules: validation, the lifecycle, request ids, etags, events and watching.

Never sees protobuf types. Every write is one transaction that also stages its
events in the outbox and announces the change to watchers after commit.

Secret config fields (``writeOnly`` in the custom bot's schema) are sealed before
they are stored and shown as ``secrets.box.PLACEHOLDER`` everywhere else: responses,
watch updates, events (the runtime opens them through the platform API). An update
that omits a secret, or sends back the placeholder, keeps the stored value.

The lifecycle is the table in lifecycle.py (shared with the runtime events in
events.py). A deploy always uses the bot's current config, so a redeploy after
an update runs the new one.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from cachetools import LRUCache
from sqlalchemy import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from the0.server.bots.lifecycle import BOT_LIFECYCLE
from the0.server.bots.models import BotRow
from the0.server.bots.repository import BotRepository
from the0.server.custom_bots.catalog import CustomBotCatalog, CustomBotVersion
from the0.server.custom_bots.config_validation import ValidatedConfig, config_error, validate_config
from the0.server.db.pages import OwnedReads
from the0.server.db.repository import lock_for_update
from the0.server.db.sessions import autocommit_sessions
from the0.server.errors import (
    Aborted,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from the0.server.events.outbox import Outbox
from the0.server.events.watch_hub import Heartbeat, Snapshot, WatchHub
from the0.server.pagination import Cursor, PageTokens
from the0.server.quotas import enforce_quota
from the0.server.secrets.box import PLACEHOLDER, ConfigSecrets, mask, placeholders_left
from the0.server.secrets.fields import secret_paths
from the0.server.validation import check_display_name, check_request_id

log = logging.getLogger("the0.bots")

WATCH_KIND = "bot"


@dataclass(frozen=True, slots=True)
class Bot:
    id: str
    owner_id: str
    name: str
    config: dict[str, Any]
    state: str
    custom_bot_id: str
    etag: str
    error: str | None
    last_execution: dict[str, Any] | None
    create_time: datetime
    update_time: datetime

    @classmethod
    def from_row(cls, row: BotRow | Row[Any]) -> Bot:
        """From the ORM row, or a Core row of the bots table (the same names: db/pages.py reads those)."""
        return cls(
            id=row.id,
            owner_id=row.owner_id,
            name=row.name,
            config=mask(dict(row.config)),
            state=row.state,
            custom_bot_id=row.custom_bot_id,
            etag=row.etag,
            error=row.error,
            last_execution=dict(row.last_execution) if row.last_execution else None,
            create_time=row.create_time,
            update_time=row.update_time,
        )


@dataclass(frozen=True, slots=True)
class BotPage:
    bots: list[Bot]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class BotDeleted:
    """The last thing a watcher of a deleted bot receives."""

    id: str
    delete_time: datetime


def event_data(row: BotRow, custom_bot: CustomBotVersion | None) -> dict[str, Any]:
    """What a runtime needs to act on a bot event; secret fields are PLACEHOLDER (fetched through the platform API)."""
    return {
        "botId": row.id,
        "ownerId": row.owner_id,
        "name": row.name,
        "state": row.state,
        "config": mask(dict(row.config)),
        "customBot": custom_bot.runtime_data() if custom_bot is not None else None,
    }


def _no_placeholders(config: dict[str, Any], custom_bot: CustomBotVersion) -> dict[str, Any]:
    """Refuse PLACEHOLDER in a secret field with no stored value to keep (a create, or a new field)."""
    left = placeholders_left(config, custom_bot.bot_schema)
    if left:
        raise config_error(
            FieldViolation(".".join(["config", *path]), f"is {PLACEHOLDER!r}, the mark of a stored secret, "
                           "but none is stored: send the value")
            for path in left
        )
    return config


def _now() -> datetime:
    return datetime.now(UTC)


def _not_found(bot_id: str) -> NotFound:
    return NotFound(f"bot {bot_id!r} not found", metadata={"id": bot_id})


def _etag_mismatch(bot_id: str) -> Aborted:
    return Aborted(
        "the bot changed since it was read (etag mismatch): read it again and retry",
        reason="ETAG_MISMATCH",
        metadata={"id": bot_id},
    )


class _LostRace(Exception):
    """Another write of the row committed between this write's read and its UPDATE (the etag lock)."""

    def __init__(self, bot_id: str) -> None:
        super().__init__(bot_id)
        self.bot_id = bot_id


_T = TypeVar("_T")
_WRITE_TRIES = 3


async def _retrying_lost_races(write: Callable[[], Awaitable[_T]]) -> _T:
    """Run a bot write again when a concurrent write of the same row won (a runtime event, say).

    On SQLite a deferred transaction takes its lock at the first write, so two writers can read the same
    version. The client did not cause that: the write is done again on the new version. A caller that
    named an etag still gets ETAG_MISMATCH, from the check against the row read on the next try.
    """
    for tries_left in range(_WRITE_TRIES - 1, -1, -1):
        try:
            return await write()
        except _LostRace as lost:
            if tries_left == 0:
                raise _etag_mismatch(lost.bot_id) from lost
    raise AssertionError("unreachable")


def invalid_state(row: BotRow, action: str) -> FailedPrecondition:
    allowed = BOT_LIFECYCLE.sources(action)
    return FailedPrecondition(
        f"cannot {action} a bot in state {row.state}; allowed from {', '.join(allowed)}",
        reason="INVALID_STATE",
        metadata={"id": row.id, "state": row.state},
    )


class _SharedReads:
    """Watchers of one bot woken by one change share one database read.

    A watcher woken after a commit may join a read that started just before it and so
    see the previous version; the etag is then unchanged, nothing is sent, and the
    next heartbeat's re-read delivers the change. 1,000 watchers cost one query per change.
    """

    def __init__(self) -> None:
        self._inflight: dict[tuple[str, str], asyncio.Future[Bot | None]] = {}

    async def read(self, key: tuple[str, str], load: Callable[[], Awaitable[Bot | None]]) -> Bot | None:
        future = self._inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(load())
            self._inflight[key] = future
            future.add_done_callback(lambda _f: self._inflight.pop(key, None))
        return await asyncio.shield(future)


class BotService:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        outbox: Outbox,
        watch_hub: WatchHub,
        catalog: CustomBotCatalog,
        page_tokens: PageTokens,
        secrets: ConfigSecrets,
        max_bots_per_user: int = 100,
    ) -> None:
        self._sessions = sessions
        self._secrets = secrets
        self._max_bots = max_bots_per_user
        self._read_sessions = autocommit_sessions(sessions)
        self._reads = OwnedReads(
            self._read_sessions,
            page_tokens,
            repository=BotRepository,
            to_value=self._bot_of,
            cursor=lambda row: Cursor(row.create_time, row.id),
            list_scope="bots.list",
        )
        self._outbox = outbox
        self._hub = watch_hub
        self._catalog = catalog
        self._shared_reads = _SharedReads()
        # Rows read as domain values, once per version of each bot (masking walks the whole config).
        self._values: LRUCache[tuple[str, str], Bot] = LRUCache(maxsize=10_000)

    def _bot_of(self, row: Row[Any]) -> Bot:
        key = (row.id, row.etag)
        bot = self._values.get(key)
        if bot is None:
            bot = self._values[key] = Bot.from_row(row)
        return bot

    # -- reads ---------------------------------------------------------------

    async def get(self, owner_id: str, bot_id: str) -> Bot:
        found = await self._reads.get(owner_id, bot_id)
        if found is None:
            raise _not_found(bot_id)
        return found

    async def list(
        self, owner_id: str, *, state: str | None, requested_page_size: int, page_token: str
    ) -> BotPage:
        found, next_token = await self._reads.page(
            owner_id, state=state, requested_page_size=requested_page_size, page_token=page_token
        )
        return BotPage(found, next_token)

    # -- writes --------------------------------------------------------------

    async def create(self, owner_id: str, *, name: str, config: dict[str, Any], request_id: str = "") -> Bot:
        name = check_display_name(name, field="bot.name")
        request = check_request_id(request_id)
        if request is not None and (done := await self._served(owner_id, "create", request)) is not None:
            return done
        try:
            async with self._sessions() as session, session.begin():
                bots = BotRepository(session, owner_id)
                bot_id = str(uuid.uuid4())
                validated = await validate_config(
                    session, self._catalog, owner_id, config, schema="bot", prepare=_no_placeholders
                )
                now = _now()
                row = BotRow(
                    id=bot_id,
                    owner_id=owner_id,
                    name=name,
                    config=self._seal(bot_id, validated),
                    state="DRAFT",
                    custom_bot_id=validated.custom_bot.id,
                    create_time=now,
                    update_time=now,
                )
                bots.add(row)
                if request is not None:
                    bots.remember_request("create", request, row.id)
                await session.flush()
                await enforce_quota(session, BotRow, owner_id, limit=self._max_bots, resource="bots",
                                    what="bots", hint="; delete one first")
                self._outbox.add(session, "bot.created", event_data(row, validated.custom_bot))
                self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)
        except IntegrityError:
            # The same request_id raced us and won: answer with its bot.
            if request is not None and (done := await self._served(owner_id, "create", request)) is not None:
                return done
            raise
        log.info("bot created", extra={"bot_id": row.id, "owner_id": owner_id})
        return Bot.from_row(row)

    async def update(
        self, owner_id: str, bot_id: str, *, name: str | None, config: dict[str, Any] | None, etag: str = ""
    ) -> Bot:
        return await _retrying_lost_races(
            lambda: self._update_once(owner_id, bot_id, name=name, config=config, etag=etag)
        )

    async def _update_once(
        self, owner_id: str, bot_id: str, *, name: str | None, config: dict[str, Any] | None, etag: str = ""
    ) -> Bot:
        if name is not None:
            name = check_display_name(name, field="bot.name")
        try:
            async with self._sessions() as session, session.begin():
                row = await BotRepository(session, owner_id).get(bot_id, for_update=True)
                if row is None:
                    raise _not_found(bot_id)
                if etag and etag != row.etag:
                    raise _etag_mismatch(bot_id)
                custom_bot = None
                if config is not None:
                    stored = await self._catalog.get(session, owner_id, row.custom_bot_id)
                    stored_schema = stored.bot_schema if stored is not None else None
                    stored_config = dict(row.config)

                    def keep_secrets(new: dict[str, Any], version: CustomBotVersion) -> dict[str, Any]:
                        kept = self._secrets.carry_over(
                            bot_id, stored_config, stored_schema, new, version.bot_schema
                        )
                        return _no_placeholders(kept, version)

                    validated = await validate_config(
                        session, self._catalog, owner_id, config, schema="bot", prepare=keep_secrets
                    )
                    custom_bot = validated.custom_bot
                    row.config = self._seal(bot_id, validated)
                    row.custom_bot_id = custom_bot.id
                else:
                    custom_bot = await self._catalog.get(session, owner_id, row.custom_bot_id)
                if name is not None:
                    row.name = name
                row.update_time = _now()
                await session.flush()
                self._outbox.add(session, "bot.updated", event_data(row, custom_bot))
                self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)
        except StaleDataError as error:
            raise _LostRace(bot_id) from error
        return Bot.from_row(row)

    async def delete(self, owner_id: str, bot_id: str, *, etag: str = "") -> None:
        return await _retrying_lost_races(lambda: self._delete_once(owner_id, bot_id, etag=etag))

    async def _delete_once(self, owner_id: str, bot_id: str, *, etag: str = "") -> None:
        try:
            async with self._sessions() as session, session.begin():
                bots = BotRepository(session, owner_id)
                row = await bots.get(bot_id, for_update=True)
                if row is None:
                    raise _not_found(bot_id)
                if etag and etag != row.etag:
                    raise _etag_mismatch(bot_id)
                custom_bot = await self._catalog.get(session, owner_id, row.custom_bot_id)
                if BOT_LIFECYCLE.allows("stop", row.state):
                    # The runtime stops it first; the delete follows in the same order on the stream.
                    self._outbox.add(
                        session, "bot.stop-requested", event_data(row, custom_bot) | {"reason": "deleted"}
                    )
                self._outbox.add(session, "bot.deleted", event_data(row, custom_bot))
                await bots.delete(row)
                await session.flush()
                self._hub.notify_after_commit(session, WATCH_KIND, bot_id, "deleted")
        except StaleDataError as error:
            raise _LostRace(bot_id) from error
        log.info("bot deleted", extra={"bot_id": bot_id, "owner_id": owner_id})

    async def erase_account(self, session: AsyncSession, owner_id: str) -> dict[str, int]:
        """Account deletion, inside its transaction: every bot of the owner is stopped and deleted as
        DeleteBot does it (``bot.stop-requested`` with reason "account-deleted", then ``bot.deleted``),
        its executions with it; its request ids are forgotten."""
        bots = BotRepository(session, owner_id)
        rows = list(await session.scalars(lock_for_update(session, bots.every_bot())))
        stopped = 0
        for row in rows:
            custom_bot = await self._catalog.get(session, owner_id, row.custom_bot_id)
            if BOT_LIFECYCLE.allows("stop", row.state):
                stopped += 1
                self._outbox.add(
                    session, "bot.stop-requested", event_data(row, custom_bot) | {"reason": "account-deleted"}
                )
            self._outbox.add(session, "bot.deleted", event_data(row, custom_bot))
            await bots.delete(row)
            self._hub.notify_after_commit(session, WATCH_KIND, row.id, "deleted")
        await session.flush()
        await bots.forget_requests()
        return {"botsStopped": stopped, "botsDeleted": len(rows)}

    async def deploy(self, owner_id: str, bot_id: str, *, request_id: str = "") -> Bot:
        return await _retrying_lost_races(lambda: self._deploy_once(owner_id, bot_id, request_id=request_id))

    async def _deploy_once(self, owner_id: str, bot_id: str, *, request_id: str = "") -> Bot:
        request = check_request_id(request_id)
        if request is not None:
            done = await self._served(owner_id, "deploy", request)
            if done is not None:
                if done.id != bot_id:
                    raise InvalidArgument(
                        "requestId was already used to deploy another bot",
                        violations=[FieldViolation("requestId", "already used for another bot")],
                    )
                return done
        try:
            async with self._sessions() as session, session.begin():
                bots = BotRepository(session, owner_id)
                row = await bots.get(bot_id, for_update=True)
                if row is None:
                    raise _not_found(bot_id)
                if not BOT_LIFECYCLE.allows("deploy", row.state):
                    raise invalid_state(row, "deploy")
                custom_bot = await self._catalog.get(session, owner_id, row.custom_bot_id)
                if custom_bot is None or not custom_bot.approved:
                    state = custom_bot.state if custom_bot is not None else "MISSING"
                    raise FailedPrecondition(
                        "the bot's custom-bot version is no longer APPROVED",
                        reason="CUSTOM_BOT_NOT_APPROVED",
                        metadata={"id": bot_id, "customBotId": row.custom_bot_id, "state": state},
                    )
                row.state = BOT_LIFECYCLE.target("deploy", row.state, "DEPLOYING")
                row.error = None
                row.update_time = _now()
                if request is not None:
                    bots.remember_request("deploy", request, row.id)
                await session.flush()
                self._outbox.add(session, "bot.deploy-requested", event_data(row, custom_bot))
                self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)
        except StaleDataError as error:
            raise _LostRace(bot_id) from error
        except IntegrityError:
            if request is not None and (done := await self._served(owner_id, "deploy", request)) is not None:
                return done
            raise
        log.info("bot deploy requested", extra={"bot_id": bot_id, "owner_id": owner_id})
        return Bot.from_row(row)

    async def stop(self, owner_id: str, bot_id: str) -> Bot:
        return await _retrying_lost_races(lambda: self._stop_once(owner_id, bot_id))

    async def _stop_once(self, owner_id: str, bot_id: str) -> Bot:
        try:
            async with self._sessions() as session, session.begin():
                row = await BotRepository(session, owner_id).get(bot_id, for_update=True)
                if row is None:
                    raise _not_found(bot_id)
                if not BOT_LIFECYCLE.allows("stop", row.state):
                    raise invalid_state(row, "stop")
                custom_bot = await self._catalog.get(session, owner_id, row.custom_bot_id)
                row.state = BOT_LIFECYCLE.target("stop", row.state, "STOPPING")
                row.update_time = _now()
                await session.flush()
                self._outbox.add(
                    session, "bot.stop-requested", event_data(row, custom_bot) | {"reason": "stop"}
                )
                self._hub.notify_after_commit(session, WATCH_KIND, row.id, row.etag)
        except StaleDataError as error:
            raise _LostRace(bot_id) from error
        return Bot.from_row(row)

    def _seal(self, bot_id: str, validated: ValidatedConfig) -> dict[str, Any]:
        return self._secrets.seal(bot_id, validated.config, secret_paths(validated.custom_bot.bot_schema))

    async def _served(self, owner_id: str, method: str, request_id: str) -> Bot | None:
        """The bot of an already served request id, or None if this id is new."""
        async with self._sessions() as session:
            bots = BotRepository(session, owner_id)
            served = await bots.served_request(method, request_id)
            if served is None:
                return None
            row = await bots.get(served.bot_id)
            if row is None:
                raise _not_found(served.bot_id)
            return Bot.from_row(row)

    # -- watching ------------------------------------------------------------

    async def watch(self, owner_id: str, bot_id: str) -> AsyncGenerator[Bot | BotDeleted | Heartbeat, None]:
        """Current bot, then each change, heartbeats; ends with BotDeleted. NotFound if not the caller's."""
        first = True

        async def load() -> Snapshot[Bot | BotDeleted]:
            nonlocal first
            bot = await self._shared_reads.read((owner_id, bot_id), lambda: self._reads.get(owner_id, bot_id))
            if bot is None:
                if first:
                    raise _not_found(bot_id)
                return Snapshot(BotDeleted(bot_id, _now()), etag="deleted", terminal=True)
            first = False
            return Snapshot(bot, etag=bot.etag, terminal=False)

        async for item in self._hub.watch(WATCH_KIND, bot_id, load):
            yield item
