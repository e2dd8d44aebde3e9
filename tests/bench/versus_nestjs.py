"""Ours against the NestJS API it replaces, same data, same load generator, same machine.

One throwaway PostgreSQL (a database for each server), one user with 1,000 bots in each:

- ours: ``python -m the0.server`` in a child process, configured through the environment as
  ``the0-server`` is (``THE0_WORKERS`` and ``THE0_READ_CACHE`` are passed through when set),
  embedded NATS, and Envoy with the production configuration in front of it for REST;
- the NestJS stand-in in ``tests/bench/nestjs`` (``npm ci`` there when ``node_modules`` is missing):
  the original API's framework and libraries doing its per-request work on GET /bot/:id, GET /bot
  and POST /auth/login (docs/benchmarks.md, "Against the NestJS server", compares it with the real
  one);
- optionally the original itself: ``THE0_BENCH_NESTJS_ORIGINAL=/path/to/api``, a built checkout of
  the original repository's ``api/`` folder (``dist/src/main.js``), on its own NATS server (it
  deletes and recreates its JetStream stream at start).

Scenarios, each at 32 and 64 connections, variants interleaved round by round (the order rotated
each round), the rounds pooled:

- get-one: ``GET /bot/:id`` vs ``GET /api/bots/{id}`` (REST) and ``GetBot`` (gRPC);
- list: ``GET /bot`` (all 1,000 bots: it has no paging) vs ``ListBots`` with pageSize=50;
- login: ``POST /auth/login`` (bcrypt cost 10) vs ``Login`` (Argon2id at OWASP cost).

HTTP/1.1 load is wrk for every REST variant (a Lua script sets the method, headers and body);
gRPC load is h2load (skipped if it is missing). Per variant: successful responses per second,
p50/p99 latency, and responses per server CPU-second: utime+stime from /proc of the server's
process tree (for REST, Envoy's too), with PostgreSQL's backends added in a second column. Ratios
are ours / NestJS stand-in. Targets: REST GetBot >= 3x NestJS throughput and >= 1.5x per server
CPU-second. Per-caller limits and login throttles are raised out of the way (harness.py).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import grpc.aio

from tests.bench.bots import JWT_SECRET, seed, throwaway_postgres
from tests.fixtures.server import TEST_MAILER_KEYS, TEST_SECRETS_KEYS
from the0.auth.v1 import auth_service_pb2, auth_service_pb2_grpc
from the0.bot.v1 import bot_service_pb2, bot_service_pb2_grpc
from the0.devtools.devstack import descriptor_set_path
from the0.devtools.embedded.envoy import start_envoy
from the0.devtools.embedded.nats_server import EmbeddedNats
from the0.devtools.embedded.processes import ChildProcess, free_port, wait_for_tcp
from the0.server.envoy_config import render_envoy_config

NESTJS_DIR = Path(__file__).resolve().parent / "nestjs"
ORIGINAL_ENV = "THE0_BENCH_NESTJS_ORIGINAL"
BOTS = 1000
PASSWORD = "correct horse battery"
CONCURRENCIES = (32, 64)
SCENARIOS = ("get-one", "list", "login")
SCENARIO_TITLES = {
    "get-one": "get one bot: GET /bot/:id | GET /api/bots/{id} | GetBot",
    "list": "list: GET /bot (all 1,000, no paging) | GET /api/bots?pageSize=50 | ListBots page_size=50",
    "login": "login: POST /auth/login (bcrypt 10) | POST /api/auth/login, Login (Argon2id OWASP)",
}
STAND_IN = "NestJS stand-in"
ORIGINAL = "NestJS original (7e3901b)"
OURS_REST = "ours REST (Envoy)"
OURS_GRPC = "ours gRPC (h2load)"
# Limits that would measure the limiter, not the server: one client logging in to one account
# dozens of times at once from one address (docs/limits.md).
BENCH_LIMITS_ENV = {
    "THE0_RATE_LIMIT_PER_SECOND": "1000000", "THE0_RATE_LIMIT_BURST": "1000000",
    "THE0_LOGIN_ATTEMPTS_PER_ACCOUNT_ADDRESS": "1000000", "THE0_LOGIN_ATTEMPTS_PER_ACCOUNT": "1000000",
    "THE0_LOGIN_ATTEMPTS_PER_ADDRESS": "100000", "THE0_PASSWORD_HASHING_QUEUE": "1000",
}
# Server settings taken from the bench's environment: THE0_WORKERS=N processes sharing the port,
# THE0_READ_CACHE=0 to measure without the GetBot read cache.
PASSED_THROUGH = ("THE0_WORKERS", "THE0_READ_CACHE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- what one load run measured --------------------------------------------------------------------


@dataclass(frozen=True)
class Measured:
    ok: int
    failed: int
    seconds: float
    p50_ms: float
    p99_ms: float
    server_cpu: float
    postgres_cpu: float
    bytes_per_response: float | None

    @property
    def throughput(self) -> float:
        return self.ok / self.seconds

    @property
    def per_cpu(self) -> float:
        return self.ok / self.server_cpu if self.server_cpu > 0 else float("nan")

    @property
    def per_cpu_with_postgres(self) -> float:
        total = self.server_cpu + self.postgres_cpu
        return self.ok / total if total > 0 else float("nan")


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


@dataclass
class Variant:
    name: str
    tool: str  # "wrk" (HTTP/1.1) or "h2load" (gRPC over h2c)
    cpu_roots: tuple[int, ...]
    requests: dict[str, Request]
    # Our server's log (one JSON line per RPC): h2load sees HTTP 200 for a gRPC error.
    rpc_log: Path | None = None


# -- process CPU from /proc --------------------------------------------------------------------------


def _proc_table() -> dict[int, tuple[int, int]]:
    """pid -> (ppid, utime+stime in ticks), every thread of a process included."""
    table: dict[int, tuple[int, int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            text = (entry / "stat").read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        table[int(entry.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    return table


def tree_cpu_seconds(roots: Iterable[int]) -> float:
    """CPU seconds used so far by the processes ``roots`` and all their descendants."""
    table = _proc_table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    seen: set[int] = set()
    frontier = [pid for pid in roots if pid in table]
    while frontier:
        pid = frontier.pop()
        if pid not in seen:
            seen.add(pid)
            frontier.extend(children.get(pid, ()))
    return sum(table[pid][1] for pid in seen) / CLOCK_TICKS


async def settle(roots: Sequence[int], *, idle_share: float = 0.05, limit: float = 20.0) -> None:
    """Wait until ``roots`` use under ``idle_share`` of a core: a server that is still working off
    requests its load generator gave up on (Node hashes every queued login) must not run into the
    next variant's measurement."""
    deadline = time.monotonic() + limit
    before = tree_cpu_seconds(roots)
    while time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        after = tree_cpu_seconds(roots)
        if after - before < 0.25 * idle_share:
            return
        before = after


