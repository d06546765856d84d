"""Interval triggers: the learner's "every N train steps" work (logging, checkpoints, policy
export), called after each chunk of train steps, as TF-Agents' Learner calls its triggers."""

from __future__ import annotations

from typing import Callable


class IntervalTrigger:
    """Calls `action(train_step, loss)` when a chunk of train steps crosses a multiple of
    `interval` (0: never). Chunks can be longer than the interval; it fires once per chunk."""

    def __init__(self, interval: int, action: Callable[[int, float], None]):
        self._interval = interval
        self._action = action

    def __call__(self, previous_step: int, train_step: int, loss: float) -> None:
        if self._interval > 0 and train_step // self._interval > previous_step // self._interval:
            self._action(train_step, loss)
