"""The object-store contract the services use, whatever holds the bytes.

It imports no implementation: ``storage/factory.py`` picks one from the settings.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
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


@runtime_checkable
class ObjectStore(Protocol):
    """Buckets of immutable-ish objects. Keys are ``/``-separated relative paths.

    ``open_stream`` is awaited first (which raises ObjectNotFound at once, before
    any byte is sent on) and returns an async generator of chunks; close it with
    ``contextlib.aclosing`` when you may stop early.
    """

    async def ensure_bucket(self, bucket: str) -> None: ...

    async def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> None: ...

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None: ...

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None: ...

    async def open_stream(
        self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]: ...

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes: ...

    async def delete(self, bucket: str, key: str) -> None: ...

    async def ping(self) -> None: ...

