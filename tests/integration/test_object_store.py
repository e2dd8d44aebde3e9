"""One contract, two stores: the local folder and S3 (MinIO SDK against moto)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest

from the0.devtools.embedded.processes import free_port
from the0.server.settings import Settings
from the0.server.storage.factory import object_store_from_settings
from the0.server.storage.local import LocalObjectStore
from the0.server.storage.minio_store import MinioObjectStore
from the0.server.storage.object_store import (
    ObjectNotFound,
    ObjectStore,
    ObjectStoreError,
    ObjectTooLarge,
)


@pytest.fixture(params=["local", "minio"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    minio_store: ObjectStore = request.getfixturevalue("minio_store")
    return minio_store


@pytest.fixture
async def bucket(store: ObjectStore) -> str:
    # moto keeps buckets for the whole session: a fresh one per test.
    name = f"test-{uuid.uuid4().hex[:16]}"
    await store.ensure_bucket(name)
    return name


def test_both_implement_the_protocol(tmp_path: Path) -> None:
    assert isinstance(LocalObjectStore(tmp_path), ObjectStore)
    assert isinstance(MinioObjectStore("127.0.0.1:9", "a", "b"), ObjectStore)


async def test_put_bytes_then_stat_and_get(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "a/b/c.json", b'{"x": 1}', "application/json")
    info = await store.stat(bucket, "a/b/c.json")
    assert info is not None
    assert (info.size, info.content_type) == (8, "application/json")
    assert info.etag == hashlib.md5(b'{"x": 1}', usedforsecurity=False).hexdigest()
    assert await store.get_bytes(bucket, "a/b/c.json", max_bytes=8) == b'{"x": 1}'


async def test_put_file_and_stream_in_chunks(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    data = os.urandom(2_500_000)
    source = tmp_path / "upload.zip"
    source.write_bytes(data)
    await store.put_file(bucket, "owner/bot/1.0.0/x.zip", source, "application/zip")

    stream = await store.open_stream(bucket, "owner/bot/1.0.0/x.zip", chunk_size=1024 * 1024)
    chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == data
    assert len(chunks) >= 3 and max(map(len, chunks)) <= 1024 * 1024
    info = await store.stat(bucket, "owner/bot/1.0.0/x.zip")
    assert info is not None and (info.size, info.content_type) == (len(data), "application/zip")


async def test_stream_closed_early_releases_the_object(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "big", b"x" * 300_000, "application/octet-stream")
    for _ in range(3):  # would exhaust a small connection pool or leak file handles if not released
        stream = await store.open_stream(bucket, "big", chunk_size=1000)
        async with contextlib.aclosing(stream):  # type: ignore[type-var]
            assert await anext(stream) == b"x" * 1000
    assert await store.get_bytes(bucket, "big", max_bytes=300_000) == b"x" * 300_000


async def test_overwrite_replaces_the_object(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "k", b"first", "text/plain")
    await store.put_bytes(bucket, "k", b"second!", "text/markdown")
    info = await store.stat(bucket, "k")
    assert info is not None and (info.size, info.content_type) == (7, "text/markdown")
    assert await store.get_bytes(bucket, "k", 100) == b"second!"


async def test_get_bytes_limit(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "logs.txt", b"0123456789", "text/plain")
    assert await store.get_bytes(bucket, "logs.txt", max_bytes=10) == b"0123456789"
    with pytest.raises(ObjectTooLarge):
        await store.get_bytes(bucket, "logs.txt", max_bytes=9)


async def test_missing_object(store: ObjectStore, bucket: str) -> None:
    assert await store.stat(bucket, "nope") is None
    with pytest.raises(ObjectNotFound):
        await store.open_stream(bucket, "nope")
    with pytest.raises(ObjectNotFound):
        await store.get_bytes(bucket, "nope", 10)


async def test_missing_bucket(store: ObjectStore) -> None:
    missing = f"missing-{uuid.uuid4().hex[:12]}"
    assert await store.stat(missing, "k") is None
    with pytest.raises(ObjectNotFound):
        await store.get_bytes(missing, "k", 10)
    with pytest.raises(ObjectNotFound):
        await store.put_bytes(missing, "k", b"x", "text/plain")


async def test_delete(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "gone/soon", b"x", "text/plain")
    await store.delete(bucket, "gone/soon")
    assert await store.stat(bucket, "gone/soon") is None
    with pytest.raises(ObjectNotFound):
        await store.get_bytes(bucket, "gone/soon", 10)
    await store.delete(bucket, "gone/soon")  # idempotent


async def test_ensure_bucket_is_idempotent(store: ObjectStore, bucket: str) -> None:
    await store.put_bytes(bucket, "keep", b"x", "text/plain")
    await store.ensure_bucket(bucket)
    await store.ensure_bucket(bucket)
    assert await store.get_bytes(bucket, "keep", 10) == b"x"


async def test_ping(store: ObjectStore) -> None:
    await store.ping()


# Escaping keys point into this test's own tmp dir only ("{tmp}"), never at real
# system files: if validation ever broke, the test must not overwrite anything.
@pytest.mark.parametrize(
    "key", ["{tmp}/escape", "../escape", "a/../../escape", "a\\b", "a//b", "./a", "", "a/", "a\x00b"]
)
async def test_local_rejects_bad_keys(tmp_path: Path, key: str) -> None:
    key = key.replace("{tmp}", str(tmp_path))
    store = LocalObjectStore(tmp_path / "objects")
    await store.ensure_bucket("bucket")
    with pytest.raises(ValueError):
        await store.put_bytes("bucket", key, b"x", "text/plain")
    with pytest.raises(ValueError):
        await store.stat("bucket", key)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "objects" / "escape").exists()


@pytest.mark.parametrize("bucket", ["", "..", "../x", "A", "a/b", ".meta", "ab"])
async def test_local_rejects_bad_buckets(tmp_path: Path, bucket: str) -> None:
    with pytest.raises(ValueError):
        await LocalObjectStore(tmp_path).ensure_bucket(bucket)


async def test_local_key_clash_with_a_folder_is_a_store_error(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.ensure_bucket("bucket")
    await store.put_bytes("bucket", "a/b", b"x", "text/plain")
    with pytest.raises(ObjectStoreError):
        await store.put_bytes("bucket", "a", b"y", "text/plain")
    with pytest.raises(ObjectStoreError):
        await store.put_bytes("bucket", "a/b/c", b"z", "text/plain")
    assert await store.get_bytes("bucket", "a/b", 10) == b"x"


async def test_local_leaves_no_temp_files(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path)
    await store.ensure_bucket("bucket")
    await store.put_bytes("bucket", "k", b"x", "text/plain")
    assert list((tmp_path / ".tmp").iterdir()) == []
    assert (tmp_path / "bucket" / "k").read_bytes() == b"x"


async def test_local_ping_fails_when_the_folder_is_unusable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ObjectStoreError):
        await LocalObjectStore(blocker / "objects").ping()


async def test_ping_against_a_dead_endpoint_fails_fast() -> None:
    store = MinioObjectStore(f"127.0.0.1:{free_port()}", "testing", "testing")
    started = time.monotonic()
    with pytest.raises(ObjectStoreError):
        await store.ping()
    assert time.monotonic() - started < 3.0


def test_object_store_from_settings(tmp_path: Path) -> None:
    local = object_store_from_settings(Settings(data_dir=tmp_path))
    assert isinstance(local, LocalObjectStore) and local.root == tmp_path / "objects"
    remote = object_store_from_settings(
        Settings(minio_endpoint="127.0.0.1:9000", minio_access_key="a", minio_secret_key="b")
    )
    assert isinstance(remote, MinioObjectStore) and remote.endpoint == "127.0.0.1:9000"
