"""Prometheus metrics, served on THE0_METRICS_PORT (never through Envoy's public listener).

Every series is named here, once. The RPC series are recorded by the outermost interceptor
(interceptors/request_logging.py), the rest where the thing happens; the gauges of things
only the database knows (outbox depth and lag) and the connection pool are sampled every few
seconds by ``sample_forever``.

Several processes (THE0_WORKERS > 1): prometheus-client's multiprocess mode. The supervisor
makes an empty directory, names it in PROMETHEUS_MULTIPROC_DIR before it spawns the workers
(prometheus-client picks its file-backed values at import, from that variable), serves
``/metrics`` itself and sums every worker's files; a dead worker's live gauges are dropped.
Chosen over one port per worker so that a replica is one scrape target whatever its worker
count, as Kubernetes and the dashboard see it. One process: ordinary in-memory values.

Cost on the hot path: a child series is looked up once per (method, code) and cached, so a
call adds one counter increment and one histogram observation (``make bench
BENCH=interceptors``, docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger("the0.metrics")
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SAMPLE_SECONDS = 5.0

# -- RPCs ---------------------------------------------------------------------------------------
RPC_REQUESTS = Counter("the0_rpc_requests_total", "RPCs finished, by full method and status code",
                       ["method", "code"])
RPC_DURATION = Histogram(
    "the0_rpc_duration_seconds", "RPC duration (streams: the whole stream), by full method", ["method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0),
)
STREAMS_IN_FLIGHT = Gauge("the0_streams_in_flight", "Streaming RPCs open now, by kind (watch, logs, upload, "
                          "download)", ["kind"], multiprocess_mode="livesum")
# -- events -------------------------------------------------------------------------------------
EVENTS_PUBLISHED = Counter("the0_events_published_total", "Outbox events acknowledged by JetStream, by type",
                           ["type"])
EVENTS_PUBLISH_FAILED = Counter("the0_events_publish_failed_total",
                                "Outbox events JetStream did not acknowledge (retried), by type", ["type"])
EVENTS_CONSUMED = Counter("the0_events_consumed_total", "Platform events consumed, by type and outcome "
                          "(applied, duplicate, dropped, retry: redelivered later)", ["type", "outcome"])
OUTBOX_PENDING = Gauge("the0_outbox_pending", "Outbox events not yet published (sampled)",
                       multiprocess_mode="max")
OUTBOX_LAG = Gauge("the0_outbox_lag_seconds", "Age of the oldest unpublished outbox event, 0 if none (sampled)",
                   multiprocess_mode="max")
NATS_CONNECTED = Gauge("the0_nats_connected", "1 while this process is connected to NATS",
                       multiprocess_mode="livemin")
WATCHERS = Gauge("the0_watchers", "Watch streams registered with this process's watch hub",
                 multiprocess_mode="livesum")
# -- identity -----------------------------------------------------------------------------------
LOGIN_FAILURES = Counter("the0_login_failures_total", "Logins refused for a wrong email or password")
LOGIN_THROTTLED = Counter("the0_login_throttled_total", "Logins and registrations refused by a throttle")
TOKENS_ISSUED = Counter("the0_jwt_issued_total", "Access tokens issued, by how (login, register, refresh)",
                        ["how"])
# -- business -----------------------------------------------------------------------------------
BOTS_CREATED = Counter("the0_bots_created_total", "Bots created")
BOTS_DEPLOYED = Counter("the0_bots_deployed_total", "Bot deployments requested")
BACKTESTS_CREATED = Counter("the0_backtests_created_total", "Backtests created")
CUSTOM_BOTS_UPLOADED = Counter("the0_custom_bot_versions_uploaded_total", "Custom-bot versions stored")
# -- database -----------------------------------------------------------------------------------
DB_POOL_IN_USE = Gauge("the0_db_pool_connections_in_use", "Database connections checked out of the pool",
                       multiprocess_mode="livesum")
DB_POOL_SIZE = Gauge("the0_db_pool_connections_open", "Database connections the pool holds open",
                     multiprocess_mode="livesum")
RETENTION_DELETED = Counter("the0_retention_deleted_total", "Rows deleted past their window, by rule", ["rule"])


_AUTH = "/the0.auth.v1.AuthService/"
# Business and identity counters are outcomes of RPCs: counted where the RPC's code is known,
# so no domain module carries metrics code. (A request_id retry counts again: it is a request.)
_OUTCOME_COUNTERS: dict[tuple[str, str], Any] = {
    (_AUTH + "Login", "OK"): TOKENS_ISSUED.labels("login"),
    (_AUTH + "Register", "OK"): TOKENS_ISSUED.labels("register"),
    (_AUTH + "RefreshToken", "OK"): TOKENS_ISSUED.labels("refresh"),
    (_AUTH + "Login", "UNAUTHENTICATED"): LOGIN_FAILURES,
    (_AUTH + "Login", "RESOURCE_EXHAUSTED"): LOGIN_THROTTLED,
    (_AUTH + "Register", "RESOURCE_EXHAUSTED"): LOGIN_THROTTLED,
    ("/the0.bot.v1.BotService/CreateBot", "OK"): BOTS_CREATED,
    ("/the0.bot.v1.BotService/DeployBot", "OK"): BOTS_DEPLOYED,
    ("/the0.backtest.v1.BacktestService/CreateBacktest", "OK"): BACKTESTS_CREATED,
    ("/the0.custom_bot.v1.CustomBotService/UploadCustomBot", "OK"): CUSTOM_BOTS_UPLOADED,
}


class _Nothing:
    def inc(self) -> None:
        pass


_NOTHING = _Nothing()


class RpcRecorder:
    """The per-call work of the RPC series: cached children, no label parsing per call."""

    def __init__(self) -> None:
        self._counters: dict[tuple[str, str], tuple[Any, Any]] = {}
        self._histograms: dict[str, Any] = {}
        self._streams: dict[str, Any | None] = {}

    def finished(self, method: str, code: str, seconds: float) -> None:
        counters = self._counters.get((method, code))
        if counters is None:
            counters = self._counters[(method, code)] = (
                RPC_REQUESTS.labels(method, code), _OUTCOME_COUNTERS.get((method, code), _NOTHING)
            )
        counters[0].inc()
        counters[1].inc()
        histogram = self._histograms.get(method)
        if histogram is None:
            histogram = self._histograms[method] = RPC_DURATION.labels(method)
        histogram.observe(seconds)

    def stream_gauge(self, method: str) -> Any | None:
        """The in-flight gauge of a streaming method, None for a unary one."""
        if method not in self._streams:
            kind = stream_kind(method)
            self._streams[method] = STREAMS_IN_FLIGHT.labels(kind) if kind is not None else None
        return self._streams[method]


def stream_kind(method: str) -> str | None:
    """What a streaming method is, from its name (``/the0.bot.v1.BotService/WatchBot`` -> watch)."""
    name = method.rsplit("/", 1)[-1]
    if method.startswith("/grpc."):
        return None  # health Watch, reflection: not ours to count
    if name.startswith("Watch"):
        return "watch"
    if name.startswith("Stream"):
        return "logs"
    if name.startswith("Upload"):
        return "upload"
    if name.startswith("Download") or name in {"GetBacktestResults", "GetBacktestLogs"}:
        return "download"
    return None


async def sample_forever(
    outbox_depth: Callable[[], Any], pool_usage: Callable[[], tuple[int, int]], nats_connected: Callable[[], bool],
    every: float = SAMPLE_SECONDS,
) -> None:
    """Gauges only a query or an object can tell, every ``every`` seconds."""
    while True:
        in_use, open_ = pool_usage()
        DB_POOL_IN_USE.set(in_use)
        DB_POOL_SIZE.set(open_)
        NATS_CONNECTED.set(1 if nats_connected() else 0)
        try:
            pending, lag = await outbox_depth()
        except Exception as error:  # noqa: BLE001 - the database may be down: the gauges keep their last value
            log.debug("outbox sample failed", extra={"error": type(error).__name__})
        else:
            OUTBOX_PENDING.set(pending)
            OUTBOX_LAG.set(lag)
        await asyncio.sleep(every)


def serve_metrics(port: int, host: str, registry: CollectorRegistry | None = None) -> Callable[[], None]:
    """``/metrics`` on ``host:port`` from a daemon thread (prometheus-client's own server); returns its stop."""
    if registry is None:
        server, thread = start_http_server(port, addr=host)
    else:
        server, thread = start_http_server(port, addr=host, registry=registry)
    log.info("metrics listening", extra={"port": port})

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(5)

    return stop


def prepare_multiprocess_dir() -> Path:
    """Supervisor, before spawning workers: an empty directory the workers write their values to."""
    directory = Path(tempfile.mkdtemp(prefix="the0-metrics-"))
    os.environ[MULTIPROC_ENV] = str(directory)
    return directory


def serve_multiprocess_metrics(port: int, host: str) -> Callable[[], None]:
    from prometheus_client import multiprocess

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return serve_metrics(port, host, registry)


def worker_died(pid: int) -> None:
    """Drop a dead worker's live gauges (its counters stay: they were counted)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


def remove_multiprocess_dir(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)
