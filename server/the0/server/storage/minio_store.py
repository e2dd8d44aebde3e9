"""Objects in MinIO or any S3-compatible store, through the sync ``minio`` SDK.

Every SDK call runs in a worker thread. The HTTP client has short connect
timeouts and few retries, so a store that is down fails a request within
seconds instead of hanging it for minutes (the SDK default).
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta
from pathlib import Path
from typing import TypeVar

import certifi
import urllib3
from minio import Minio
from minio.error import MinioException, S3Error
from urllib3.response import BaseHTTPResponse

from the0.server.storage.object_store import (
    DEFAULT_CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    ObjectTooLarge,
    OpenObject,
)
from the0.server.storage.read_ahead import read_ahead

T = TypeVar("T")
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "ResourceNotFound", "NoSuchObject"}
# Errors of the transport (refused, timed out, reset) rather than of S3.
_TRANSPORT_ERRORS = (urllib3.exceptions.HTTPError, OSError)


def _http_client(secure: bool, connect_timeout: float, read_timeout: float) -> urllib3.PoolManager:
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout),
        maxsize=16,
        cert_reqs="CERT_REQUIRED" if secure else "CERT_NONE",
        ca_certs=certifi.where() if secure else None,
        retries=urllib3.Retry(total=2, connect=1, backoff_factor=0.1, status_forcelist=[502, 503, 504]),
    )


class MinioObjectStore:
    def __init__(
        self,
        endpoint: str,
        access_key: str,
        secret_key: str,
        *,
        secure: bool = False,
        region: str = "us-east-1",
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
    ) -> None:
        self.endpoint = endpoint
        # A fixed region skips the SDK's bucket-location lookup before every first call.
        self._client = Minio(
            endpoint,
            access_key=access_key,
            secret_key=secret_key,
            secure=secure,
            region=region,
            http_client=_http_client(secure, connect_timeout, read_timeout),
        )

    async def _call(self, bucket: str, key: str, fn: Callable[[], T]) -> T:
        """Run ``fn`` in a thread, turning SDK and transport errors into ObjectStoreError."""
        try:
            return await asyncio.to_thread(fn)
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise ObjectNotFound(bucket, key) from exc
            raise ObjectStoreError(f"object store error on {bucket}/{key}: {exc.code}") from exc
        except (MinioException, *_TRANSPORT_ERRORS) as exc:
            raise ObjectStoreError(f"object store {self.endpoint} unavailable: {type(exc).__name__}") from exc

    async def ensure_bucket(self, bucket: str) -> None:
        def ensure() -> None:
            if not self._client.bucket_exists(bucket):
                try:
                    self._client.make_bucket(bucket)
                except S3Error as exc:
                    # Another replica created it between the two calls.
                    if exc.code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                        raise

        await self._call(bucket, "", ensure)

    async def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> None:
        await self._call(
            bucket, key, lambda: self._client.fput_object(bucket, key, str(path), content_type=content_type)
        )

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        await self._call(
            bucket,
            key,
            lambda: self._client.put_object(
                bucket, key, io.BytesIO(data), len(data), content_type=content_type
            ),
        )

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        try:
            info = await self._call(bucket, key, lambda: self._client.stat_object(bucket, key))
        except ObjectNotFound:
            return None
        etag = (info.etag or "").strip('"')
        return ObjectInfo(
            size=int(info.size or 0),
            content_type=info.content_type or "application/octet-stream",
            etag=etag,
            version=etag,
        )

    async def open_stream(
        self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        response = await self._call(bucket, key, lambda: self._client.get_object(bucket, key))
        return self._chunks(response, bucket, key, chunk_size)

    async def open_object(self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> OpenObject:
        response = await self._call(bucket, key, lambda: self._client.get_object(bucket, key))
        # The GET's own headers: S3 serves one version of the object whole, so they describe these bytes.
        headers = response.headers
        length = headers.get("Content-Length") or ""
        etag = (headers.get("ETag") or "").strip('"')
        info = ObjectInfo(
            size=int(length) if length.isdigit() else -1,
            content_type=headers.get("Content-Type") or "application/octet-stream",
            etag=etag,
            version=etag,
        )
        return OpenObject(info, self._chunks(response, bucket, key, chunk_size), lambda: _release(response))

    def _chunks(
        self, response: BaseHTTPResponse, bucket: str, key: str, chunk_size: int
    ) -> AsyncGenerator[bytes, None]:
        # One chunk per thread hop: the object is never held whole in memory.
        stream = response.stream(chunk_size)
        return read_ahead(lambda: self._call(bucket, key, lambda: next(stream, b"")), lambda: _release(response))

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes:
        response = await self._call(bucket, key, lambda: self._client.get_object(bucket, key))
        try:
            length = response.headers.get("Content-Length")
            if length is not None and int(length) > max_bytes:
                raise ObjectTooLarge(bucket, key, max_bytes)
            data = await self._call(bucket, key, lambda: response.read(max_bytes + 1))
        finally:
            response.close()
            response.release_conn()
        if len(data) > max_bytes:
            raise ObjectTooLarge(bucket, key, max_bytes)
        return data

    async def download_url(self, bucket: str, key: str, expires: timedelta) -> str:
        """A presigned GET URL (signed locally: no request to the store)."""
        return await self._call(bucket, key, lambda: self._client.presigned_get_object(bucket, key, expires=expires))

    async def delete(self, bucket: str, key: str) -> None:
        """Idempotent, like S3 itself: deleting a missing object is not an error."""
        try:
            await self._call(bucket, key, lambda: self._client.remove_object(bucket, key))
        except ObjectNotFound:
            pass

    async def ping(self, timeout: float = 3.0) -> None:
        """List buckets; raise ObjectStoreError on failure or after ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout):
                await self._call("", "", self._client.list_buckets)
        except TimeoutError as exc:
            raise ObjectStoreError(f"object store {self.endpoint} did not answer in {timeout} s") from exc


def _release(response: BaseHTTPResponse) -> None:
    response.close()
    response.release_conn()
