"""Objects as files under ``root/<bucket>/<key>``: the dev-mode store.

Metadata (content type, etag) lives beside the tree in ``root/.meta`` (a name
no valid bucket can take). Writes go to ``root/.tmp`` and are moved in with
``os.replace``, so readers never see half an object. All file IO runs in a
worker thread.

The metadata is written after the file it describes, so for a moment it may
describe the previous file: it records the file's identity (inode, mtime, size)
and a reader uses its etag as the object's version only if that identity is the
one of the file it has open.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import stat
import uuid
from collections.abc import AsyncGenerator, Callable
from datetime import timedelta
from pathlib import Path
from typing import BinaryIO

from the0.server.storage.object_store import (
    DEFAULT_CHUNK_SIZE,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    ObjectTooLarge,
    OpenObject,
)
from the0.server.storage.read_ahead import read_ahead

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_COPY_CHUNK = 1024 * 1024
_DEFAULT_CONTENT_TYPE = "application/octet-stream"


def validate_bucket(bucket: str) -> None:
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ValueError(f"invalid bucket name {bucket!r}")


def validate_key(key: str) -> None:
    """Reject keys that could escape the bucket directory or mean different files on different OSes."""
    if not key or len(key) > 1024:
        raise ValueError("object key must be 1-1024 characters")
    if key.startswith("/") or "\\" in key or "\x00" in key:
        raise ValueError(f"invalid object key {key!r}")
    if any(part in {"", ".", ".."} for part in key.split("/")):
        raise ValueError(f"invalid object key {key!r}")


class LocalObjectStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    # -- paths -------------------------------------------------------------

    def _path(self, bucket: str, key: str) -> Path:
        validate_bucket(bucket)
        validate_key(key)
        bucket_dir = os.path.normpath(self.root / bucket)
        target = os.path.normpath(os.path.join(bucket_dir, key))
        # Belt and braces: whatever validate_key misses must still stay in the bucket.
        if os.path.commonpath([bucket_dir, target]) != bucket_dir or target == bucket_dir:
            raise ValueError(f"invalid object key {key!r}")
        return Path(target)

    def _meta_path(self, bucket: str, key: str) -> Path:
        return self.root / ".meta" / bucket / f"{key}.json"

    def _temp_path(self) -> Path:
        tmp = self.root / ".tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        return tmp / uuid.uuid4().hex

    # -- writes --------------------------------------------------------------

    async def ensure_bucket(self, bucket: str) -> None:
        validate_bucket(bucket)
        await asyncio.to_thread((self.root / bucket).mkdir, parents=True, exist_ok=True)

    async def put_file(self, bucket: str, key: str, path: Path, content_type: str) -> None:
        target = self._path(bucket, key)

        def copy() -> None:
            with open(path, "rb") as source:
                self._write(bucket, key, target, source, content_type)

        await self._run_write(bucket, key, copy)

    async def put_bytes(self, bucket: str, key: str, data: bytes, content_type: str) -> None:
        target = self._path(bucket, key)

        def write() -> None:
            self._write(bucket, key, target, io.BytesIO(data), content_type)

        await self._run_write(bucket, key, write)

    async def _run_write(self, bucket: str, key: str, write: Callable[[], None]) -> None:
        # OSError here means the tree disagrees with the key (a file where a folder
        # must go, or the reverse) or the disk is full: the store's failure, not a bug.
        try:
            await asyncio.to_thread(write)
        except ObjectNotFound:
            raise
        except OSError as exc:
            raise ObjectStoreError(f"cannot write {bucket}/{key}: {exc.strerror or exc}") from exc

    def _write(self, bucket: str, key: str, target: Path, source: BinaryIO, content_type: str) -> None:
        if not (self.root / bucket).is_dir():
            raise ObjectNotFound(bucket, key)  # like S3: no implicit buckets
        digest = hashlib.md5(usedforsecurity=False)
        temp = self._temp_path()
        try:
            with open(temp, "wb") as out:
                while chunk := source.read(_COPY_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
                written = os.fstat(out.fileno())  # os.replace keeps the inode and mtime
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, target)
        finally:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
        meta = {
            "content_type": content_type or _DEFAULT_CONTENT_TYPE,
            "etag": digest.hexdigest(),
            "file": _identity(written),
        }
        meta_temp = self._temp_path()
        meta_temp.write_text(json.dumps(meta))
        meta_path = self._meta_path(bucket, key)
        meta_path.parent.mkdir(parents=True, exist_ok=True)
        os.replace(meta_temp, meta_path)

    async def download_url(self, bucket: str, key: str, expires: timedelta) -> str:
        """A ``file://`` URL of the object (dev mode: the runtime shares this machine's disk; no expiry)."""
        return self._path(bucket, key).resolve().as_uri()

    async def delete(self, bucket: str, key: str) -> None:
        target = self._path(bucket, key)

        def remove() -> None:
            for path in (target, self._meta_path(bucket, key)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

        await asyncio.to_thread(remove)

    # -- reads ---------------------------------------------------------------

    async def stat(self, bucket: str, key: str) -> ObjectInfo | None:
        target = self._path(bucket, key)
        return await asyncio.to_thread(self._stat, bucket, key, target)

    def _stat(self, bucket: str, key: str, target: Path) -> ObjectInfo | None:
        try:
            status = target.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        return self._info(bucket, key, status)

    def _info(self, bucket: str, key: str, status: os.stat_result) -> ObjectInfo:
        try:
            meta = json.loads(self._meta_path(bucket, key).read_text())
        except (FileNotFoundError, NotADirectoryError, ValueError):
            meta = {}
        if not isinstance(meta, dict):
            meta = {}
        etag = meta.get("etag", "")
        return ObjectInfo(
            size=status.st_size,
            content_type=meta.get("content_type", _DEFAULT_CONTENT_TYPE),
            etag=etag,
            version=etag if etag and meta.get("file") == _identity(status) else "",
        )

    def _open(self, bucket: str, key: str, target: Path) -> BinaryIO:
        try:
            return open(target, "rb")
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise ObjectNotFound(bucket, key) from None

    async def open_stream(
        self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE
    ) -> AsyncGenerator[bytes, None]:
        target = self._path(bucket, key)
        file = await asyncio.to_thread(self._open, bucket, key, target)
        return _file_chunks(file, chunk_size)

    async def open_object(self, bucket: str, key: str, chunk_size: int = DEFAULT_CHUNK_SIZE) -> OpenObject:
        target = self._path(bucket, key)

        def open_and_describe() -> tuple[BinaryIO, ObjectInfo]:
            file = self._open(bucket, key, target)
            try:
                # The open file's own status: whatever replaces the path later, these are its bytes.
                return file, self._info(bucket, key, os.fstat(file.fileno()))
            except BaseException:
                file.close()
                raise

        file, info = await asyncio.to_thread(open_and_describe)
        return OpenObject(info, _file_chunks(file, chunk_size), file.close)

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes:
        target = self._path(bucket, key)

        def read() -> bytes:
            with self._open(bucket, key, target) as file:
                data = file.read(max_bytes + 1)  # one byte more tells "too large"
            if len(data) > max_bytes:
                raise ObjectTooLarge(bucket, key, max_bytes)
            return data

        return await asyncio.to_thread(read)

    async def ping(self) -> None:
        def check() -> None:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ObjectStoreError(f"object store folder {self.root} is unusable: {exc}") from exc
            if not os.access(self.root, os.W_OK):
                raise ObjectStoreError(f"object store folder {self.root} is not writable")

        await asyncio.to_thread(check)


def _identity(status: os.stat_result) -> list[int]:
    """Which file this is (as JSON keeps it): a rewrite makes a new inode or at least a new mtime."""
    return [status.st_ino, status.st_mtime_ns, status.st_size]


def _file_chunks(file: BinaryIO, chunk_size: int) -> AsyncGenerator[bytes, None]:
    return read_ahead(lambda: asyncio.to_thread(file.read, chunk_size), file.close)
