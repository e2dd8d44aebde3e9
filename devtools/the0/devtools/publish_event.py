"""Development aid: publish one platform event to JetStream, as the runtime or
the security analyzer would. For trying the dev stack by hand:

    python -m the0.devtools.publish_event custom-bot.approved '{"customBotId": "<id>"}'

The NATS URL is NATS_URL, else the one `make run` recorded in the data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from the0.server.events.envelope import Envelope
from the0.server.events.nats_connection import connect_nats
from the0.server.serving import load_settings

NATS_URL_FILE = "nats.url"


def dev_nats_url(data_dir: Path) -> str | None:
    path = data_dir / NATS_URL_FILE
    return path.read_text().strip() if path.exists() else None


async def publish(nats_url: str, event_type: str, data: dict[str, Any]) -> Envelope:
    envelope = Envelope(type=event_type, data=data)
    nc = await connect_nats(nats_url, name="the0-publish-event")
    try:
        ack = await nc.jetstream().publish(
            envelope.subject, envelope.to_json(), headers={"Nats-Msg-Id": envelope.id}
        )
        print(f"published {event_type} as event {envelope.id} (stream {ack.stream}, seq {ack.seq})")
    finally:
        await nc.close()
    return envelope


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m the0.devtools.publish_event", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("type", help="event type, e.g. custom-bot.approved, bot.execution.started")
    parser.add_argument("data", help="the event's data as a JSON object")
    parser.add_argument("--nats-url", help="default: NATS_URL, else the dev stack's (THE0_DATA_DIR)")
    args = parser.parse_args(argv)
    logging.getLogger("the0.nats").setLevel(logging.ERROR)  # our own close is not news
    settings = load_settings(dev_mode=True)
    url = args.nats_url or settings.nats_url or dev_nats_url(settings.data_dir)
    if url is None:
        raise SystemExit(
            f"no NATS URL: start `make run` (it records {settings.data_dir / NATS_URL_FILE}) or pass --nats-url"
        )
    data = json.loads(args.data)
    if not isinstance(data, dict):
        raise SystemExit("data must be a JSON object")
    asyncio.run(publish(url, args.type, data))


if __name__ == "__main__":
    main()
