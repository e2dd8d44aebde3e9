"""The backtest lifecycle (DESIGN.md §3), asked by the service (cancel) and events.py (runtime reports).

PENDING (created) -> RUNNING (runtime reports a start) -> COMPLETED | FAILED
(runtime reports) | CANCELLED (owner, from PENDING or RUNNING). ``completed`` and
``failed`` are accepted from PENDING too: each event type has its own consumer,
so the run's ``started`` may still be on the way (and is then dropped as late).
COMPLETED, FAILED and CANCELLED are terminal: no action leaves them.
"""

from __future__ import annotations

from the0.server.lifecycle import Lifecycle, Transition

STATES = ("PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED")

BACKTEST_LIFECYCLE = Lifecycle(
    STATES,
    {
        "cancel": Transition(("PENDING", "RUNNING"), ("CANCELLED",)),
        "started": Transition(("PENDING",), ("RUNNING",)),
        "completed": Transition(("PENDING", "RUNNING"), ("COMPLETED",)),
        "failed": Transition(("PENDING", "RUNNING"), ("FAILED",)),
    },
)
TERMINAL = BACKTEST_LIFECYCLE.terminal
