"""The object-store contract the services use, whatever holds the bytes.

It imports no implementation: ``storage/factory.py`` picks one from the settings.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

DEFAULT_CHUNK_SIZE = 1024 * 1024


class ObjectStoreError(Exception):
    """The object store failed or is unreachable."""


class ObjectNotFound(ObjectStoreError):
    """No such object (or no such bucket)."""

    def __init__(self, bucket: str, key: str) -> None:
        self.bucket, self.key = bucket, key
        super().__init__(f"object not found: {bucket}/{key}")


class ObjectTooLarge(ObjectStoreError):
    """The object is bigger than the caller is willing to read into memory."""

    def __init__(self, bucket: str, key: str, max_bytes: int) -> None:
        self.bucket, self.key, self.max_bytes = bucket, key, max_bytes
        super().__init__(f"object {bucket}/{key} is larger than {max_bytes} bytes")


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    size: int
    content_type: str
    etag: str
    # Differs for every write of different bytes (S3: the ETag; the local folder: the content's
    # MD5 once it is sure to describe this very file). "" when the store cannot tell: then no
    # two reads may be taken to be of the same bytes. Compare only within one store.
    version: str


@dataclass(frozen=True, slots=True)
class OpenObject:
    """One object being read: ``info`` describes the very bytes ``chunks`` yields, read with them
    (S3: the GET's own response headers), so a write in between cannot make the two disagree.
    ``info.size`` is -1 if the store did not say (an S3 GET always does).

    Finish with ``aclose``: closing ``chunks`` alone releases nothing if it never started.
    """

    info: ObjectInfo
    chunks: AsyncGenerator[bytes, None]
    release: Callable[[], None]  # idempotent, and quick enough for the event loop

    async def aclose(self) -> None:
        try:
            await self.chunks.aclose()
        finally:
            self.release()


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of immutable-ish objects. Keys are ``/``-separated relative paths.

    ``open_stream`` and ``open_object`` are awaited first (which raises ObjectNotFound
    at once, before any byte is sent on). ``open_stream`` returns an async generator
    of chunks: close it with ``contextlib.aclosing`` when you may stop early.
    ``open_object`` returns an ``OpenObject``: finish with its ``aclose``.
    """

    async def ensure_bucket(self, bucket: str) -> None: ...

    async def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> None: ...

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None: ...

    async def open_stream(
        self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]: ...

    async def open_object(self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> OpenObject: ...

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes: ...

    async def delete(self, bucket: str, key: str) -> None: ...

    async def ping(self) -> None: ...