def postmaster_pid(port: int) -> int | None:
    """The PostgreSQL server listening on ``port`` (its backends are its children)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"postgres") and any(
            a == b"-p" and b == str(port).encode() for a, b in itertools.pairwise(argv)
        ):
            return int(entry.name)
    return None


# -- load generators ---------------------------------------------------------------------------------


def _lua_string(value: str | bytes) -> str:
    text = value.decode() if isinstance(value, bytes) else value
    return json.dumps(text)  # a JSON string literal is a valid Lua string literal for this ASCII


WRK_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK_JSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"bytes\\":%d,\\"status\\":%d,\\"connect\\":%d,"
    .. "\\"read\\":%d,\\"write\\":%d,\\"timeout\\":%d,\\"p50_us\\":%d,\\"p99_us\\":%d}\\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk_script(request: Request, path: Path) -> Path:
    lines = [f"wrk.method = {_lua_string(request.method)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in request.headers.items()]
    if request.body:
        lines.append(f"wrk.body = {_lua_string(request.body)}")
    path.write_text("\n".join(lines) + "\n" + WRK_DONE)
    return path


async def _run(argv: Sequence[str]) -> str:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited with {process.returncode}:\n{out.decode(errors='replace')}")
    return out.decode(errors="replace")


async def load(
    variant: Variant, scenario: str, *, concurrency: int, seconds: float, work_dir: Path, pg_pid: int | None,
    quiet: Sequence[int] = (),
) -> Measured:
    """One load run; first waits until every process in ``quiet`` (all servers) is idle."""
    request = variant.requests[scenario]
    pg_roots = (pg_pid,) if pg_pid else ()
    await settle([*quiet, *variant.cpu_roots, *pg_roots])
    cpu_before, pg_before = tree_cpu_seconds(variant.cpu_roots), tree_cpu_seconds(pg_roots)
    if variant.tool == "wrk":
        script = wrk_script(request, work_dir / f"wrk-{uuid.uuid4().hex[:8]}.lua")
        out = await _run([
            "wrk", "-t2", f"-c{concurrency}", f"-d{seconds:g}s", "--timeout", "10s", "-s", str(script),
            request.url,
        ])
        cpu_after, pg_after = tree_cpu_seconds(variant.cpu_roots), tree_cpu_seconds(pg_roots)
        [line] = [ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")]
        r = json.loads(line.removeprefix("WRK_JSON "))
        failed = r["status"] + r["connect"] + r["read"] + r["write"] + r["timeout"]
        return Measured(
            ok=r["requests"] - r["status"], failed=failed, seconds=r["duration_us"] / 1e6,
            p50_ms=r["p50_us"] / 1000, p99_ms=r["p99_us"] / 1000, server_cpu=cpu_after - cpu_before,
            postgres_cpu=pg_after - pg_before, bytes_per_response=r["bytes"] / max(1, r["requests"]),
        )
    body = work_dir / f"grpc-{uuid.uuid4().hex[:8]}.bin"
    body.write_bytes(request.body)
    log = work_dir / f"h2load-{uuid.uuid4().hex[:8]}.log"
    argv = ["h2load", "-t2", f"-c{concurrency}", "-m1", f"-D{seconds:g}", "-d", str(body),
            f"--log-file={log}"]
    for name, value in request.headers.items():
        argv += ["-H", f"{name}: {value}"]
    log_offset = variant.rpc_log.stat().st_size if variant.rpc_log else 0
    started = time.perf_counter()
    out = await _run([*argv, request.url])
    elapsed = time.perf_counter() - started
    cpu_after, pg_after = tree_cpu_seconds(variant.cpu_roots), tree_cpu_seconds(pg_roots)
    durations, failed = [], 0
    for row in log.read_text().splitlines():
        _, status, micros = row.split("\t")[:3]
        if status == "200":
            durations.append(int(micros) / 1000)
        else:
            failed += 1
    durations.sort()
    if variant.rpc_log:  # a call cancelled when h2load stopped is neither counted nor a failure
        errors = rpc_errors(variant.rpc_log, log_offset, urlsplit(request.url).path)
        durations, failed = durations[: max(0, len(durations) - errors)], failed + errors
    duration = next((float(w.rstrip("s,")) for ln in out.splitlines() if ln.startswith("finished in")
                     for w in ln.split()[2:3]), elapsed)
    return Measured(
        ok=len(durations), failed=failed, seconds=duration, p50_ms=_pick(durations, 0.5),
        p99_ms=_pick(durations, 0.99),
        server_cpu=cpu_after - cpu_before, postgres_cpu=pg_after - pg_before, bytes_per_response=None,
    )


def rpc_errors(log: Path, offset: int, method: str) -> int:
    """Calls of ``method`` logged after ``offset`` that ended in neither OK nor CANCELLED."""
    with log.open("rb") as f:
        f.seek(offset)
        lines = f.read().decode(errors="replace").splitlines()
    errors = 0
    for line in lines:
        if method in line and line.startswith("{"):
            code = json.loads(line).get("code")
            errors += code not in (None, "OK", "CANCELLED")
    return errors


def _pick(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def grpc_frame(message: bytes) -> bytes:
    return b"\0" + len(message).to_bytes(4, "big") + message


# -- the servers -------------------------------------------------------------------------------------


def ensure_node_modules() -> None:
    if shutil.which("node") is None or shutil.which("npm") is None:
        raise SystemExit("versus_nestjs needs Node.js 20+ and npm (Debian: apt-get install nodejs npm)")
    if not (NESTJS_DIR / "node_modules").is_dir():
        print("versus_nestjs: npm ci in tests/bench/nestjs", flush=True)
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NESTJS_DIR, check=True)


def clean_env() -> dict[str, str]:
    """The environment without any setting of ours or theirs, but for the ones passed through."""
    prefixes = ("THE0_", "JWT_", "DATABASE_", "NATS_", "MINIO_", "PORT", "NODE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {name: os.environ[name] for name in PASSED_THROUGH if os.environ.get(name)}


async def start_ours(database_url: str, nats_url: str, work_dir: Path) -> tuple[ChildProcess, int]:
    port = free_port()
    env = clean_env() | BENCH_LIMITS_ENV | {
        "DATABASE_URL": database_url, "NATS_URL": nats_url, "JWT_SECRET": JWT_SECRET,
        "THE0_SECRETS_KEY": ",".join(f"{kid}:{secret}" for kid, secret in TEST_SECRETS_KEYS),
        "THE0_MAILER_KEY": ",".join(f"{kid}:{secret}" for kid, secret in TEST_MAILER_KEYS),
        "THE0_GRPC_HOST": "127.0.0.1", "THE0_GRPC_PORT": str(port), "THE0_DATA_DIR": str(work_dir / "the0"),
    }
    process = ChildProcess([sys.executable, "-m", "the0.server"], log_path=work_dir / "the0-server.log",
                           env=env, name="the0-server")
    process.start()
    await wait_for_tcp("127.0.0.1", port, 120, process=process)
    return process, port


async def start_node(argv: list[str], cwd: Path, env: dict[str, str], log: Path, port: int) -> ChildProcess:
    process = ChildProcess(argv, log_path=log, env=clean_env() | env, cwd=cwd, name=argv[-1])
    process.start()
    await wait_for_tcp("127.0.0.1", port, 120, process=process)
    return process


async def start_original(
    api_dir: Path, pg_port: int, work_dir: Path, nats_servers: list[EmbeddedNats]
) -> tuple[ChildProcess, int]:
    """The original API, migrating its own database, on a NATS server of its own (it deletes and
    recreates its JetStream stream at start)."""
    nats = EmbeddedNats(work_dir / "nats-original")
    await nats.start()
    nats_servers.append(nats)
    port = free_port()
    env = {
        "NODE_ENV": "production", "MIGRATIONS_PATH": "src/database/migrations", "DATABASE_TYPE": "postgresql",
        "DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/nest_original", "JWT_SECRET": JWT_SECRET,
        "PORT": str(port), "NATS_URLS": nats.url,
    }
    log = work_dir / "nestjs-original.log"
    return await start_node(["node", "dist/src/main.js"], api_dir, env, log, port), port


# -- data --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OurAccount:
    email: str
    user_id: str
    bot_id: str


async def our_token(grpc_port: int, email: str) -> str:
    # A channel of its own, closed before the load starts: an open channel's threads make every
    # fork of a load generator print gRPC's fork warnings.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        tokens = await auth_service_pb2_grpc.AuthServiceStub(channel).Login(
            auth_service_pb2.LoginRequest(email=email, password=PASSWORD)
        )
    return tokens.access_token


async def seed_ours(channel: grpc.aio.Channel, database_url: str) -> OurAccount:
    name = f"b{uuid.uuid4().hex[:12]}"
    email = f"{name}@example.com"
    stub = auth_service_pb2_grpc.AuthServiceStub(channel)
    async with asyncio.timeout(60):
        while True:  # the server may still be starting its components
            try:
                tokens = await stub.Register(
                    auth_service_pb2.RegisterRequest(email=email, password=PASSWORD, username=name)
                )
                break
            except grpc.aio.AioRpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    raise
                await asyncio.sleep(0.2)
    await seed(database_url, tokens.user.id, BOTS)
    page = await bot_service_pb2_grpc.BotServiceStub(channel).ListBots(
        bot_service_pb2.ListBotsRequest(page_size=1),
        metadata=(("authorization", f"Bearer {tokens.access_token}"),),
    )
    return OurAccount(email=email, user_id=tokens.user.id, bot_id=page.bots[0].id)


NEST_EMAIL = "bench@example.com"


def seed_nest(pg_port: int, dbname: str) -> str:
    """The same user (bcrypt cost 10, as the original hashes) and 1,000 bots; the newest bot's id."""
    import bcrypt
    import psycopg
    from psycopg.types.json import Jsonb

    from tests.integration.test_bots_support import bot_config

    user_id, custom_bot_id = uuid.uuid4().hex[:24], uuid.uuid4().hex[:24]
    password_hash = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=10)).decode()
    base = datetime.now(UTC)
    bots = [
        (uuid.uuid4().hex[:24], user_id, custom_bot_id, f"bot {i}", Jsonb(bot_config()),
         "the0-scheduled-custom-bot", base - timedelta(milliseconds=i), base)
        for i in range(BOTS)
    ]
    with psycopg.connect(
        host="127.0.0.1", port=pg_port, user="postgres", dbname=dbname, autocommit=True
    ) as conn:
        conn.execute(
            "INSERT INTO users (id, username, email, password_hash, is_active, is_email_verified) "
            "VALUES (%s, 'bench', %s, %s, true, false)", (user_id, NEST_EMAIL, password_hash),
        )
        conn.execute(
            "INSERT INTO custom_bots (id, user_id, name, version, config, status) "
            "VALUES (%s, %s, 'my-bot', '1.0.0', %s, 'approved')",
            (custom_bot_id, user_id, Jsonb({"name": "my-bot", "type": "scheduled", "runtime": "python3.11"})),
        )
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO bots (id, user_id, custom_bot_id, name, config, topic, created_at, updated_at) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", bots,
            )
        conn.execute("ANALYZE")
    return str(bots[0][0])


