"""A bounded wait: poll a condition until it holds or a deadline passes."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def poll_until(condition: Callable[[], T], timeout_s: float, interval_s: float = 0.2) -> T:
    """Calls `condition` every `interval_s` seconds until it returns something truthy, and returns
    that; once `timeout_s` has passed without, its last (falsy) value. It is called at least once,
    and once more at the deadline. To give up early (a process it waits on exited), `condition`
    raises."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        remaining = deadline - time.monotonic()
        if value or remaining <= 0:
            return value
        time.sleep(min(interval_s, remaining))
