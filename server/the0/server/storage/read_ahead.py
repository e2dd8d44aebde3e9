"""Chunks of an object read in a worker thread, the next one already being read while the caller
handles this one: the store and whoever the bytes go to (a gRPC stream) are busy at the same time.

At most two chunks are held (the one handed out and the one being read), and only one read is ever
in flight, so a stream that is not thread-safe (a urllib3 response, a file) is read in order. When
the caller stops early, a read still in flight is let finish before ``release`` closes what it reads
from: closing a connection under a worker thread could hand it back to the pool while still in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Callable, Coroutine
from typing import Any


async def read_ahead(
    read_chunk: Callable[[], Coroutine[Any, Any, bytes]], release: Callable[[], None]
) -> AsyncGenerator[bytes, None]:
    """Yield ``await read_chunk()`` until it returns b"", then (or on any exit) call ``release``."""
    pending = asyncio.ensure_future(read_chunk())
    try:
        # shield: a cancelled caller must not cancel the read, which would not stop its thread.
        while chunk := await asyncio.shield(pending):
            pending = asyncio.ensure_future(read_chunk())
            yield chunk
    finally:
        try:
            if not pending.done():
                await asyncio.wait([pending])
        finally:
            if pending.done() and not pending.cancelled():
                pending.exception()  # retrieved: a failed read nobody waits for any more is no error
            release()
