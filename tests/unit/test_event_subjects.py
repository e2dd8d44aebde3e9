"""Every event family the server publishes is stored by THE0_EVENTS; bot log lines are not."""

import pytest

from the0.server.events.nats_connection import stored_by_events_stream


@pytest.mark.parametrize("subject", [
    "the0.bot.created", "the0.bot.deploy-requested", "the0.bot.execution.started",
    "the0.custom-bot.approved", "the0.backtest.completed",
])
def test_event_families_are_stored(subject):
    assert stored_by_events_stream(subject)


@pytest.mark.parametrize("subject", ["the0.bot.logs.abc", "the0.unknown.thing", "the0.bot"])
def test_other_subjects_are_not(subject):
    assert not stored_by_events_stream(subject)
