"""GetBacktestResults' read path on both stores and both databases: analysis.json is checked to be JSON
once per version of the object (the verdict is kept on the backtest row), then streamed straight from
the store with one request per download; a changed object is checked again, and a stream that does not
deliver the checked bytes ends in an error, never in a clean, truncated end."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import orjson
import pytest

from tests.integration.test_backtests_support import (
    BacktestsDomain,
    add_backtestable_bot,
    backtest_config,
    backtests_domain,
)
from tests.integration.test_bots_support import add_user
from the0.server.backtests import service as service_module
from the0.server.backtests.models import BacktestRow
from the0.server.backtests.service import BUCKET, analysis_key
from the0.server.errors import ApiError
from the0.server.storage.local import LocalObjectStore
from the0.server.storage.object_store import ObjectStore, ObjectStoreError
from the0.server.storage.read_ahead import read_ahead

CHUNK = 64 * 1024


class RecordingStore:
    """The real store, recording every request made to it and how many bytes it handed out."""

    def __init__(self, inner: ObjectStore) -> None:
        self.inner = inner
        self.requests: list[str] = []
        self.bytes_read = 0
        self.cut_at: int | None = None  # hand out at most this many bytes of any stream,
        self.cut_with: Exception | None = None  # then end it (None) or raise this

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def reset(self) -> None:
        self.requests.clear()
        self.bytes_read = 0

    async def stat(self, bucket: str, key: str) -> Any:
        self.requests.append("stat")
        return await self.inner.stat(bucket, key)

    async def get_bytes(self, bucket: str, key: str, max_bytes: int) -> bytes:
        self.requests.append("get_bytes")
        data = await self.inner.get_bytes(bucket, key, max_bytes)
        self.bytes_read += len(data)
        return data

    async def open_stream(self, bucket: str, key: str, chunk_size: int = CHUNK) -> AsyncGenerator[bytes, None]:
        self.requests.append("open_stream")
        return self._counted(await self.inner.open_stream(bucket, key, chunk_size))

    async def open_object(self, bucket: str, key: str, chunk_size: int = CHUNK) -> Any:
        self.requests.append("open_object")
        opened = await self.inner.open_object(bucket, key, chunk_size)  # type: ignore[attr-defined]
        return dataclasses.replace(opened, chunks=self._counted(opened.chunks))

    async def _counted(self, chunks: AsyncGenerator[bytes, None]) -> AsyncGenerator[bytes, None]:
        async with contextlib.aclosing(chunks):
            async for chunk in chunks:
                if self.cut_at is not None and self.bytes_read + len(chunk) >= self.cut_at:
                    chunk, self.bytes_read = chunk[: self.cut_at - self.bytes_read], self.cut_at
                    yield chunk
                    if self.cut_with is not None:
                        raise self.cut_with
                    return
                self.bytes_read += len(chunk)
                yield chunk


@pytest.fixture(params=["local", "minio"])
def inner_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalObjectStore(tmp_path / "objects")
    minio_store: ObjectStore = request.getfixturevalue("minio_store")
    return minio_store


@pytest.fixture
def store(inner_store: ObjectStore) -> RecordingStore:
    return RecordingStore(inner_store)


@pytest.fixture
async def domain(database_url: str, tmp_path: Path, store: RecordingStore) -> AsyncIterator[BacktestsDomain]:
    async with backtests_domain(database_url, tmp_path / "unused", store=store) as domain:  # type: ignore[arg-type]
        yield domain


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every analysis the service parsed to check it is JSON."""
    seen: list[int] = []
    check = service_module._is_json

    def counted(data: bytes) -> bool:
        seen.append(len(data))
        return check(data)

    monkeypatch.setattr(service_module, "_is_json", counted)
    return seen


def analysis(points: int, seed: int = 1) -> bytes:
    return orjson.dumps({"metrics": {"totalReturn": 0.1}, "plots": [{"y": [seed + i / 7 for i in range(points)]}]})


async def completed_backtest(domain: BacktestsDomain) -> tuple[str, str]:
    owner = await add_user(domain.sessions)
    await add_backtestable_bot(domain.sessions, owner)
    backtest = await domain.service.create(owner, name="x", config=backtest_config())
    await domain.deliver("backtest.completed", {"backtestId": backtest.id})
    return owner, backtest.id


