"""FAKE RUNTIME — a development aid, NOT the0's platform runtime.

It stands in for the platform runtime so that ``make run`` can be tried end to
end on one machine: it runs nothing a user uploaded. It durably consumes

- ``backtest.created``: publishes ``backtest.started``, writes a made-up but
  plausible ``analysis.json`` and ``logs.txt`` where the event says (bucket
  ``backtests``, ``<id>/``) in the object store the server's settings point at
  (the local folder in the data dir by default), then publishes
  ``backtest.completed`` with summary metrics (or ``backtest.failed`` with
  ``--fail``); a ``backtest.cancel-requested`` in the meantime skips it;
- ``bot.deploy-requested`` (unless ``--no-bots``): "runs" the bot. Each
  execution publishes ``bot.execution.started``, a few log lines on core NATS
  ``the0.bot.logs.<botId>`` (JSON ``{"time", "level", "text"}``, what the
  server's log ingest reads) and ``bot.execution.completed`` with a made-up
  result. A scheduled bot runs every ``--bot-interval`` seconds (not its cron:
  a dev aid should show something within seconds); a realtime or event bot runs
  one execution, logging a line every ``--bot-interval`` seconds, until it is
  stopped. ``--fail`` fails bots too (``bot.execution.failed``);
- ``bot.stop-requested``: ends the bot's runs; its current execution (or a
  new, empty one if this process never ran it) is reported completed, so the
  bot goes STOPPING -> STOPPED.

    make fake-runtime            # or: python -m the0.devtools.fake_runtime [--nats-url URL]

The NATS URL is ``--nats-url``, else NATS_URL, else the one ``make run``
recorded in the data dir (``<THE0_DATA_DIR>/nats.url``; ``make run`` also prints it).
Run it with the same environment as the server so both use the same object store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import logging
import math
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import grpc
import grpc.aio
import orjson
from google.protobuf import json_format
from nats.aio.client import Client as Nats
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from the0.devtools.devstack import RUNTIME_KEY_FILE
from the0.devtools.publish_event import NATS_URL_FILE, dev_nats_url
from the0.platform.v1 import platform_service_pb2, platform_service_pb2_grpc
from the0.server.background import cancel_and_wait
from the0.server.events.envelope import Envelope, subject_for
from the0.server.events.nats_connection import EVENTS_STREAM, connect_nats, ensure_stream
from the0.server.serving import load_settings
from the0.server.storage.factory import object_store_from_settings
from the0.server.storage.object_store import ObjectStore

BANNER = "the0 FAKE RUNTIME (development aid; runs no user code, invents results)"
DURABLE_PREFIX = "the0-fake-runtime"
# The subject the server's bot-log ingest (bot_logs/ingest.py) reads, one per bot.
BOT_LOGS_SUBJECT = "the0.bot.logs.{bot_id}"


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def fake_analysis(backtest_id: str, config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str]:
    """(analysis.json, summary, logs.txt) made up from the backtest id, the same every time for one id."""
    rng = random.Random(hashlib.sha256(backtest_id.encode()).digest())
    cash = float(config.get("initial_cash", 10_000) or 10_000)
    equity, peak, drawdown = [cash], cash, 0.0
    trades, wins = rng.randint(8, 40), 0
    for day in range(60):
        change = rng.gauss(0.0008, 0.012) + 0.002 * math.sin(day / 6)
        equity.append(equity[-1] * (1 + change))
        peak = max(peak, equity[-1])
        drawdown = min(drawdown, equity[-1] / peak - 1)
    for _ in range(trades):
        wins += rng.random() < 0.55
    returns = [equity[i + 1] / equity[i] - 1 for i in range(len(equity) - 1)]
    mean = sum(returns) / len(returns)
    spread = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns)) or 1e-9
    summary = {
        "totalReturn": round(equity[-1] / cash - 1, 4),
        "sharpeRatio": round(mean / spread * math.sqrt(252), 2),
        "maxDrawdown": round(drawdown, 4),
        "winRate": round(wins / trades, 4),
        "totalTrades": trades,
    }
    analysis = {
        "generatedBy": "the0 fake runtime (development aid)",
        "metrics": summary,
        "plots": [{"name": "equity", "type": "line", "x": list(range(len(equity))),
                   "y": [round(v, 2) for v in equity]}],
        "tables": [{"name": "config", "rows": [[k, str(v)] for k, v in sorted(config.items())]}],
    }
    logs = "".join(
        f"{_now()} [fake-runtime] {line}\n"
        for line in (
            f"backtest {backtest_id}: FAKE run, no user code executed",
            f"config: {orjson.dumps(config).decode()}",
            f"simulated {len(equity) - 1} days, {trades} trades",
            f"total return {summary['totalReturn']:+.2%}, max drawdown {summary['maxDrawdown']:.2%}",
        )
    )
    return analysis, summary, logs


class Deployments:
    """GetBotDeployment over gRPC with a runtime service-account key."""

    def __init__(self, target: str, service_key: str) -> None:
        self._target = target
        self._metadata = (("x-service-key", service_key),)
        self._channel: grpc.aio.Channel | None = None  # made on first use, inside the running loop

    async def config(self, bot_id: str) -> dict[str, Any]:
        if self._channel is None:
            self._channel = grpc.aio.insecure_channel(self._target)
        stub = platform_service_pb2_grpc.PlatformServiceStub(self._channel)
        deployment = await stub.GetBotDeployment(
            platform_service_pb2.GetBotDeploymentRequest(id=bot_id), metadata=self._metadata, timeout=10
        )
        return json_format.MessageToDict(deployment.config)

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


class FakeRuntime:
    def __init__(
        self,
        nc: Nats,
        store: ObjectStore,
        *,
        delay: float,
        fail: bool,
        bots: bool,
        durable_prefix: str = DURABLE_PREFIX,
        only_new: bool = False,
        bot_interval: float = 10.0,
        deployments: Deployments | None = None,
    ) -> None:
        self._deployments = deployments
        self._durable_prefix = durable_prefix
        # A new durable starts at the stream's first event unless told otherwise (tests).
        self._deliver_policy = DeliverPolicy.NEW if only_new else DeliverPolicy.ALL
        self._nc = nc
        self._js = nc.jetstream()
        self._store = store
        self._delay = delay
        self._fail = fail
        self._bots = bots
        self._cancelled: set[str] = set()
        self._bot_interval = bot_interval
        # bot id -> its running loop and the execution in progress (None between scheduled runs).
        self._bot_tasks: dict[str, asyncio.Task[None]] = {}
        self._bot_execution: dict[str, tuple[str, str] | None] = {}  # (execution id, startedAt)

    def durable(self, event_type: str) -> str:
        return f"{self._durable_prefix}_{event_type}".replace(".", "_")

    async def publish(self, event_type: str, data: dict[str, Any]) -> None:
        envelope = Envelope(type=event_type, data=data)
        await self._js.publish(envelope.subject, envelope.to_json(), headers={"Nats-Msg-Id": envelope.id})
        print(f"  -> {event_type} {orjson.dumps(data).decode()[:160]}")

    async def run(self) -> None:
        await ensure_stream(self._js)
        handlers = {
            "backtest.created": self.backtest_created,
            "backtest.cancel-requested": self.backtest_cancelled,
        }
        if self._bots:
            handlers |= {"bot.deploy-requested": self.bot_deploy, "bot.stop-requested": self.bot_stop}
        try:
            await asyncio.gather(*(self._consume(t, h) for t, h in handlers.items()))
        finally:
            await self.stop_bots()

    async def _consume(self, event_type: str, handler: Any) -> None:
        subscription = await self._js.pull_subscribe(
            subject_for(event_type),
            durable=self.durable(event_type),
            stream=EVENTS_STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=60, deliver_policy=self._deliver_policy),
        )
        print(f"consuming {event_type}")
        while True:
            try:
                messages = await subscription.fetch(10, timeout=5)
            except TimeoutError:
                continue
            for message in messages:
                try:
                    event = orjson.loads(message.data)
                    print(f"<- {event_type} {event['id']}")
                    await handler(event["data"])
                except Exception as error:  # noqa: BLE001 - a dev aid logs and goes on
                    print(f"  !! {event_type} not handled: {error!r}")
                await message.ack()

    async def backtest_cancelled(self, data: dict[str, Any]) -> None:
        self._cancelled.add(str(data.get("backtestId")))

    async def backtest_created(self, data: dict[str, Any]) -> None:
        backtest_id, results = data["backtestId"], data["results"]
        await self.publish("backtest.started", {"backtestId": backtest_id, "startedAt": _now()})
        await asyncio.sleep(self._delay)
        analysis, summary, logs = fake_analysis(backtest_id, data.get("config") or {})
        await self._store.ensure_bucket(results["bucket"])
        await self._store.put_bytes(results["bucket"], results["logsKey"], logs.encode(), "text/plain")
        if backtest_id in self._cancelled:
            print(f"  backtest {backtest_id} was cancelled: not completing it")
            return
        if self._fail:
            await self.publish("backtest.failed", {"backtestId": backtest_id, "error": "fake runtime: --fail given"})
            return
        await self._store.put_bytes(
            results["bucket"], results["analysisKey"], orjson.dumps(analysis), "application/json"
        )
        print(f"  wrote {results['bucket']}/{results['analysisKey']} and {results['logsKey']}")
        await self.publish(
            "backtest.completed", {"backtestId": backtest_id, "completedAt": _now(), "summary": summary}
        )

    async def _fetch_deployment(self, bot_id: str) -> dict[str, Any] | None:
        """The bot's config from the platform API, as a real runtime gets it (secrets in clear);
        None without a platform client or when the call fails (the event's config is used then)."""
        if self._deployments is None:
            return None
        try:
            config = await self._deployments.config(bot_id)
        except grpc.aio.AioRpcError as error:
            print(f"fake runtime: GetBotDeployment failed ({error.code().name}); using the event's config")
            return None
        await self.bot_log(bot_id, "deployment fetched through the platform API (GetBotDeployment)")
        return config

    async def bot_log(self, bot_id: str, text: str, level: str = "info") -> None:
        # Core NATS: the server's THE0_BOT_LOGS stream captures the subject; without the stream
        # (an older server) the lines are simply not kept, and the fake bot carries on.
        line = {"time": _now(), "level": level, "text": text}
        await self._nc.publish(BOT_LOGS_SUBJECT.format(bot_id=bot_id), orjson.dumps(line))

    async def bot_deploy(self, data: dict[str, Any]) -> None:
        bot_id = str(data["botId"])
        fetched = await self._fetch_deployment(bot_id)
        if fetched is not None:
            data = data | {"config": fetched}
        previous = self._bot_tasks.pop(bot_id, None)
        if previous is not None:
            previous.cancel()
        config = data.get("config") or {}
        scheduled = str(config.get("type", "")).startswith("scheduled/")
        task = asyncio.create_task(self._run_bot(bot_id, config, scheduled=scheduled), name=f"fake-bot-{bot_id}")
        self._bot_tasks[bot_id] = task
        task.add_done_callback(lambda done: self._bot_tasks.pop(bot_id, None) if self._bot_tasks.get(bot_id) is done
                               else None)

    async def _run_bot(self, bot_id: str, config: dict[str, Any], *, scheduled: bool) -> None:
        run = 0
        while True:
            run += 1
            execution, started = f"fake-{uuid.uuid4().hex[:8]}", _now()
            self._bot_execution[bot_id] = (execution, started)
            await self.publish("bot.execution.started", {"botId": bot_id, "executionId": execution,
                                                         "startedAt": started})
            await self.bot_log(bot_id, f"FAKE run {run} of {config.get('type', '?')}: no user code executed")
            # Field names only: a deployment's config holds the owner's secrets in clear.
            await self.bot_log(bot_id, f"config fields: {', '.join(sorted(config))}", level="debug")
            if self._fail:
                await self.bot_log(bot_id, "fake runtime: --fail given", level="error")
                self._bot_execution[bot_id] = None
                await self.publish("bot.execution.failed", {"botId": bot_id, "executionId": execution,
                                                            "error": "fake runtime: --fail given"})
                return
            if not scheduled:
                # A realtime bot runs until it is stopped (bot_stop completes its execution).
                tick = 0
                while True:
                    await asyncio.sleep(self._bot_interval)
                    tick += 1
                    await self.bot_log(bot_id, f"tick {tick}: price {100 + random.gauss(0, 1):.2f}")
            await asyncio.sleep(min(self._bot_interval, 1.0))
            await self.bot_log(bot_id, "run finished")
            self._bot_execution[bot_id] = None
            # startedAt again: the server's consumers of each type run side by side, and a `completed`
            # applied before its `started` still records when the run began.
            await self.publish("bot.execution.completed", {
                "botId": bot_id, "executionId": execution, "startedAt": started, "completedAt": _now(),
                "result": {"note": "fake runtime", "run": run},
            })
            await asyncio.sleep(self._bot_interval)

    async def bot_stop(self, data: dict[str, Any]) -> None:
        bot_id = str(data["botId"])
        task = self._bot_tasks.pop(bot_id, None)
        if task is not None:
            await cancel_and_wait(task)
        execution, started = self._bot_execution.pop(bot_id, None) or (f"fake-{uuid.uuid4().hex[:8]}", _now())
        await self.bot_log(bot_id, "stopped")
        await self.publish("bot.execution.completed", {
            "botId": bot_id, "executionId": execution, "startedAt": started, "completedAt": _now(),
            "result": {"note": "fake runtime"},
        })

    async def stop_bots(self) -> None:
        """Cancel every bot loop (the process is ending); their bots are left as they were."""
        tasks = list(self._bot_tasks.values())
        self._bot_tasks.clear()
        for task in tasks:
            await cancel_and_wait(task)


async def serve(
    nats_url: str, store: ObjectStore, *, delay: float, fail: bool, bots: bool, bot_interval: float,
    deployments: Deployments | None = None,
) -> None:
    nc = await connect_nats(nats_url, name="the0-fake-runtime")
    try:
        await FakeRuntime(nc, store, delay=delay, fail=fail, bots=bots, bot_interval=bot_interval,
                          deployments=deployments).run()
    finally:
        if deployments is not None:
            await deployments.close()
        with contextlib.suppress(Exception):
            await nc.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m the0.devtools.fake_runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nats-url", help="default: NATS_URL, else the dev stack's (THE0_DATA_DIR/nats.url)")
    parser.add_argument("--delay", type=float, default=2.0, help="seconds a backtest 'runs' (default 2)")
    parser.add_argument("--fail", action="store_true", help="fail every backtest and bot run instead")
    parser.add_argument("--no-bots", dest="bots", action="store_false",
                        help="answer backtests only, not bot deploy and stop requests")
    # Kept so that scripts written for the earlier opt-in flag still run; bots are on by default now.
    parser.add_argument("--bots", dest="bots", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bot-interval", type=float, default=10.0,
                        help="seconds between a scheduled bot's runs, and between a realtime bot's log lines "
                             "(default 10)")
    args = parser.parse_args(argv)
    logging.getLogger("the0.nats").setLevel(logging.ERROR)
    settings = load_settings(dev_mode=True)
    url = args.nats_url or settings.nats_url or dev_nats_url(settings.data_dir)
    if url is None:
        raise SystemExit(
            f"no NATS URL: start `make run` first (it records {settings.data_dir / NATS_URL_FILE} and prints "
            "the URL) or pass --nats-url"
        )
    store = object_store_from_settings(settings)
    key_file = settings.data_dir / "keys" / RUNTIME_KEY_FILE
    deployments = None
    if key_file.exists():  # `make run` made a runtime service account: fetch deployments like a real runtime
        deployments = Deployments(f"127.0.0.1:{settings.grpc_port}", key_file.read_text().strip())
    where = settings.minio_endpoint or settings.object_store_dir.resolve()
    print(f"{BANNER}\n  NATS {url}\n  object store {where}\n  Ctrl-C stops it")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(url, store, delay=args.delay, fail=args.fail, bots=args.bots,
                          bot_interval=args.bot_interval, deployments=deployments))


if __name__ == "__main__":
    main()
