"""Development aid: print the mail the platform's mailer would send — the password-reset and
email-verification tokens of the ``user.*`` events on JetStream (the server sends no mail itself):

    python -m the0.devtools.mailbox            # everything still in the stream, then exit
    python -m the0.devtools.mailbox --follow   # and keep printing new ones

The NATS URL is NATS_URL, else the one `make run` recorded in the data dir. The events carry the
tokens sealed for the mailer (the server's secrets/mail.py); they are opened here with
THE0_MAILER_KEY, else the key `make run` generated in the data dir. Tokens are secrets: this is
for a development stack only.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import orjson
from nats.js.api import ConsumerConfig, DeliverPolicy

from the0.devtools.devstack import dev_key_ring
from the0.devtools.publish_event import NATS_URL_FILE, dev_nats_url
from the0.server.events.nats_connection import EVENTS_STREAM, connect_nats
from the0.server.keys import key_ring
from the0.server.secrets.mail import MailTokens, MailTokenUnreadable
from the0.server.serving import load_settings

SUBJECT = "the0.user.>"
_WHAT = {"user.password-reset-requested": "password reset", "user.email-verification-requested": "verify email"}


def describe(event: dict[str, Any], tokens: MailTokens) -> str:
    event_type, data = str(event.get("type", "")), event.get("data", {})
    what = _WHAT.get(event_type, event_type or "?")
    try:
        token = tokens.open(event_type, str(data.get("userId")), str(data.get("sealedToken")))
    except MailTokenUnreadable as error:
        token = f"<unreadable: {error}>"
    return f"{what} for {data.get('email')}: token {token} (expires {data.get('expireTime')})"


async def read_mail(
    nats_url: str, mailer_keys: tuple[tuple[str, str], ...], *, follow: bool = False, idle_seconds: float = 1.0
) -> list[str]:
    """Print (and return) every mail in the stream; with ``follow``, keep waiting for more."""
    tokens = MailTokens(key_ring(mailer_keys, None))
    nc = await connect_nats(nats_url, name="the0-mailbox")
    lines: list[str] = []
    try:
        subscription = await nc.jetstream().pull_subscribe(
            SUBJECT, stream=EVENTS_STREAM, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL))
        while True:
            try:
                messages = await subscription.fetch(100, timeout=idle_seconds)
            except TimeoutError:
                if follow:
                    continue
                break
            for message in messages:
                event = orjson.loads(message.data)
                await message.ack()
                if event.get("type") not in _WHAT:
                    continue  # user.deleted and the like: no mail to send
                line = describe(event, tokens)
                print(line, flush=True)
                lines.append(line)
    finally:
        await nc.close()
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m the0.devtools.mailbox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--follow", "-f", action="store_true", help="keep printing new mail")
    parser.add_argument("--nats-url", help="default: NATS_URL, else the dev stack's (THE0_DATA_DIR)")
    args = parser.parse_args(argv)
    logging.getLogger("the0.nats").setLevel(logging.ERROR)
    settings = load_settings(dev_mode=True)
    url = args.nats_url or settings.nats_url or dev_nats_url(settings.data_dir)
    if url is None:
        raise SystemExit(f"no NATS URL: start `make run` (it records {settings.data_dir / NATS_URL_FILE}) "
                         "or pass --nats-url")
    keys = settings.mailer_keys
    if not keys:
        if not (settings.data_dir / "keys" / "mailer").exists():
            raise SystemExit("no THE0_MAILER_KEY: start `make run` (it generates one in the data dir) or set it")
        keys = dev_key_ring(settings.data_dir, "mailer")
    asyncio.run(read_mail(url, keys, follow=args.follow))


if __name__ == "__main__":
    main()
