"""NATS JetStream: the connection, the event stream."""

from the0.server.events.nats_connection import (
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    NatsUnavailable,
    connect_nats,
    ensure_stream,
    ping_nats,
)

__all__ = [
    "EVENTS_STREAM",
    "EVENTS_SUBJECTS",
    "NatsUnavailable",
    "connect_nats",
    "ensure_stream",
    "ping_nats",
]
