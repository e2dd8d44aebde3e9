"""BackgroundTasks: the one lifecycle of the server's long-running loops."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from the0.server.background import BackgroundTasks, cancel_and_wait


async def test_stop_cancels_every_task_newest_first() -> None:
    tasks = BackgroundTasks()
    order: list[str] = []

    async def forever(name: str) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            order.append(name)

    for name in ("nats-connect", "relay", "health-poll"):
        tasks.spawn(name, forever(name))
    await asyncio.sleep(0)
    assert tasks.names == ["nats-connect", "relay", "health-poll"]
    await tasks.stop()
    assert order == ["health-poll", "relay", "nats-connect"]
    assert tasks.names == []


async def test_a_task_that_fails_is_logged_and_the_others_keep_running(caplog: pytest.LogCaptureFixture) -> None:
    tasks = BackgroundTasks()
    survivor_ran = asyncio.Event()

    async def crash() -> None:
        raise RuntimeError("relay bug")

    async def survivor() -> None:
        while True:
            survivor_ran.set()
            await asyncio.sleep(0.01)

    with caplog.at_level(logging.ERROR, logger="the0.background"):
        tasks.spawn("crash", crash())
        tasks.spawn("survivor", survivor())
        await asyncio.sleep(0.05)
    assert tasks.names == ["survivor"]
    assert survivor_ran.is_set()
    [record] = [r for r in caplog.records if r.name == "the0.background"]
    assert record.getMessage() == "background task failed"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.__dict__["task"] == "crash"
    await tasks.stop()


async def test_a_task_that_returns_leaves_quietly() -> None:
    tasks = BackgroundTasks()

    async def connect_once() -> None:
        await asyncio.sleep(0)

    task = tasks.spawn("nats-connect", connect_once())
    await task
    assert tasks.names == []
    await tasks.stop()


async def test_stop_is_not_ended_by_a_task_that_fails_while_cancelled() -> None:
    tasks = BackgroundTasks()
    cleaned = asyncio.Event()

    async def first() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cleaned.set()

    async def bad_cleanup() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            raise RuntimeError("cleanup failed")

    tasks.spawn("first", first())
    tasks.spawn("bad-cleanup", bad_cleanup())
    await asyncio.sleep(0)
    await tasks.stop()
    assert cleaned.is_set()
    assert tasks.names == []


async def test_stop_ends_a_fetch_loop_whose_cancellation_python_dropped() -> None:
    # nats-py's fetch waits with asyncio.wait_for; on Python 3.11 a cancellation that arrives
    # as a message does is dropped (CPython gh-86296) and the loop fetches on. One cancel()
    # then hung a test's fake runtime, and would hang the server's drain, for ever.
    tasks = BackgroundTasks()
    queue: asyncio.Queue[int] = asyncio.Queue()
    fetched: list[int] = []

    async def fetch_loop() -> None:
        while True:
            try:
                fetched.append(await asyncio.wait_for(queue.get(), 5))
            except TimeoutError:
                continue

    tasks.spawn("consume", fetch_loop())
    await asyncio.sleep(0.01)
    queue.put_nowait(1)  # the message and the cancellation arrive together
    async with asyncio.timeout(5):
        await tasks.stop()
    assert tasks.names == [] and fetched == [1]


async def test_cancel_and_wait_is_itself_cancellable() -> None:
    deafness = asyncio.Event()
    deafness.set()

    async def deaf() -> None:
        while deafness.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)

    task = asyncio.create_task(deaf())
    waiter = asyncio.create_task(cancel_and_wait(task, every=0.05))
    await asyncio.sleep(0.2)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert not task.done()  # the caller gave up waiting; the task is the caller's to deal with
    deafness.clear()
    await cancel_and_wait(task)
