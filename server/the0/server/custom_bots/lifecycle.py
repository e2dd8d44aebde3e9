"""The custom-bot version lifecycle: the analyzer's verdict, then (maybe) an admin's review.

PENDING_REVIEW -> APPROVED | DECLINED | AWAITING_HUMAN_REVIEW (analyzer events);
AWAITING_HUMAN_REVIEW -> APPROVED | DECLINED (ReviewCustomBot). APPROVED and
DECLINED are terminal: watchers of a version stop there.
"""

from __future__ import annotations

from the0.server.lifecycle import Lifecycle, Transition

PENDING_REVIEW = "PENDING_REVIEW"
APPROVED = "APPROVED"
DECLINED = "DECLINED"
AWAITING_HUMAN_REVIEW = "AWAITING_HUMAN_REVIEW"
STATES = (PENDING_REVIEW, APPROVED, DECLINED, AWAITING_HUMAN_REVIEW)

CUSTOM_BOT_LIFECYCLE = Lifecycle(
    STATES,
    {
        "verdict": Transition((PENDING_REVIEW,), (APPROVED, DECLINED, AWAITING_HUMAN_REVIEW)),
        "review": Transition((AWAITING_HUMAN_REVIEW,), (APPROVED, DECLINED)),
    },
)
