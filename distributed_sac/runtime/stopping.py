"""A process's stop request: SIGTERM, SIGINT or SIGHUP set a flag that its loop reads where
stopping loses nothing (the learner after a chunk of train steps, the evaluator once a best
policy being saved and its metrics.jsonl line are written, the replay server between its
checkpoints, `status` between two screens). SIGHUP: the terminal went away, or the kernel sent
it to a stopped process whose launcher died."""

from __future__ import annotations

import signal
import time
from typing import Callable

from absl import logging

from distributed_sac.runtime.waits import poll_until

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopRequest:
    """From its making on, each stop signal is recorded instead of ending the process.

    `when`: says in the log where the process will stop. `on_request`: called in the signal
    handler after each signal is recorded (a role's makes calls waiting on a lost server give
    up; the launcher's stops the roles, or kills them at a second signal)."""

    def __init__(self, when: str | None = None, on_request: Callable[[], None] | None = None):
        self.when = when
        self._on_request = on_request
        self.signals: list[int] = []  # the signals received, in order
        self.at: float | None = None  # time.monotonic() of the first
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._request)

    @property
    def requested(self) -> bool:
        return bool(self.signals)

    def wait(self, timeout_s: float) -> bool:
        """Waits up to `timeout_s` for a stop request; True once there is one."""
        return poll_until(lambda: self.requested, timeout_s, interval_s=0.1)

    def _request(self, signum, _frame):
        if self.when is not None:
            logging.info("got %s; stopping %s", signal.Signals(signum).name, self.when)
        if self.at is None:
            self.at = time.monotonic()
        self.signals.append(signum)
        if self._on_request is not None:
            self._on_request()
