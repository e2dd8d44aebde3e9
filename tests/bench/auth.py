"""Identity bench, against one real server process (embedded NATS, OWASP Argon2id), run once on
a SQLite file and once on a throwaway PostgreSQL cluster (if its binaries are installed).

1. Throughput of authenticated unary RPCs vs the unauthenticated no-op RPC of the
   platform bench (an echo, public, through the full production chain incl. auth),
   all on the same server in the same run (target: authenticated >= 0.70):
   - the same echo declared "JWT or API key": the pure cost of authentication;
   - GetCurrentUser with a JWT and with an API key: auth plus a real SQLite read.
2. Login storm: p99 of GetCurrentUser (JWT) while 10 logins/s (Argon2id at OWASP
   cost, in worker threads) run concurrently, vs its p99 without them (target <= 2x).
3. Register flood: the same p99 while 50 registrations/s arrive, each from its own address
   (the per-address throttle does not stop them; the bounded hashing queue refuses, before any
   database work, what the hashing thread cannot take), vs quiet (target <= 2x).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing as mp
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import grpc
import grpc.aio

from tests.bench.harness import BENCH_CALLER_LIMITS, LoadResult, median_result, run_load, start_in_child
from tests.fixtures.server import TEST_MAILER_KEYS, TEST_SECRETS_KEYS
from the0.devtools.embedded.processes import free_port

PUBLIC_ECHO = "/bench.Echo/Public"
PRIVATE_ECHO = "/bench.Echo/Private"
PASSWORD = "bench password 123"


async def _echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def serve_identity(port_queue: mp.Queue, data_dir: str, database_url: str | None) -> None:
    async def main() -> None:
        from the0.devtools.embedded.nats_server import EmbeddedNats
        from the0.server.app import build
        from the0.server.db.migrate import upgrade_to_head
        from the0.server.interceptors.auth import ANY_CREDENTIAL, PUBLIC
        from the0.server.settings import Settings
        from the0.server.structured_logging import configure_logging

        configure_logging("WARNING")
        base = Path(data_dir)
        nats = EmbeddedNats(base / "nats")
        await nats.start()
        settings = Settings(database_url=database_url or f"sqlite:///{base / 'the0.db'}", nats_url=nats.url,
                            jwt_secret=secrets.token_urlsafe(48), secrets_keys=TEST_SECRETS_KEYS, mailer_keys=TEST_MAILER_KEYS,
                            grpc_host="127.0.0.1", grpc_port=0,
                            data_dir=base)  # production Argon2id parameters (OWASP)
        settings = dataclasses.replace(settings, **BENCH_CALLER_LIMITS)  # one client at full speed
        await asyncio.to_thread(upgrade_to_head, settings.effective_database_url)
        app = await build(settings)
        handler = grpc.method_handlers_generic_handler("bench.Echo", {
            "Public": grpc.unary_unary_rpc_method_handler(_echo),
            "Private": grpc.unary_unary_rpc_method_handler(_echo),
        })
        app.server.add_generic_rpc_handlers((handler,))
        app.auth.declare(PUBLIC_ECHO, PUBLIC)
        app.auth.declare(PRIVATE_ECHO, ANY_CREDENTIAL)
        await app.start()
        await app.nats.connected.wait()
        # Production logging from here on, into /dev/null: its cost counts, its output does not.
        devnull = open("/dev/null", "w")  # noqa: SIM115, ASYNC230  /dev/null never blocks
        configure_logging("INFO")
        logging.getLogger().handlers[0].stream = devnull  # type: ignore[attr-defined]
        sys.stderr = devnull  # the access log writes here
        port_queue.put(app.port)
        await app.server.wait_for_termination()

    asyncio.run(main())


async def _prepare(channel: grpc.aio.Channel) -> tuple[str, str]:
    from the0.api_key.v1 import api_key_pb2, api_key_service_pb2, api_key_service_pb2_grpc
    from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

    tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Register(auth_service_pb2.RegisterRequest(
        email="bench@example.com", password=PASSWORD, username="bench"))
    created = await api_key_service_pb2_grpc.ApiKeyServiceStub(channel).CreateApiKey(
        api_key_service_pb2.CreateApiKeyRequest(api_key=api_key_pb2.ApiKey(name="bench")),
        metadata=(("authorization", f"Bearer {tokens.access_token}"),))
    return tokens.access_token, created.secret


class _Postgres:
    """A throwaway PostgreSQL cluster, as tests/fixtures/services.py starts it."""

    def __init__(self) -> None:
        from tests.fixtures.services import PG_BIN, _pg_run

        self._bin, self._run = PG_BIN, _pg_run
        self._as_root = os.geteuid() == 0
        self._base = Path(tempfile.mkdtemp(prefix="the0-bench-pg-"))
        if self._as_root:
            shutil.chown(self._base, "postgres", "postgres")
        self.port = free_port()
        options = f"-p {self.port} -k {self._base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run([str(PG_BIN / "initdb"), "-D", str(self._base / "data"), "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", "--no-locale"], self._as_root)
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self._base / "data"), "-l", str(self._base / "pg.log"),
                   "-w", "-o", options, "start"], self._as_root)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def stop(self) -> None:
        self._run([str(self._bin / "pg_ctl"), "-D", str(self._base / "data"), "-m", "fast", "-w", "stop"],
                  self._as_root)
        shutil.rmtree(self._base, ignore_errors=True)


async def run(*, seconds: float = 2.0, rounds: int = 3, concurrency: int = 32) -> float:
    """Both databases; returns the worst ratio of an authenticated GetCurrentUser to the baseline."""
    ratios = [await run_on("sqlite", seconds=seconds, rounds=rounds, concurrency=concurrency)]
    try:
        postgres = _Postgres()
    except (OSError, RuntimeError) as error:
        print(f"\n(PostgreSQL not measured: {error})")
    else:
        try:
            ratios.append(await run_on("postgres", postgres.url, seconds=seconds, rounds=rounds,
                                       concurrency=concurrency))
        finally:
            postgres.stop()
    return min(ratios)


async def run_on(name: str, database_url: str | None = None, *, seconds: float, rounds: int,
                 concurrency: int) -> float:
    from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc

    with tempfile.TemporaryDirectory(prefix="the0-bench-auth-") as data_dir:
        process, port = start_in_child(serve_identity, data_dir, database_url)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                jwt_token, api_key = await _prepare(channel)
                jwt_md = (("authorization", f"Bearer {jwt_token}"),)
                key_md = (("authorization", f"ApiKey {api_key}"),)
                public = channel.unary_unary(PUBLIC_ECHO)
                private = channel.unary_unary(PRIVATE_ECHO)
                stub = auth_service_pb2_grpc.AuthServiceStub(channel)
                me = auth_service_pb2.GetCurrentUserRequest()
                variants = {
                    "no-op RPC, public (baseline)": lambda: public(b"ping"),
                    "no-op RPC, JWT": lambda: private(b"ping", metadata=jwt_md),
                    "no-op RPC, API key": lambda: private(b"ping", metadata=key_md),
                    "GetCurrentUser, JWT": lambda: stub.GetCurrentUser(me, metadata=jwt_md),
                    "GetCurrentUser, API key": lambda: stub.GetCurrentUser(me, metadata=key_md),
                }
                results: dict[str, list[LoadResult]] = {name: [] for name in variants}
                for call in variants.values():
                    await run_load(call, concurrency=concurrency, seconds=0.3)  # warm-up
                for _ in range(rounds):  # interleaved, median kept (noisy machines)
                    for variant, call in variants.items():
                        results[variant].append(await run_load(call, concurrency=concurrency, seconds=seconds))
                rows = {variant: median_result(r) for variant, r in results.items()}
                ratio = _report_throughput(name, rows)
                storm = await _login_storm(name, channel, stub, jwt_md, seconds=seconds * 2)
                flood = await _register_flood(name, stub, jwt_md, seconds=seconds * 2)
        finally:
            process.terminate()
            process.join(10)
    print(f"{name}: GetCurrentUser/no-op ratio {ratio:.2f} (target >= 0.70); login storm p99 ratio {storm:.2f}, "
          f"register flood p99 ratio {flood:.2f} (targets <= 2.0)")
    return ratio


def _report_throughput(database: str, rows: dict[str, LoadResult]) -> float:
    base = rows["no-op RPC, public (baseline)"].throughput
    print(f"\n== authentication cost ({database}; one server, embedded NATS, full interceptor chain)")
    print(f"{'variant':<34}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
    for name, r in rows.items():
        print(f"{name:<34}{r.throughput:>10.0f}{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}"
              f"{r.throughput / base:>8.2f}")
    print("target: authenticated >= 0.70 of the baseline (the no-op rows isolate auth; GetCurrentUser adds a read)")
    return min(r.throughput / base for n, r in rows.items() if n.startswith("GetCurrentUser"))


async def _login_storm(database: str, channel, stub, jwt_md, *, seconds: float) -> float:
    from the0.auth.v1 import auth_service_pb2

    me = auth_service_pb2.GetCurrentUserRequest()
    concurrency = 4  # a steady, unsaturated load: latency, not throughput, is measured

    async def measure() -> LoadResult:
        return await run_load(lambda: stub.GetCurrentUser(me, metadata=jwt_md), concurrency=concurrency,
                              seconds=seconds)

    quiet = await measure()
    stop = asyncio.Event()
    login_times: list[float] = []

    async def logins() -> None:
        request = auth_service_pb2.LoginRequest(email="bench@example.com", password=PASSWORD)
        pending: set[asyncio.Task[object]] = set()

        async def one(i: int) -> None:
            # Each from its own address (the client is a trusted proxy on loopback): attempts in
            # flight count against the (account, address) limit, and a storm is many people.
            started = time.perf_counter()
            await stub.Login(request, metadata=(("x-forwarded-for", f"10.1.{i >> 8 & 255}.{i & 255}"),))
            login_times.append((time.perf_counter() - started) * 1000)

        i = 0
        while not stop.is_set():
            i += 1
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            await asyncio.sleep(0.1)  # 10 logins per second
        await asyncio.gather(*pending)

    storm_task = asyncio.create_task(logins())
    await asyncio.sleep(0.5)
    stormy = await measure()
    stop.set()
    await storm_task
    ratio = stormy.percentile(0.99) / quiet.percentile(0.99)
    print(f"\n== login storm ({database}): GetCurrentUser (JWT) latency with and without 10 logins/s "
          "(Argon2id, OWASP cost)")
    print(f"{'variant':<34}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, r in (("without logins", quiet), ("with 10 logins/s", stormy)):
        print(f"{name:<34}{r.throughput:>10.0f}{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}")
    print(f"logins: {len(login_times)} done, median {statistics.median(login_times):.1f} ms each")
    print(f"target: p99 with logins <= 2x without; got {ratio:.2f}x")
    return ratio


async def _register_flood(database: str, stub, jwt_md, *, seconds: float) -> float:
    from the0.auth.v1 import auth_service_pb2

    me = auth_service_pb2.GetCurrentUserRequest()

    async def measure() -> LoadResult:
        return await run_load(lambda: stub.GetCurrentUser(me, metadata=jwt_md), concurrency=4, seconds=seconds)

    quiet = await measure()
    stop = asyncio.Event()
    outcomes: dict[str, int] = {}
    times: list[float] = []

    async def one(i: int) -> None:
        # The bench client is on loopback, a trusted proxy: each registration names its own address.
        request = auth_service_pb2.RegisterRequest(email=f"flood{i}@example.com", password=PASSWORD,
                                                   username=f"flood{i}")
        started = time.perf_counter()
        try:
            await stub.Register(request, metadata=(("x-forwarded-for", f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"),))
            outcome = "OK"
        except grpc.aio.AioRpcError as error:
            outcome = error.code().name
        times.append((time.perf_counter() - started) * 1000)
        outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def flood() -> None:
        pending: set[asyncio.Task[None]] = set()
        i = 0
        while not stop.is_set():
            task = asyncio.create_task(one(i))
            pending.add(task)
            task.add_done_callback(pending.discard)
            i += 1
            await asyncio.sleep(0.02)  # 50 registrations per second
        await asyncio.gather(*pending)

    flood_task = asyncio.create_task(flood())
    await asyncio.sleep(0.5)
    stormy = await measure()
    stop.set()
    await flood_task
    ratio = stormy.percentile(0.99) / quiet.percentile(0.99)
    print(f"\n== register flood ({database}): GetCurrentUser (JWT) latency with and without 50 registrations/s "
          "from distinct addresses (Argon2id, OWASP cost)")
    print(f"{'variant':<34}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}")
    for name, r in (("without registrations", quiet), ("with 50 registrations/s", stormy)):
        print(f"{name:<34}{r.throughput:>10.0f}{r.percentile(0.5):>9.2f}{r.percentile(0.99):>9.2f}")
    print(f"registrations: {sorted(outcomes.items())}, median {statistics.median(times):.1f} ms each")
    print(f"target: p99 with registrations <= 2x without; got {ratio:.2f}x")
    return ratio
