"""A resource's lifecycle as one table: which action moves it from which states to which.

Each domain declares its table once (``bots/lifecycle.py``, ...) and both its
service (owner actions) and its event consumers (runtime reports) ask that
table, so "where can a bot be stopped from" has one answer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Transition:
    """``sources``: states the action is allowed from; ``targets``: states it may leave the resource in."""

    sources: tuple[str, ...]
    targets: tuple[str, ...]


class IllegalTransition(RuntimeError):
    """Code tried a move its lifecycle table does not have: a bug, never a client's mistake."""


class Lifecycle:
    def __init__(self, states: tuple[str, ...], transitions: Mapping[str, Transition]) -> None:
        for action, transition in transitions.items():
            unknown = set(transition.sources + transition.targets) - set(states)
            if unknown:
                raise ValueError(f"{action}: unknown states {sorted(unknown)}")
        self.states = states
        self.transitions = dict(transitions)
        # A state no action leaves is terminal: nothing will ever change it again.
        self.terminal = tuple(
            s for s in states if not any(s in t.sources for t in transitions.values())
        )

    def sources(self, action: str) -> tuple[str, ...]:
        return self.transitions[action].sources

    def allows(self, action: str, state: str) -> bool:
        return state in self.transitions[action].sources

    def is_terminal(self, state: str) -> bool:
        return state in self.terminal

    def target(self, action: str, state: str, target: str) -> str:
        """``target``, after checking the table has ``action`` from ``state`` to it."""
        transition = self.transitions[action]
        if state not in transition.sources or target not in transition.targets:
            raise IllegalTransition(f"{action}: {state} -> {target} is not in the lifecycle")
        return target
