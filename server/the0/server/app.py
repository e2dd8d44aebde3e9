"""Composition root: ``build(settings)`` wires every part and returns a startable App.

Nothing here runs at import time. The server binds to ``settings.grpc_port``
(0 picks a free port, as tests do) and reports the bound port.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import grpc.aio
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from sqlalchemy.ext.asyncio import AsyncEngine

from the0.admin.v1 import admin_service_pb2, admin_service_pb2_grpc
from the0.api_key.v1 import api_key_service_pb2, api_key_service_pb2_grpc
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.backtest.v1 import backtest_service_pb2, backtest_service_pb2_grpc
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.custom_bot.v1 import custom_bot_service_pb2, custom_bot_service_pb2_grpc
from the0.health.v1 import health_service_pb2, health_service_pb2_grpc
from the0.platform.v1 import platform_service_pb2, platform_service_pb2_grpc
from the0.server import __version__, metrics, tracing
from the0.server.background import BackgroundTasks
from the0.server.backtests.component import Backtests
from the0.server.bot_logs.component import BotLogs
from the0.server.bots.component import Bots
from the0.server.custom_bots.component import CustomBots
from the0.server.db.engine import create_engine, ping, session_factory
from the0.server.events.backbone import EventBackbone
from the0.server.health.checks import DependencyChecks
from the0.server.health.servicer import HealthServicer
from the0.server.identity.component import Identity
from the0.server.identity.servicers import client_address
from the0.server.interceptors.auth import AuthInterceptor, access_from_services, policies_from_services
from the0.server.interceptors.deadline import DeadlineInterceptor
from the0.server.interceptors.error_mapping import ErrorMappingInterceptor
from the0.server.interceptors.input_gate import InputGateInterceptor
from the0.server.interceptors.rate_limit import CallerLimits, RateLimitInterceptor, request_costs
from the0.server.interceptors.request_logging import RequestLoggingInterceptor
from the0.server.limits import RatePolicy
from the0.server.nats_link import NatsLink
from the0.server.platform.component import Platform
from the0.server.retention import Retention
from the0.server.settings import Settings
from the0.server.storage.factory import object_store_from_settings
from the0.server.storage.object_store import ObjectStore

log = logging.getLogger("the0.app")

_IDENTITY_SERVICES = (
    auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"],
    api_key_service_pb2.DESCRIPTOR.services_by_name["ApiKeyService"],
    admin_service_pb2.DESCRIPTOR.services_by_name["AdminService"],
)
_BACKTEST_SERVICE = backtest_service_pb2.DESCRIPTOR.services_by_name["BacktestService"]
_CUSTOM_BOT_SERVICE = custom_bot_service_pb2.DESCRIPTOR.services_by_name["CustomBotService"]
_BOT_SERVICE = bot_service_pb2.DESCRIPTOR.services_by_name["BotService"]
_HEALTH_SERVICE = health_service_pb2.DESCRIPTOR.services_by_name["HealthService"]
_ALL_API_SERVICES: tuple[ServiceDescriptor, ...] = (
    *_IDENTITY_SERVICES, _CUSTOM_BOT_SERVICE, _BOT_SERVICE, _BACKTEST_SERVICE, _HEALTH_SERVICE
)
# Internal: services call it on the private network; the public Envoy refuses its paths.
_PLATFORM_SERVICE = platform_service_pb2.DESCRIPTOR.services_by_name["PlatformService"]
API_SERVICES = tuple(s.full_name for s in (*_ALL_API_SERVICES, _PLATFORM_SERVICE))

# 10 MB uploads arrive in chunks of about 1 MiB (Envoy) or up to 4 MiB (our
# client); the headroom keeps a slightly larger chunk from being refused.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
HEALTH_POLL_SECONDS = 5.0


def interceptor_chain(
    auth: AuthInterceptor | None = None,
    *,
    request_timeout_seconds: float = 10.0,
    rate_limit: RateLimitInterceptor | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """Outermost first: request id + logging, error mapping, the per-call bound, auth,
    the caller's limits, input gate.

    ``build`` always passes ``auth`` and ``rate_limit``; without them (the interceptor
    benchmark's echo server) the chain has no notion of the API's methods or callers.
    The bound sits inside error mapping so that its UNAVAILABLE is mapped like any other.
    The limits sit inside auth, which names the caller they count against.
    """
    chain: list[grpc.aio.ServerInterceptor] = [
        RequestLoggingInterceptor(),
        ErrorMappingInterceptor(),
        DeadlineInterceptor(request_timeout_seconds),
    ]
    if auth is not None:
        chain.append(auth)
    if rate_limit is not None:
        chain.append(rate_limit)
    # Innermost, because it decodes requests itself: every layer above sees a malformed
    # body or a bad field as an ordinary INVALID_ARGUMENT, with its access line.
    chain.append(InputGateInterceptor())
    return chain


def with_tracing(chain: list[grpc.aio.ServerInterceptor], settings: Settings) -> list[grpc.aio.ServerInterceptor]:
    """The span interceptor right inside the request-id one (its span carries the id); only when
    OTEL_EXPORTER_OTLP_ENDPOINT is set (tracing.py), else the chain as it is."""
    return [chain[0], *tracing.server_interceptors(settings), *chain[1:]]


def connection_options(settings: Settings) -> list[tuple[str, int]]:
    """Keepalive and connection age (docs/limits.md, "Server").

    The server pings an idle connection every ``keepalive_time`` and closes it when no
    answer comes within ``keepalive_timeout``: a vanished client (or Envoy) stops holding
    its streams. Clients may ping every 10 s at the most, even without calls; faster
    pingers get GOAWAY (gRPC's default minimum is 5 min). Connections are closed after
    ``max_connection_age`` (gRPC adds ±10 % jitter) so long-lived HTTP/2 connections,
    Envoy's included, spread again over replicas; their RPCs get the grace to finish,
    after which a watch ends and its client watches again (the first message is the
    current state, so nothing is lost).
    """
    return [
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.max_pings_without_data", 0),  # our own pings: unlimited
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        ("grpc.max_connection_age_ms", int(settings.max_connection_age_seconds * 1000)),
        ("grpc.max_connection_age_grace_ms", int(settings.max_connection_age_grace_seconds * 1000)),
    ]


@dataclass
class App:
    settings: Settings
    server: grpc.aio.Server
    port: int
    engine: AsyncEngine
    object_store: ObjectStore
    grpc_health: health.aio.HealthServicer
    nats: NatsLink
    identity: Identity
    auth: AuthInterceptor
    events: EventBackbone
    custom_bots: CustomBots
    bots: Bots
    backtests: Backtests
    platform: Platform
    tasks: BackgroundTasks = field(default_factory=BackgroundTasks)
    # The caller limits (its counters are what tests of the limits look at).
    rate_limit: RateLimitInterceptor | None = None
    bot_logs: BotLogs | None = None
    # Stops the /metrics server this App started (one process; the supervisor serves it for workers).
    _stop_metrics: Callable[[], None] | None = None

    async def start(self) -> None:
        # Identity first: the revoked sessions and keys are known before the first call.
        await self.identity.start(self.tasks)
        await self.platform.start()
        await self.server.start()
        await self._set_serving(True)
        self.nats.start(self.tasks)
        await self.custom_bots.start()
        await self.backtests.start()
        self.bots.start(self.tasks)
        self.events.start(self.tasks)
        if self.bot_logs is not None:
            self.bot_logs.start(self.tasks)
        self.tasks.spawn("health-poll", self._poll_database_health())
        self.tasks.spawn("retention", Retention(self.engine, self.settings).run_forever())
        self.tasks.spawn("metrics-sample", metrics.sample_forever(
            self.events.relay.depth, self._pool_usage, lambda: self.nats.client is not None and self.nats.client.is_connected
        ))
        if self.settings.metrics_port and self.settings.workers == 1:
            self._stop_metrics = metrics.serve_metrics(self.settings.metrics_port, self.settings.grpc_host)
        log.info("gRPC server listening", extra={"port": self.port})

    async def stop(self) -> None:
        """Graceful: NOT_SERVING first, drain in-flight RPCs, then close dependencies."""
        await self._set_serving(False)
        await self.server.stop(self.settings.shutdown_grace_seconds)
        # Every background loop at once, newest first (health poll, consumers, relay, ...,
        # the NATS connect loop); then each component's last words while NATS and the
        # database are still open: the pending API-key uses are written, subscriptions
        # dropped. NATS is drained after them, the engine closed last.
        await self.tasks.stop()
        await self.identity.stop()
        await self.events.stop()
        await self.nats.close()
        await self.engine.dispose()
        if self._stop_metrics is not None:
            await asyncio.to_thread(self._stop_metrics)
        log.info("gRPC server stopped")

    def _pool_usage(self) -> tuple[int, int]:
        """(checked out, open) connections of the engine's pool, for metrics."""
        pool: Any = self.engine.pool
        in_use = int(pool.checkedout()) if hasattr(pool, "checkedout") else 0
        open_ = in_use + int(pool.checkedin()) if hasattr(pool, "checkedin") else in_use
        return in_use, open_

    async def _set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *API_SERVICES):
            await self.grpc_health.set(name, status)

    async def _poll_database_health(self) -> None:
        """grpc.health.v1 follows the database, so Envoy routes around a replica without one."""
        serving = True
        while True:
            await asyncio.sleep(HEALTH_POLL_SECONDS)
            try:
                await ping(self.engine)
                now_serving = True
            except Exception:  # noqa: BLE001 - whatever the cause, the database is not usable
                now_serving = False
            if now_serving != serving:
                serving = now_serving
                log.warning("database %s", "back" if serving else "unreachable")
                await self._set_serving(serving)


async def build(settings: Settings) -> App:
    """Create every part from settings; the caller starts and stops the App."""
    if settings.nats_url is None:
        raise ValueError("settings.nats_url is required (dev mode starts an embedded NATS first)")
    engine = create_engine(
        settings.effective_database_url, statement_timeout_seconds=settings.request_timeout_seconds
    )
    object_store = object_store_from_settings(settings)
    nats = NatsLink(settings.nats_url)
    events = EventBackbone(
        session_factory(engine),
        nats,
        heartbeat_seconds=settings.watch_heartbeat_seconds,
        read_bound_seconds=settings.request_timeout_seconds,
    )
    identity = Identity(settings, engine, nats, events.outbox)
    custom_bots = CustomBots(settings, session_factory(engine), object_store, events)
    bots = Bots(settings, session_factory(engine), events)
    backtests = Backtests(settings, session_factory(engine), object_store, events)
    bot_logs = BotLogs(settings, session_factory(engine), nats)
    bots.servicer.logs = bot_logs.rpc
    # Account deletion erases each domain's data in its transaction; bots first: they are stopped.
    identity.deletion.erasers = (bots.service.erase_account, backtests.service.erase_account,
                                 custom_bots.service.erase_account)
    platform = Platform(settings, session_factory(engine), object_store)
    auth = AuthInterceptor(
        policies_from_services((*_ALL_API_SERVICES, _PLATFORM_SERVICE)), identity.authenticator,
        service_keys=platform.service_keys, access=access_from_services((*_ALL_API_SERVICES, _PLATFORM_SERVICE)),
    )
    rate_limit = RateLimitInterceptor(
        CallerLimits(
            rate=RatePolicy(settings.rate_limit_per_second, settings.rate_limit_burst),
            write_cost=settings.rate_limit_write_cost,
            max_streams=settings.max_streams_per_caller,
            max_uploads=settings.max_uploads_per_caller,
        ),
        request_costs(_ALL_API_SERVICES, settings.rate_limit_write_cost),
        address_of=functools.partial(client_address, trusted_proxies=settings.trusted_proxies),
    )
    server = grpc.aio.server(
        interceptors=with_tracing(interceptor_chain(
            auth, request_timeout_seconds=settings.request_timeout_seconds, rate_limit=rate_limit
        ), settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
        options=[
            *connection_options(settings),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            # Well above Envoy's request-header limit (envoy_config.MAX_REQUEST_HEADERS_KB, 32 KiB),
            # with room for what Envoy adds (x-envoy-original-path repeats the path): oversized
            # headers get 431 at the edge, never RESOURCE_EXHAUSTED (429) from here (default 16 KiB).
            ("grpc.max_metadata_size", 128 * 1024),  # soft limit
            ("grpc.absolute_max_metadata_size", 128 * 1024),  # hard limit (also 16 KiB by default)
            # Shared only by THE0_WORKERS processes, after the supervisor checked nobody else holds it.
            ("grpc.so_reuseport", 1 if settings.workers > 1 else 0),
        ],
    )
    grpc_health = health.aio.HealthServicer()
    checks = DependencyChecks(database=lambda: ping(engine), nats=nats.ping, object_store=object_store.ping)
    health_service_pb2_grpc.add_HealthServiceServicer_to_server(
        HealthServicer(checks, version=__version__), server
    )
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(identity.auth_servicer, server)
    api_key_service_pb2_grpc.add_ApiKeyServiceServicer_to_server(identity.api_key_servicer, server)
    admin_service_pb2_grpc.add_AdminServiceServicer_to_server(identity.admin_servicer, server)
    custom_bot_service_pb2_grpc.add_CustomBotServiceServicer_to_server(custom_bots.servicer, server)
    bot_service_pb2_grpc.add_BotServiceServicer_to_server(bots.servicer, server)
    backtest_service_pb2_grpc.add_BacktestServiceServicer_to_server(backtests.servicer, server)
    platform_service_pb2_grpc.add_PlatformServiceServicer_to_server(platform.servicer, server)
    health_pb2_grpc.add_HealthServicer_to_server(grpc_health, server)
    reflection.enable_server_reflection(
        (*API_SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    port = server.add_insecure_port(f"{settings.grpc_host}:{settings.grpc_port}")
    if port == 0:
        raise OSError(f"cannot listen on {settings.grpc_host}:{settings.grpc_port}")
    return App(
        settings=settings,
        server=server,
        port=port,
        engine=engine,
        object_store=object_store,
        grpc_health=grpc_health,
        nats=nats,
        identity=identity,
        auth=auth,
        events=events,
        custom_bots=custom_bots,
        bots=bots,
        backtests=backtests,
        platform=platform,
        rate_limit=rate_limit,
        bot_logs=bot_logs,
    )