async def put_analysis(domain: BacktestsDomain, backtest_id: str, data: bytes) -> None:
    await domain.store.put_bytes(BUCKET, analysis_key(backtest_id), data, "application/json")


async def download(domain: BacktestsDomain, owner: str, backtest_id: str) -> bytes:
    stream = await domain.service.open_results(owner, backtest_id, chunk_size=CHUNK)
    async with contextlib.aclosing(stream):
        return b"".join([chunk async for chunk in stream])


async def api_error(awaitable: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        await awaitable
    return caught.value


async def row_of(domain: BacktestsDomain, backtest_id: str) -> BacktestRow:
    async with domain.sessions() as session:
        row = await session.get(BacktestRow, backtest_id)
        assert row is not None
        return row


async def test_the_first_download_checks_once_and_later_ones_stream_what_the_store_sends(
    domain: BacktestsDomain, store: RecordingStore, parses: list[int]
) -> None:
    owner, backtest_id = await completed_backtest(domain)
    data = analysis(200_000)
    assert len(data) > 16 * CHUNK
    await put_analysis(domain, backtest_id, data)

    store.reset()
    assert await download(domain, owner, backtest_id) == data
    assert (len(store.requests), store.bytes_read, parses) == (1, len(data), [len(data)])

    for _ in range(2):
        store.reset()
        stream = await domain.service.open_results(owner, backtest_id, chunk_size=CHUNK)
        async with contextlib.aclosing(stream):
            first = await anext(stream)
            # Streamed: the first chunk leaves before the rest of the object has been read.
            assert len(first) <= CHUNK and store.bytes_read <= 2 * CHUNK
            rest = b"".join([chunk async for chunk in stream])
        assert first + rest == data
        assert (len(store.requests), store.bytes_read) == (1, len(data))
    assert parses == [len(data)]


async def test_the_verdict_is_kept_on_the_row_for_every_replica_and_leaves_the_etag_alone(
    domain: BacktestsDomain, store: RecordingStore, parses: list[int], database_url: str, tmp_path: Path
) -> None:
    owner, backtest_id = await completed_backtest(domain)
    data = analysis(1000)
    await put_analysis(domain, backtest_id, data)
    before = await row_of(domain, backtest_id)
    assert await download(domain, owner, backtest_id) == data
    after = await row_of(domain, backtest_id)
    assert (after.etag, after.update_time) == (before.etag, before.update_time)
    assert (after.analysis_size, after.analysis_valid) == (len(data), True)
    assert after.analysis_version

    # Another replica (or this one after a restart) trusts the recorded verdict.
    async with backtests_domain(database_url, tmp_path / "unused", store=store) as other:  # type: ignore[arg-type]
        assert await download(other, owner, backtest_id) == data
    assert parses == [len(data)]


async def test_a_changed_object_is_checked_again(
    domain: BacktestsDomain, store: RecordingStore, parses: list[int]
) -> None:
    owner, backtest_id = await completed_backtest(domain)
    first = analysis(1000, seed=1)
    await put_analysis(domain, backtest_id, first)
    assert await download(domain, owner, backtest_id) == first

    # Same size, different bytes, now cut short: corrupt.
    corrupt = first[:-1] + b" "
    assert len(corrupt) == len(first)
    await put_analysis(domain, backtest_id, corrupt)
    error = await api_error(download(domain, owner, backtest_id))
    assert (error.code, error.reason) == (grpc.StatusCode.DATA_LOSS, "RESULTS_UNAVAILABLE")

    second = first.replace(b'"totalReturn":0.1', b'"totalReturn":0.2')
    assert len(second) == len(first) and second != first
    await put_analysis(domain, backtest_id, second)
    assert await download(domain, owner, backtest_id) == second
    assert await download(domain, owner, backtest_id) == second
    assert parses == [len(first)] * 3


async def test_a_corrupt_object_stays_data_loss_without_being_parsed_again(
    domain: BacktestsDomain, store: RecordingStore, parses: list[int]
) -> None:
    owner, backtest_id = await completed_backtest(domain)
    half_written = analysis(5000)[:-100]
    await put_analysis(domain, backtest_id, half_written)
    for _ in range(3):
        store.reset()
        error = await api_error(download(domain, owner, backtest_id))
        assert (error.code, error.reason, error.metadata["object"]) == (
            grpc.StatusCode.DATA_LOSS, "RESULTS_UNAVAILABLE", "analysis.json")
        assert len(store.requests) == 1
    assert parses == [len(half_written)]
    row = await row_of(domain, backtest_id)
    assert (row.analysis_size, row.analysis_valid) == (len(half_written), False)


async def test_a_missing_object_is_not_found_even_after_a_verdict(domain: BacktestsDomain) -> None:
    owner, backtest_id = await completed_backtest(domain)
    error = await api_error(download(domain, owner, backtest_id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RESULTS_UNAVAILABLE")
    await put_analysis(domain, backtest_id, analysis(100))
    await download(domain, owner, backtest_id)
    await domain.store.delete(BUCKET, analysis_key(backtest_id))
    error = await api_error(download(domain, owner, backtest_id))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "RESULTS_UNAVAILABLE")


async def test_a_stream_that_ends_short_of_the_checked_object_is_an_error_not_a_clean_end(
    domain: BacktestsDomain, store: RecordingStore
) -> None:
    owner, backtest_id = await completed_backtest(domain)
    data = analysis(50_000)
    await put_analysis(domain, backtest_id, data)
    assert await download(domain, owner, backtest_id) == data

    store.reset()
    store.cut_at = len(data) - 10  # the store's connection drops without an error of its own
    error = await api_error(download(domain, owner, backtest_id))
    assert (error.code, error.reason, error.metadata["object"]) == (
        grpc.StatusCode.DATA_LOSS, "RESULTS_UNAVAILABLE", "analysis.json")

    store.reset()
    store.cut_with = ObjectStoreError("connection reset")  # or with one
    error = await api_error(download(domain, owner, backtest_id))
    assert (error.code, error.reason) == (grpc.StatusCode.UNAVAILABLE, "DEPENDENCY_UNAVAILABLE")


async def test_the_store_describes_the_version_of_the_bytes_it_streams(inner_store: ObjectStore) -> None:
    """What the verdict relies on: each write of an object gets a new version, read with the bytes."""
    await inner_store.ensure_bucket(BUCKET)
    key = "results-version-test/analysis.json"
    versions = []
    for body in (b'{"a": 1}', b'{"a": 2}', b'{"a": 2}'[:-1] + b" "):
        await inner_store.put_bytes(BUCKET, key, body, "application/json")
        opened = await inner_store.open_object(BUCKET, key, CHUNK)  # type: ignore[attr-defined]
        async with contextlib.aclosing(opened.chunks):
            assert b"".join([c async for c in opened.chunks]) == body
        info = await inner_store.stat(BUCKET, key)
        assert info is not None
        assert (opened.info.size, opened.info.content_type) == (len(body), "application/json")
        assert opened.info.version and opened.info.version == info.version
        versions.append(opened.info.version)
    assert len(set(versions)) == 3


# -- read-ahead: what streams results from the stores ---------------------------------------------


async def test_read_ahead_keeps_one_read_in_flight_and_releases_only_after_it() -> None:
    events: list[str] = []
    in_flight = 0
    gate = asyncio.Event()
    chunks = iter([b"a", b"b", b"c"])

    async def read_chunk() -> bytes:
        nonlocal in_flight
        in_flight += 1
        assert in_flight == 1, "two reads in flight"
        events.append("read")
        if events.count("read") == 2:  # the read ahead of the first chunk is slow
            await gate.wait()
        in_flight -= 1
        events.append("read done")
        return next(chunks, b"")

    stream = read_ahead(read_chunk, lambda: events.append("released"))
    assert events == []  # nothing is read before the first chunk is asked for
    assert await anext(stream) == b"a"
    closing = asyncio.ensure_future(stream.aclose())
    await asyncio.sleep(0.01)
    assert "released" not in events  # the second read still holds the connection
    gate.set()
    await closing
    assert events == ["read", "read done", "read", "read done", "released"]


async def test_read_ahead_passes_a_failed_read_on_and_still_releases() -> None:
    released: list[bool] = []
    reads = 0

    async def read_chunk() -> bytes:
        nonlocal reads
        reads += 1
        if reads == 2:
            raise ObjectStoreError("connection reset")
        return b"x"

    stream = read_ahead(read_chunk, lambda: released.append(True))
    assert await anext(stream) == b"x"
    with pytest.raises(ObjectStoreError):
        await anext(stream)
    assert released == [True]
