"""Per-second rates of growing counts (train steps, env steps, items inserted)."""

from __future__ import annotations

import collections
import time

from distributed_sac.reports import report


def per_second(
    earlier: tuple[float, float | None], later: tuple[float, float | None]
) -> float | None:
    """The rate of a count between two (time.monotonic(), count) marks; None where a count is
    missing or went back (what it counts restarted from 0 or from a checkpoint)."""
    (start, first), (end, last) = earlier, later
    if first is None or last is None or last < first:
        return None
    return (last - first) / max(end - start, 1e-9)


class WindowedRate:
    """The rate of a count over its marks of the last `window_s` seconds, or with `window_s`
    None over the interval since the previous mark (a progress report's rate since the one
    before)."""

    def __init__(self, window_s: float | None = None):
        self._window_s = window_s
        self._marks: collections.deque[tuple[float, float]] = collections.deque()

    @property
    def count(self) -> float | None:
        """The newest count marked; None before the first mark."""
        return self._marks[-1][1] if self._marks else None

    def mark(self, count: float) -> float | None:
        """Records `count` now; the rate over the window, with this mark."""
        now = time.monotonic()
        self._marks.append((now, count))
        if self._window_s is None:
            while len(self._marks) > 2:
                self._marks.popleft()
        else:
            while now - self._marks[0][0] > self._window_s:
                self._marks.popleft()
        return self.per_s()

    def per_s(self) -> float | None:
        """Count per second from the oldest mark in the window to the newest; None with fewer
        than two."""
        if len(self._marks) < 2:
            return None
        return per_second(self._marks[0], self._marks[-1])


class ProgressReport:
    """A role's progress report (`event`), each with the rate of a count since the report before
    it (the first: since `count`), as `rate_field` rounded to `digits`."""

    def __init__(self, event: str, rate_field: str, digits: int, count: float = 0):
        self._event, self._rate_field, self._digits = event, rate_field, digits
        self._rate = WindowedRate()
        self._rate.mark(count)

    def __call__(self, count: float, **fields) -> float | None:
        """Reports `fields` with the rate of `count`; the rate."""
        rate = self._rate.mark(count)
        report(self._event, **fields, **{self._rate_field: round(rate, self._digits)})
        return rate
