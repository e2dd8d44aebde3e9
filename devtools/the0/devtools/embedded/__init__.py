"""Child processes the dev stack and the tests start: NATS here, Envoy elsewhere."""

from the0.devtools.embedded.nats_server import EmbeddedNats, find_nats_server_binary
from the0.devtools.embedded.processes import ChildProcess, free_port, wait_for_tcp, wait_for_tcp_sync

__all__ = [
    "ChildProcess",
    "EmbeddedNats",
    "find_nats_server_binary",
    "free_port",
    "wait_for_tcp",
    "wait_for_tcp_sync",
]
