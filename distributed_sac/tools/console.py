"""The launcher's terminal output: event lines, and on a TTY one live progress line."""

from __future__ import annotations

import datetime
import sys
import time

from distributed_sac.runtime.rates import WindowedRate

RATE_WINDOW_S = 60.0  # steps/s and ETA over the last minute: smooth, yet current


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class Console:
    """Event lines are printed with a timestamp. On a TTY, a progress line (train step / total,
    env steps, steps/s, last AverageReturn, ETA) is redrawn in place below them; elsewhere (a
    log file, CI) each learner progress report is a plain line instead."""

    def __init__(self, total_steps: int, stream=None):
        self._stream = stream or sys.stdout
        self.live = self._stream.isatty()
        self.total_steps = total_steps
        self._fields: dict = {}
        self._drawn = False
        self._closed = False
        self._last_draw = 0.0
        self._rate = WindowedRate(RATE_WINDOW_S)  # of the train step

    def event(self, message: str) -> None:
        self._clear()
        print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", file=self._stream, flush=True)
        if self.live and self._fields and not self._closed:
            self._draw()

    def update(self, **fields) -> None:
        """Newer figures for the progress line (None leaves a figure as it was)."""
        self._fields.update({key: value for key, value in fields.items() if value is not None})
        step = fields.get("train_step")
        if step is not None and (self._rate.count is None or step > self._rate.count):
            self._rate.mark(step)
        if self.live and time.monotonic() - self._last_draw >= 0.5:
            self._draw()

    def progress_line(self) -> str:
        fields = self._fields
        step = fields.get("train_step")
        parts = [f"train_step {'-' if step is None else step}/{self.total_steps}"]
        if "env_steps" in fields:
            parts.append(f"env steps {fields['env_steps']:,}")
        rate = self.steps_per_s()
        if rate is not None:
            parts.append(f"{rate:.1f} steps/s")
        if "average_return" in fields:
            parts.append(f"AverageReturn {fields['average_return']:.3f}")
        if step is not None and rate:
            parts.append(f"ETA {_duration(max(0, self.total_steps - step) / rate)}")
        return "  ".join(parts)

    def steps_per_s(self) -> float | None:
        return self._rate.per_s()

    def _draw(self) -> None:
        self._stream.write("\r\033[K" + self.progress_line())
        self._stream.flush()
        self._drawn = True
        self._last_draw = time.monotonic()

    def _clear(self) -> None:
        if self._drawn:
            self._stream.write("\r\033[K")
            self._drawn = False

    def close(self) -> None:
        self._clear()
        self._closed = True
        self._stream.flush()
