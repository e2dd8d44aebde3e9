"""Hostile JSON Schemas: refused at upload, harmless when already stored (custom_bots/schema_safety.py).

Observation is real, not mocked: a local HTTP server counts requests, and a FIFO tells whether anything
opened it for reading (a writer's non-blocking open succeeds only while a reader has it open). Each
observer is first shown to see a real read, so a silent observer cannot make a test pass.

``observed_hits``, ``observed_file`` and ``loop_stall`` are used by tests/e2e/test_hostile_schemas.py too.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import http.server
import json
import os
import threading
import time
import urllib.request
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests.unit.test_archive_checks import bot_zip
from tests.unit.test_bot_config_validation import GOOD, FakeCatalog, version
from the0.server.custom_bots import schema_safety
from the0.server.custom_bots.archive import check_archive
from the0.server.custom_bots.config_validation import VALIDATION_SECONDS, validate_config
from the0.server.custom_bots.manifest import ManifestInvalid
from the0.server.errors import ApiError

# -- observers ---------------------------------------------------------------------------------------


class HitCounter:
    """An HTTP server on 127.0.0.1 that records every request path."""

    def __init__(self) -> None:
        hits = self.hits = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = b'{"type": "string"}'
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class FileWatch:
    """A FIFO whose every open for reading is recorded (and then fed a JSON document so it returns)."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path, self.url, self.reads = path, path.as_uri(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as error:
                if error.errno != errno.ENXIO:  # ENXIO: nobody has it open for reading
                    raise
                time.sleep(0.002)
                continue
            self.reads += 1
            try:
                os.write(fd, b'{"type": "string"}')
            finally:
                os.close(fd)
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def observed_hits() -> Iterator[HitCounter]:
    """A ``HitCounter`` shown to see a real request first (the body of the ``hits`` fixtures)."""
    counter = HitCounter()
    # The observer sees a real request (the control), then is reset for the test.
    urllib.request.urlopen(counter.url + "/control", timeout=5).read()
    assert counter.hits == ["/control"]
    counter.hits.clear()
    yield counter
    counter.close()


def observed_file(tmp_path: Path) -> Iterator[FileWatch]:
    """A ``FileWatch`` shown to see a real read first (the body of the ``secret_file`` fixtures)."""
    watch = FileWatch(tmp_path / "secret.json")
    with open(watch.path, "rb") as control:  # the control: a real read is seen
        control.read()
    deadline = time.monotonic() + 2
    while watch.reads == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert watch.reads == 1
    watch.reads = 0
    yield watch
    watch.close()


@pytest.fixture
def hits() -> Iterator[HitCounter]:
    yield from observed_hits()


@pytest.fixture
def secret_file(tmp_path: Path) -> Iterator[FileWatch]:
    yield from observed_file(tmp_path)


async def loop_stall(work: Awaitable[Any]) -> tuple[float, Any]:
    """(worst gap in seconds between ticks of a 1 ms ticker while ``work`` runs, the outcome of work).

    What is measured is the validation's hold on the loop, not the collector's walk over this test process's
    heap: late in a whole suite that heap holds every earlier test's leftovers, and one full collection of it
    held the loop 370 ms on CI. So what exists before the work is frozen out of collection while it runs (the
    work's own garbage is still collected, as it would be in the server).
    """
    worst, done = 0.0, False
    gc.freeze()  # no gc.collect() first: that walk is the very pause to keep out (and callers time this)

    async def tick() -> None:
        nonlocal worst
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            worst, last = max(worst, now - last), now

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0.01)
    try:
        outcome: Any = await work
    except ApiError as error:  # the outcome may be the refusal itself
        outcome = error
    finally:
        done = True
        await ticker
        gc.unfreeze()
    return worst, outcome


# Generous for a 2-core machine shared with other test runs (typically 5-20 ms here, as much as an idle
# loop sees under that load); the backtracking engine held the loop for
# 0.83 s at 22 characters and for good at 40.
MAX_LOOP_STALL = 0.1

