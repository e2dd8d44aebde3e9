"""Run callbacks once a session's transaction has committed (and never if it rolls back).

Used to wake the outbox relay and to tell watchers about a change only when the
change is really in the database. The callbacks run on the event loop's thread
(SQLAlchemy's async session runs the sync session there), so they may set
asyncio Events or create tasks, but must not block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = logging.getLogger("the0.events")
_KEY = "the0_after_commit"


def on_commit(session: AsyncSession | Session, callback: Callable[[], None]) -> None:
    """Call ``callback()`` after the session's current transaction commits."""
    session.info.setdefault(_KEY, []).append(callback)


@event.listens_for(Session, "after_commit")
def _run_callbacks(session: Session) -> None:
    callbacks = session.info.pop(_KEY, [])
    for callback in callbacks:
        try:
            callback()
        except Exception:  # a notification must never undo a commit
            log.exception("after-commit callback failed")


@event.listens_for(Session, "after_soft_rollback")
def _drop_callbacks(session: Session, previous_transaction: object) -> None:
    session.info.pop(_KEY, None)