def http_json(method: str, url: str, body: object | None = None, token: str | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, method=method, data=data)
    request.add_header("content-type", "application/json")
    if token:
        request.add_header("authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def nest_variant(name: str, base_url: str, pid: int, bot_id: str) -> Variant:
    login = http_json("POST", f"{base_url}/auth/login", {"email": NEST_EMAIL, "password": PASSWORD})
    assert isinstance(login, dict), login
    token = login["data"]["token"]
    one = http_json("GET", f"{base_url}/bot/{bot_id}", token=token)
    every = http_json("GET", f"{base_url}/bot", token=token)
    assert isinstance(one, dict) and one["id"] == bot_id, one
    assert isinstance(every, list) and len(every) == BOTS, len(every) if isinstance(every, list) else every
    auth = {"authorization": f"Bearer {token}"}
    return Variant(name, "wrk", (pid,), {
        "get-one": Request("GET", f"{base_url}/bot/{bot_id}", auth),
        "list": Request("GET", f"{base_url}/bot", auth),
        "login": Request("POST", f"{base_url}/auth/login", {"content-type": "application/json"},
                         json.dumps({"email": NEST_EMAIL, "password": PASSWORD}).encode()),
    })


def our_variants(
    account: OurAccount, token: str, grpc_port: int, envoy_port: int, server_pid: int, envoy_pid: int,
    rpc_log: Path,
) -> list[Variant]:
    rest = f"http://127.0.0.1:{envoy_port}"
    auth = {"authorization": f"Bearer {token}"}
    login_body = json.dumps({"email": account.email, "password": PASSWORD}).encode()
    one = http_json("GET", f"{rest}/api/bots/{account.bot_id}", token=token)
    page = http_json("GET", f"{rest}/api/bots?pageSize=50", token=token)
    assert isinstance(one, dict) and one["id"] == account.bot_id, one
    assert isinstance(page, dict) and len(page["bots"]) == 50, page
    variants = [Variant(OURS_REST, "wrk", (server_pid, envoy_pid), {
        "get-one": Request("GET", f"{rest}/api/bots/{account.bot_id}", auth),
        "list": Request("GET", f"{rest}/api/bots?pageSize=50", auth),
        "login": Request("POST", f"{rest}/api/auth/login", {"content-type": "application/json"}, login_body),
    })]
    if shutil.which("h2load"):
        grpc_url = f"http://127.0.0.1:{grpc_port}"
        headers = {"content-type": "application/grpc", "te": "trailers"}
        variants.append(Variant(OURS_GRPC, "h2load", (server_pid,), rpc_log=rpc_log, requests={
            "get-one": Request(
                "POST", f"{grpc_url}/the0.bot.v1.BotService/GetBot", headers | auth,
                grpc_frame(bot_service_pb2.GetBotRequest(id=account.bot_id).SerializeToString()),
            ),
            "list": Request("POST", f"{grpc_url}/the0.bot.v1.BotService/ListBots", headers | auth,
                            grpc_frame(bot_service_pb2.ListBotsRequest(page_size=50).SerializeToString())),
            "login": Request("POST", f"{grpc_url}/the0.auth.v1.AuthService/Login", headers,
                             grpc_frame(auth_service_pb2.LoginRequest(
                                 email=account.email, password=PASSWORD).SerializeToString())),
        }))
    return variants


def with_token(variant: Variant, token: str) -> Variant:
    """Our access tokens live 15 minutes: each round gets a fresh one."""
    requests = {
        scenario: Request(r.method, r.url, r.headers | {"authorization": f"Bearer {token}"}, r.body)
        if "authorization" in r.headers else r
        for scenario, r in variant.requests.items()
    }
    return Variant(variant.name, variant.tool, variant.cpu_roots, requests, variant.rpc_log)


# -- report ------------------------------------------------------------------------------------------


def pool(results: list[Measured]) -> Measured:
    """Rounds pooled: throughput and per-CPU figures over all rounds' requests, time and CPU (steadier
    than one median round on a shared machine); p50 and p99 are the medians of the rounds' values."""
    sizes = [m.bytes_per_response for m in results if m.bytes_per_response is not None]
    return Measured(
        ok=sum(m.ok for m in results), failed=sum(m.failed for m in results),
        seconds=sum(m.seconds for m in results),
        p50_ms=statistics.median(m.p50_ms for m in results),
        p99_ms=statistics.median(m.p99_ms for m in results),
        server_cpu=sum(m.server_cpu for m in results), postgres_cpu=sum(m.postgres_cpu for m in results),
        bytes_per_response=statistics.fmean(sizes) if sizes else None,
    )


def print_table(scenario: str, concurrency: int, rows: dict[str, Measured], baseline: str) -> None:
    base = rows[baseline]
    print(f"\n== {SCENARIO_TITLES[scenario]}; c={concurrency}")
    print(f"{'variant':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'req/CPU-s':>11}{'+PG':>9}"
          f"{'B/resp':>8}{'fail':>6}{'x req/s':>9}{'x CPU-s':>9}")
    for name, m in rows.items():
        size = f"{m.bytes_per_response:>8.0f}" if m.bytes_per_response is not None else f"{'-':>8}"
        print(f"{name:<28}{m.throughput:>9.0f}{m.p50_ms:>9.1f}{m.p99_ms:>9.1f}{m.per_cpu:>11.0f}"
              f"{m.per_cpu_with_postgres:>9.0f}{size}{m.failed:>6}"
              f"{m.throughput / base.throughput:>9.2f}{m.per_cpu / base.per_cpu:>9.2f}")


def check(label: str, value: float, target: float) -> bool:
    ok = value >= target
    print(f"{'✓' if ok else '✗'} {label}: {value:.2f}x (target >= {target:g}x)")
    return ok


async def measure_all(
    variants: list[Variant], fresh_token: Callable[[], Awaitable[str]], *, seconds: float, rounds: int,
    work_dir: Path, pg_pid: int | None,
) -> dict[tuple[str, int], dict[str, Measured]]:
    """Every scenario and concurrency for every variant, interleaved, rotated each round; pooled."""
    results: dict[tuple[str, int], dict[str, list[Measured]]] = {}
    quiet = sorted({pid for variant in variants for pid in variant.cpu_roots})
    for variant in variants:  # warm-up: JIT, connection pools, caches
        for scenario in SCENARIOS:
            await load(variant, scenario, concurrency=8, seconds=1, work_dir=work_dir, pg_pid=pg_pid,
                       quiet=quiet)
    for round_index in range(rounds):
        token = await fresh_token()
        current = [with_token(v, token) if v.name in (OURS_REST, OURS_GRPC) else v for v in variants]
        shift = round_index % len(current)
        for scenario in SCENARIOS:
            for concurrency in CONCURRENCIES:
                for variant in current[shift:] + current[:shift]:
                    m = await load(variant, scenario, concurrency=concurrency, seconds=seconds,
                                   work_dir=work_dir, pg_pid=pg_pid, quiet=quiet)
                    results.setdefault((scenario, concurrency), {}).setdefault(variant.name, []).append(m)
        print(f"versus_nestjs: round {round_index + 1}/{rounds} done", flush=True)
    names = [v.name for v in variants]
    return {key: {name: pool(by[name]) for name in names} for key, by in results.items()}


async def run(*, seconds: float = 5.0, rounds: int = 3) -> float:
    if shutil.which("wrk") is None:
        raise SystemExit("versus_nestjs needs wrk (Debian: apt-get install wrk; nghttp2-client for gRPC)")
    ensure_node_modules()
    original_dir = Path(os.environ[ORIGINAL_ENV]) if os.environ.get(ORIGINAL_ENV) else None
    if original_dir is not None and not (original_dir / "dist" / "src" / "main.js").is_file():
        raise SystemExit(f"{ORIGINAL_ENV}={original_dir}: no dist/src/main.js (corepack yarn build there)")
    started = datetime.now(UTC)
    with throwaway_postgres() as database_url, tempfile.TemporaryDirectory(prefix="the0-vs-nest-") as tmp:
        work = Path(tmp)
        pg_port = urlsplit(database_url).port
        assert pg_port is not None
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=pg_port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute('CREATE DATABASE "nest"')
            conn.execute('CREATE DATABASE "nest_original"')
        processes: list[ChildProcess] = []
        nats_servers: list[EmbeddedNats] = []
        try:
            nats = EmbeddedNats(work / "nats")
            await nats.start()
            nats_servers.append(nats)
            ours, grpc_port = await start_ours(database_url, nats.url, work)
            processes.append(ours)
            envoy_port, admin_port = free_port(), free_port()
            envoy = await start_envoy(
                render_envoy_config(
                    http_port=envoy_port, admin_port=admin_port, grpc_host="127.0.0.1", grpc_port=grpc_port,
                    frontend_url="http://localhost:3000", descriptor_path=str(descriptor_set_path()),
                    listen_address="127.0.0.1",
                ),
                work / "envoy", admin_port, concurrency=2,
            )
            processes.append(envoy)
            nest_port = free_port()
            nest = await start_node(
                ["node", "main.js"], NESTJS_DIR,
                {"DATABASE_URL": f"postgres://postgres@127.0.0.1:{pg_port}/nest", "JWT_SECRET": JWT_SECRET,
                 "PORT": str(nest_port), "HOST": "127.0.0.1"},
                work / "nestjs.log", nest_port,
            )
            processes.append(nest)
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                account = await seed_ours(channel, database_url)
            nest_bot = await asyncio.to_thread(seed_nest, pg_port, "nest")
            assert nest.pid is not None and ours.pid is not None and envoy.pid is not None
            variants = [nest_variant(STAND_IN, f"http://127.0.0.1:{nest_port}", nest.pid, nest_bot)]
            if original_dir is not None:
                original, original_port = await start_original(original_dir, pg_port, work, nats_servers)
                processes.append(original)
                assert original.pid is not None
                original_bot = await asyncio.to_thread(seed_nest, pg_port, "nest_original")
                variants.append(
                    nest_variant(ORIGINAL, f"http://127.0.0.1:{original_port}", original.pid, original_bot)
                )
            token = await our_token(grpc_port, account.email)
            variants += our_variants(
                account, token, grpc_port, envoy_port, ours.pid, envoy.pid, ours.log_path
            )
            pooled = await measure_all(
                variants, lambda: our_token(grpc_port, account.email), seconds=seconds, rounds=rounds,
                work_dir=work, pg_pid=postmaster_pid(pg_port),
            )
        finally:
            for process in reversed(processes):
                await process.astop()
            for server in nats_servers:
                await server.stop()

    settings = ", ".join(f"{name}={os.environ.get(name) or 'unset (server default)'}" for name in PASSED_THROUGH)
    print(f"\n# versus_nestjs: {BOTS} bots of one user; wrk -t2 (HTTP/1.1) and h2load -t2 -m1 (gRPC); "
          f"{rounds} interleaved rounds of {seconds:g} s pooled (p50/p99: median of rounds); "
          f"started {started:%Y-%m-%d %H:%M} UTC; {settings}")
    for (scenario, concurrency), rows in pooled.items():
        print_table(scenario, concurrency, rows, STAND_IN)
    print()
    ratios = []
    for concurrency in CONCURRENCIES:
        rows = pooled[("get-one", concurrency)]
        base, rest = rows[STAND_IN], rows[OURS_REST]
        ratios.append(rest.throughput / base.throughput)
        check(f"REST GetBot throughput vs NestJS, c={concurrency}", ratios[-1], 3.0)
        per_cpu = rest.per_cpu / base.per_cpu
        check(f"REST GetBot per server CPU-second vs NestJS, c={concurrency}", per_cpu, 1.5)
        if ORIGINAL in rows:
            real = rows[ORIGINAL]
            print(f"  against the original, get-one c={concurrency}: stand-in / original throughput "
                  f"{base.throughput / real.throughput:.2f}, per CPU-s {base.per_cpu / real.per_cpu:.2f} "
                  f"(faithful: within ~20%); ours REST / original {rest.throughput / real.throughput:.2f}, "
                  f"per CPU-s {rest.per_cpu / real.per_cpu:.2f}")
    return min(ratios)

