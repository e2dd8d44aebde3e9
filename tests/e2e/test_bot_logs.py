"""Bot logs as a dashboard sees them: lines the runtime publishes on JetStream are listed over
REST (oldest first, paged) and followed live with NDJSON through Envoy, on another replica too."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime

import httpx
import orjson
import pytest

from tests.e2e.test_bots import create, register
from tests.integration.test_bots_support import add_custom_bot


@pytest.fixture
async def sessions(database_url):
    from the0.server.db.engine import create_engine, session_factory

    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def publish(nats_client, bot_id: str, texts: list[str]) -> None:
    js = nats_client.jetstream()
    async with asyncio.timeout(10):
        while True:
            try:
                await js.stream_info("THE0_BOT_LOGS")
                break
            except Exception:  # noqa: BLE001 - the server creates the stream at start-up
                await asyncio.sleep(0.1)
    for seq, text in enumerate(texts, start=1):
        line = {"time": datetime.now(UTC).isoformat(), "level": "info", "text": text, "seq": seq}
        await js.publish(f"the0.bot.logs.{bot_id}", orjson.dumps(line))


async def listed(http: httpx.AsyncClient, bot_id: str, headers: dict[str, str], want: int) -> list[dict]:
    async with asyncio.timeout(15):
        while True:
            response = await http.get(f"/api/bots/{bot_id}/logs", headers=headers)
            assert response.status_code == 200, response.text
            lines = response.json().get("lines", [])
            if len(lines) >= want:
                return lines
            await asyncio.sleep(0.2)


async def test_logs_are_listed_and_followed_over_rest(stack_factory, sessions, nats_client):
    ingesting = await stack_factory(envoy=True)
    serving = await stack_factory(envoy=True)  # another replica: it ingested nothing itself
    alice = await register(ingesting.channel)
    await add_custom_bot(sessions, alice.id)
    bot = await create(alice)
    headers = {"authorization": f"Bearer {alice.token}"}
    await publish(nats_client, bot.id, [f"tick {i}" for i in range(5)])

    async with httpx.AsyncClient(base_url=serving.http_url, timeout=20) as http:
        lines = await listed(http, bot.id, headers, 5)
        assert [line["text"] for line in lines] == [f"tick {i}" for i in range(5)]
        page = (await http.get(f"/api/bots/{bot.id}/logs", params={"pageSize": 2}, headers=headers)).json()
        assert [line["text"] for line in page["lines"]] == ["tick 0", "tick 1"] and page["nextPageToken"]

        # tail -f: the backlog, then a line published after the stream opened.
        seen: list[str] = []
        async with http.stream("GET", f"/api/bots/{bot.id}/logs/stream", headers=headers) as stream:
            assert stream.status_code == 200
            async with asyncio.timeout(15):
                async for raw in stream.aiter_lines():
                    if not raw.strip():
                        continue
                    message = json.loads(raw)
                    message = message.get("result", message)
                    if "line" in message:
                        seen.append(message["line"]["text"])
                    if len(seen) == 5:
                        await publish(nats_client, bot.id, ["late line"])
                    if "late line" in seen:
                        break
        assert seen == [f"tick {i}" for i in range(5)] + ["late line"]

        # Someone else's bot does not exist for them.
        mallory = await register(ingesting.channel)
        other = await http.get(f"/api/bots/{bot.id}/logs", headers={"authorization": f"Bearer {mallory.token}"})
        assert other.status_code == 404 and other.json()["details"][0]["reason"] == "NOT_FOUND"
        missing = await http.get(f"/api/bots/{uuid.uuid4()}/logs", headers=headers)
        assert missing.status_code == 404
