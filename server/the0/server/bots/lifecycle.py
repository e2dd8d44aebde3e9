"""The bot lifecycle (DESIGN.md §3), asked by the service (owner actions) and events.py (runtime reports).

DRAFT -> DEPLOYING (deploy) -> RUNNING (runtime reports a start) -> STOPPING
(stop) -> STOPPED; FAILED from runtime reports. DRAFT, STOPPED and FAILED can be
deployed (again). Runtime reports are accepted only while the bot was asked to
run (DEPLOYING, RUNNING, STOPPING); a report for any other bot is dropped.
"""

from __future__ import annotations

from the0.server.lifecycle import Lifecycle, Transition

STATES = ("DRAFT", "DEPLOYING", "RUNNING", "STOPPING", "STOPPED", "FAILED")
# The states in which the runtime may report on the bot: it was asked to run.
ASKED_TO_RUN = ("DEPLOYING", "RUNNING", "STOPPING")

BOT_LIFECYCLE = Lifecycle(
    STATES,
    {
        "deploy": Transition(("DRAFT", "STOPPED", "FAILED"), ("DEPLOYING",)),
        "stop": Transition(("RUNNING", "DEPLOYING"), ("STOPPING",)),
        # A start reported while stopping is recorded, and the bot keeps stopping.
        "execution.started": Transition(ASKED_TO_RUN, ("RUNNING", "STOPPING")),
        # A scheduled bot waits for its next run (RUNNING); any other bot whose execution ended is STOPPED.
        "execution.completed": Transition(ASKED_TO_RUN, ("RUNNING", "STOPPED")),
        "execution.failed": Transition(ASKED_TO_RUN, ("FAILED",)),
    },
)