# -- upload --------------------------------------------------------------------------------------------


def deep_all_of(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(levels):
        schema = {"allOf": [schema]}
    return schema


def exponential_refs(levels: int = 40) -> dict[str, Any]:
    """Small, valid, local, and 2**levels evaluations: only the deadline stops it."""
    defs: dict[str, Any] = {
        f"n{i}": {"anyOf": [{"$ref": f"#/$defs/n{i + 1}"}, {"$ref": f"#/$defs/n{i + 1}"}]} for i in range(levels)
    }
    defs[f"n{levels}"] = {"type": "integer"}
    return {"$defs": defs, "properties": {"symbol": {"$ref": "#/$defs/n0"}}}


HOSTILE_UPLOADS: dict[str, tuple[Any, str]] = {
    "remote ref": ({"properties": {"symbol": {"$ref": "{http}/symbol.json"}}}, "/properties/symbol/$ref"),
    "file ref": ({"properties": {"symbol": {"$ref": "{file}"}}}, "/properties/symbol/$ref"),
    "ref into an unknown keyword": (
        {"$ref": "#/x-hidden", "x-hidden": {"$ref": "{file}"}},
        "/x-hidden/$ref",
    ),
    "remote dynamicRef": ({"$dynamicRef": "{http}/meta.json#meta"}, "/$dynamicRef"),
    "id that moves the base URI": (
        {"$id": "{http}/", "properties": {"symbol": {"$ref": "#/$defs/x"}}},
        "/$id",
    ),
    "unknown dialect": ({"$schema": "{http}/dialect.json"}, "/$schema"),
    "dangling local ref": ({"properties": {"symbol": {"$ref": "#/$defs/nope"}}}, "/properties/symbol/$ref"),
    "look-ahead": ({"properties": {"symbol": {"type": "string", "pattern": "^(?=BTC)"}}}, "look-ahead"),
    "back-reference": ({"patternProperties": {"^(a)\\1$": {}}}, "back-references"),
    "python-only \\Z": ({"properties": {"symbol": {"pattern": "USD\\Z"}}}, "\\z"),
    "look-behind": (
        {"properties": {"symbol": {"pattern": "(?<=x)"}}},
        "/properties/symbol/pattern",
    ),
    "huge enum": ({"properties": {"symbol": {"enum": list(range(5_000))}}}, "/properties/symbol/enum"),
    "deep allOf": ({"properties": {"symbol": deep_all_of(40)}}, "nested more than 32"),
    "too many subschemas": (
        {"properties": {f"p{i}": {"type": "string"} for i in range(6_000)}},
        "more than 5000 objects",
    ),
    "unevaluatedProperties with patternProperties": (
        {"patternProperties": {"^x": {}}, "unevaluatedProperties": False},
        "/unevaluatedProperties",
    ),
}


def hostile(schema: Any, hits: HitCounter, secret_file: FileWatch) -> Any:
    text = json.dumps(schema).replace("{http}", hits.url).replace("{file}", secret_file.url)
    return json.loads(text)


def upload_with_schema(tmp_path: Path, schema: Any) -> Path:
    path = tmp_path / "upload.zip"
    path.write_bytes(bot_zip(extra={"bot-schema.json": json.dumps(schema).encode()}))
    return path


@pytest.mark.parametrize("case", HOSTILE_UPLOADS)
def test_hostile_schemas_are_refused_at_upload_without_reading_anything(
    case: str, tmp_path: Path, hits: HitCounter, secret_file: FileWatch
) -> None:
    schema, expected = HOSTILE_UPLOADS[case]
    with pytest.raises(ManifestInvalid) as raised:
        check_archive(upload_with_schema(tmp_path, hostile(schema, hits, secret_file)))
    (violation,) = raised.value.violations
    assert violation.field == "manifest.schema.bot"
    assert violation.description.startswith("bot-schema.json at /")
    assert expected in violation.description, violation.description
    assert (hits.hits, secret_file.reads) == ([], 0)


def test_a_catastrophic_pattern_is_accepted_at_upload_because_it_runs_in_linear_time(tmp_path: Path) -> None:
    schema = {"properties": {"symbol": {"type": "string", "pattern": "^(a+)+$"}}, "patternProperties": {
        "^(x+x+)+y$": {"type": "integer"}}}
    assert check_archive(upload_with_schema(tmp_path, schema)).bot_schema == schema


def test_every_problem_of_a_schema_is_listed_with_its_location(tmp_path: Path) -> None:
    schema = {"properties": {"a": {"pattern": "(?=a)"}, "b": {"$ref": "https://example.com/b.json"}}}
    with pytest.raises(ManifestInvalid) as raised:
        check_archive(upload_with_schema(tmp_path, schema))
    descriptions = sorted(v.description for v in raised.value.violations)
    assert [d.split(":")[0] for d in descriptions] == [
        "bot-schema.json at /properties/a/pattern",
        "bot-schema.json at /properties/b/$ref",
    ]


# -- validation of schemas stored before the rules (bypassing upload) ----------------------------------


async def check_with(schema: dict[str, Any], config: dict[str, Any] | None = None) -> Any:
    stored = version(id=f"cb-{time.monotonic_ns()}", bot_schema=schema)
    return await validate_config(
        None,  # type: ignore[arg-type]
        FakeCatalog(stored),
        "alice",
        GOOD | (config or {}),
        schema="bot",
    )


@pytest.mark.parametrize("case", ["remote ref", "file ref", "ref into an unknown keyword", "remote dynamicRef",
                                  "id that moves the base URI", "huge enum", "deep allOf"])
async def test_a_stored_hostile_schema_is_refused_without_reading_anything(
    case: str, hits: HitCounter, secret_file: FileWatch
) -> None:
    schema = hostile(HOSTILE_UPLOADS[case][0], hits, secret_file)
    with pytest.raises(ApiError) as raised:
        await check_with(schema)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIG_INVALID")
    assert "schema is refused" in str(raised.value)
    await asyncio.sleep(0.1)  # a read would have reached the observers by now
    assert (hits.hits, secret_file.reads) == ([], 0)


async def test_the_registry_itself_retrieves_nothing(
    monkeypatch: pytest.MonkeyPatch, hits: HitCounter, secret_file: FileWatch
) -> None:
    """Defence in depth: with the upload rules switched off, the references still go nowhere."""
    monkeypatch.setattr(schema_safety, "problems", lambda schema: [])
    schema = {"properties": {"symbol": {"$ref": f"{hits.url}/a.json"}, "quantity": {"$ref": secret_file.url}}}
    with pytest.raises(ApiError) as raised:
        await check_with(schema)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CONFIG_INVALID")
    await asyncio.sleep(0.1)
    assert (hits.hits, secret_file.reads) == ([], 0)


@pytest.mark.parametrize(
    ("schema", "config"),
    [
        ({"properties": {"symbol": {"type": "string", "pattern": "^(a+)+$"}}}, {"symbol": "a" * 40 + "!"}),
        ({"properties": {"symbol": {"type": "string", "pattern": "^(a+)+$"}}}, {"symbol": "a" * 60_000 + "!"}),
        (
            {"properties": {"limits": {"patternProperties": {"^(a|aa)+$": {"type": "integer"}},
                                       "additionalProperties": False}}},
            {"limits": {"a" * 40 + "!": 1}},
        ),
        (
            {"properties": {"tags": {"type": "array", "items": {"type": "string", "pattern": "^(\\w+\\s?)+$"}}}},
            {"tags": ["word " * 30 + "!"] * 50},
        ),
    ],
    ids=["pattern-40", "pattern-60k", "patternProperties", "items-pattern"],
)
async def test_catastrophic_patterns_never_hold_the_event_loop(schema: dict[str, Any], config: dict[str, Any]) -> None:
    await check_with({"type": "object"})  # warm the pool so its start is not measured
    started = time.perf_counter()
    worst, outcome = await loop_stall(check_with(schema, config))
    elapsed = time.perf_counter() - started
    assert isinstance(outcome, ApiError)
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert worst < MAX_LOOP_STALL, f"event loop held {worst * 1000:.1f} ms"
    assert elapsed < 0.5, f"validation took {elapsed:.2f} s"


async def test_a_matching_value_passes_the_linear_time_engine() -> None:
    schema = {"properties": {"symbol": {"type": "string", "pattern": "^(a+)+$"}}}
    assert (await check_with(schema, {"symbol": "a" * 1000})).config["symbol"] == "a" * 1000


async def test_an_exponential_schema_is_cut_off_at_the_deadline_and_frees_its_worker() -> None:
    await check_with({"type": "object"})
    started = time.perf_counter()
    worst, outcome = await loop_stall(check_with(exponential_refs(), {"symbol": "x"}))
    elapsed = time.perf_counter() - started
    assert isinstance(outcome, ApiError)
    assert (outcome.code, outcome.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert [(v.field, "too long" in v.description) for v in outcome.violations] == [("config", True)]
    assert VALIDATION_SECONDS <= elapsed < VALIDATION_SECONDS + 1.0
    assert worst < MAX_LOOP_STALL, f"event loop held {worst * 1000:.1f} ms"
    # The cooperative deadline stopped the worker: both workers are free again at once.
    started = time.perf_counter()
    await asyncio.gather(check_with({"type": "object"}), check_with({"type": "object"}))
    assert time.perf_counter() - started < 0.5


async def test_unique_items_over_many_objects_is_not_quadratic() -> None:
    schema = {"properties": {"tags": {"type": "array", "uniqueItems": True}}}
    items = [{"n": i} for i in range(4_000)]  # pairwise: 8 million comparisons
    started = time.perf_counter()
    error = None
    try:
        await check_with(schema, {"tags": [*items, {"n": 5}]})
    except ApiError as raised:
        error = raised
    assert error is not None and [v.field for v in error.violations] == ["config.tags"]
    assert time.perf_counter() - started < 0.5
    assert (await check_with(schema, {"tags": [1, True, 1.5, "1"]})).config["tags"] == [1, True, 1.5, "1"]


async def test_format_regex_values_are_compiled_by_re2() -> None:
    schema = {"properties": {"filter": {"type": "string", "format": "regex"}}}
    with pytest.raises(ApiError) as raised:
        await check_with(schema, {"filter": "(?=x)"})
    assert (raised.value.reason, [v.field for v in raised.value.violations]) == ("CONFIG_INVALID", ["config.filter"])
    assert (await check_with(schema, {"filter": "^(a+)+$"})).config["filter"] == "^(a+)+$"


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"deep": json.loads("[" * 16 + "]" * 16)}, "levels deep"),
        ({"many": list(range(10_001))}, "values"),
    ],
)
async def test_the_config_itself_is_bounded(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ApiError) as raised:
        await check_with({"type": "object"}, config)
    assert (raised.value.code, raised.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "CONFIG_INVALID")
    assert [v.field for v in raised.value.violations] == ["config"]
    assert message in raised.value.violations[0].description


async def test_a_config_at_the_input_gates_bounds_passes() -> None:
    config = {"deep": json.loads("[" * 15 + "]" * 15)}
    assert (await check_with({"type": "object"}, config)).config["deep"]


def test_compiled_schemas_are_cached_per_version() -> None:
    from the0.server.custom_bots.config_validation import _validators

    schema = {"properties": {"symbol": {"pattern": "^[A-Z]+$"}}}
    assert _validators.get("cb-cache", "bot", schema) is _validators.get("cb-cache", "bot", dict(schema))
