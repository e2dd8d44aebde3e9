"""Backtests without services: proto conversion, event data, error shapes, event times."""

from __future__ import annotations

from datetime import UTC, datetime

import grpc
import pytest

from the0.backtest.v1 import backtest_pb2
from the0.server.backtests.lifecycle import STATES, TERMINAL
from the0.server.backtests.models import BacktestRow
from the0.server.backtests.service import Backtest, created_event_data, invalid_state
from the0.server.backtests.servicer import backtest_to_proto, state_from_proto, state_to_proto
from the0.server.custom_bots.catalog import CustomBotVersion
from the0.server.errors import ApiError
from the0.server.event_fields import event_time as _time
from the0.server.events.consumer import DropEvent

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_every_contract_state_round_trips_and_unspecified_means_no_filter():
    contract = {n.removeprefix("BACKTEST_STATE_") for n in backtest_pb2.BacktestState.keys()} - {"UNSPECIFIED"}  # noqa: SIM118
    assert contract == set(STATES)
    for state in STATES:
        assert state_from_proto(state_to_proto(state)) == state
    assert state_from_proto(backtest_pb2.BACKTEST_STATE_UNSPECIFIED) is None
    with pytest.raises(ApiError) as caught:
        state_from_proto(99)
    assert (caught.value.code, caught.value.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "VALIDATION_FAILED")
    assert set(TERMINAL) == {"COMPLETED", "FAILED", "CANCELLED"}


def _backtest(**changes) -> Backtest:
    values = {
        "id": "b1", "owner_id": "u1", "name": "n", "config": {"type": "scheduled/x", "version": "1.0.0"}, "state": "PENDING",
        "custom_bot_id": "c1", "summary": None, "error": None, "etag": "e1", "create_time": NOW, "update_time": NOW,
        "start_time": None, "end_time": None,
    }
    return Backtest(**(values | changes))


def test_proto_leaves_unset_times_and_summary_unset():
    pending = backtest_to_proto(_backtest())
    assert not pending.HasField("summary") and not pending.HasField("start_time") and not pending.HasField("end_time")
    done = backtest_to_proto(_backtest(state="COMPLETED", summary={"totalTrades": 3}, start_time=NOW, end_time=NOW))
    assert done.state == backtest_pb2.BACKTEST_STATE_COMPLETED
    assert done.summary["totalTrades"] == 3 and done.end_time.ToDatetime(tzinfo=UTC) == NOW


def test_created_event_says_what_to_run_and_where_to_write():
    row = BacktestRow(id="b1", owner_id="u1", name="n", config={"symbol": "X"}, state="PENDING", custom_bot_id="c1")
    version = CustomBotVersion(
        id="c1", owner_id="u1", name="x", version="1.0.0", state="APPROVED", type="scheduled",
        runtime="nodejs20", entrypoints={"bot": "main.js", "backtest": "bt.js"}, object_key="u1/x/1.0.0/a.zip",
    )
    data = created_event_data(row, version)
    assert (data["backtestId"], data["ownerId"], data["runtime"], data["entrypoint"]) == ("b1", "u1", "nodejs20", "bt.js")
    assert data["archive"] == {"bucket": "custom-bots", "objectKey": "u1/x/1.0.0/a.zip"}
    assert data["results"]["bucket"] == "backtests" and data["results"]["prefix"] == "b1/"


def test_invalid_state_names_the_state():
    error = invalid_state("b1", "COMPLETED", "cancel", ("PENDING", "RUNNING"))
    assert (error.code, error.reason, error.metadata) == (
        grpc.StatusCode.FAILED_PRECONDITION, "INVALID_STATE", {"id": "b1", "state": "COMPLETED"})
    assert "COMPLETED" in error.message


def test_event_times():
    assert _time({}, "startedAt", NOW) == NOW
    assert _time({"startedAt": "2026-01-01T00:00:00"}, "startedAt", NOW) == datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(DropEvent):
        _time({"startedAt": "soon"}, "startedAt", NOW)
