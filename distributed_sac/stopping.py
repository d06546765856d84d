"""A role's stop request: SIGTERM, SIGINT or SIGHUP set a flag that the role's loop reads where
stopping loses nothing (the learner after a chunk of train steps, the evaluator once a best
policy being saved and its metrics.jsonl line are written)."""

from __future__ import annotations

import signal
import time

from absl import logging

from distributed_sac.replay.connection import abandon_calls


class StopRequest:
    """Set by SIGTERM, SIGINT or SIGHUP; `when` says in the log where the role will stop.
    A call still waiting on a lost server then gives up, so the stop never waits for the server.
    (SIGHUP: the kernel sends it to a stopped process whose launcher died.)"""

    def __init__(self, when: str):
        self.when = when
        self.requested = False
        self.at: float | None = None  # time.monotonic() of the first request
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._request)

    def _request(self, signum, _frame):
        logging.info("got %s; stopping %s", signal.Signals(signum).name, self.when)
        if self.at is None:
            self.at = time.monotonic()
        self.requested = True
        abandon_calls()
