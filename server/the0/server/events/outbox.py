"""The transactional outbox: events are rows written in the caller's transaction.

``Outbox.add(session, type, data)`` stages an event beside the change it
describes; nothing is published until that transaction commits, and then the
relay (events/relay.py) is woken at once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from the0.server.events.after_commit import on_commit
from the0.server.events.envelope import SUBJECT_PREFIX, Envelope
from the0.server.events.models import OutboxRow
from the0.server.events.nats_connection import stored_by_events_stream


class Outbox:
    def __init__(self) -> None:
        # Set after every commit that added events; the relay waits on it.
        self.wake = asyncio.Event()

    def add(
        self,
        session: AsyncSession,
        type: str,  # shadows the builtin: the envelope's field name
        data: dict[str, Any],
        correlation_id: str | None = None,
    ) -> Envelope:
        """Stage ``type`` with ``data`` in the session's transaction; return its envelope."""
        if not stored_by_events_stream(f"{SUBJECT_PREFIX}{type}"):
            raise ValueError(f"event type {type!r} is not stored by the events stream: add its family to EVENTS_SUBJECTS")
        envelope = Envelope(type=type, data=data, correlation_id=correlation_id)
        session.add(
            OutboxRow(
                id=envelope.id,
                type=envelope.type,
                data=envelope.data,
                correlation_id=correlation_id,
                created_at=envelope.timestamp,
            )
        )
        on_commit(session, self.wake.set)
        return envelope
