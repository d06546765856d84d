"""Reading a running cluster from outside: the server's counters, rates and replay summaries.

The launcher, `status` and the benchmarks use these; nothing here changes what the roles do.
"""

from __future__ import annotations

import ast
import time

import reverb
import tensorflow as tf

from distributed_sac.learner import step_record
from distributed_sac.replay import tables, weights
from distributed_sac.replay.connection import BoundedCall
from distributed_sac.runtime.rates import per_second


def server_counters(client, timeout_s: int = 30, run_dir=None) -> dict:
    """Table sizes, pairs inserted and pairs the learner drained from the feed (rate-limiter
    counters: Reverb checkpoints them with the tables, so a restored server goes on from its
    checkpoint's, and one without a checkpoint from 0), and the train step of the newest pushed
    weights (None before the first push; with the learner's `run_dir`, no more than the learner
    recorded having reached, since any client can push a step). Reading the weights waits for a
    lost server for good: call this through a BoundedCall."""
    info = client.server_info(timeout=timeout_s)
    pushed = weights.newest_train_step(client, timeout_s)
    reached = None if run_dir is None else step_record.read_reached(run_dir)
    return {
        "time": time.monotonic(),
        "table_sizes": {name: table.current_size for name, table in info.items()},
        "table_capacities": {name: table.max_size for name, table in info.items()},
        "inserts": info[tables.EXPERIENCE_TABLE].rate_limiter_info.insert_stats.completed,
        "drained": info[tables.FEED_TABLE].rate_limiter_info.sample_stats.completed,
        "train_step": pushed if pushed is None or reached is None else min(pushed, reached),
    }


def rates(before: dict, after: dict) -> dict:
    """Per-second rates between two `server_counters`, and the effective update-to-data ratio
    (train steps per inserted item). None where a counter went back (the server restarted)."""

    def per_s(key):
        return per_second((before["time"], before[key]), (after["time"], after[key]))

    inserts, steps = per_s("inserts"), per_s("train_step")
    return {
        "inserts_per_s": inserts,
        "drained_per_s": per_s("drained"),
        "train_steps_per_s": steps,
        "updates_per_insert": steps / inserts if steps is not None and inserts else None,
    }


def operative_value(operative_config: str, name: str):
    """The value the learner used for `RunConfig.<name>`, read from its operative config (a
    Python literal); None when the file or the line is missing."""
    prefix = f"RunConfig.{name} = "
    try:
        with open(operative_config) as f:
            for line in f:
                if line.startswith(prefix):
                    return ast.literal_eval(line[len(prefix) :].strip())
    except (OSError, ValueError, SyntaxError):
        pass
    return None


class ReplayMonitor:
    """Polls the replay server every `interval_s`: writes Replay/* TensorBoard summaries (at the
    learner's train step) and returns the figures. A server that is away or hung is skipped, not
    fatal, and never holds up the caller (the launcher's supervision loop) for more than 3 s."""

    def __init__(self, address: str, summary_dir: str, interval_s: float = 5.0, run_dir=None):
        self._client = reverb.Client(address)
        self._writer = tf.summary.create_file_writer(summary_dir)
        self._interval_s = interval_s
        self._bounded = BoundedCall("replay monitor", timeout_s=3)
        self._previous = None
        self._last_poll = 0.0
        self._run_dir = run_dir

    def poll(self) -> dict | None:
        """Counters and rates since the previous poll; None when not due or unreachable."""
        if time.monotonic() - self._last_poll < self._interval_s:
            return None
        self._last_poll = time.monotonic()
        try:
            counters = self._bounded(server_counters, self._client, 2, self._run_dir)
        except Exception:  # the server is restarting; the launcher reports that itself
            return None
        figures = dict(counters)
        if self._previous is not None:
            figures.update(rates(self._previous, counters))
        self._previous = counters
        if counters["train_step"] is not None:
            summaries = {
                "Replay/table_size": counters["table_sizes"][tables.EXPERIENCE_TABLE],
                "Replay/inserts_per_s": figures.get("inserts_per_s"),
                "Replay/feed_size": counters["table_sizes"][tables.FEED_TABLE],
                "Replay/drained_per_s": figures.get("drained_per_s"),
                "Replay/updates_per_insert": figures.get("updates_per_insert"),
            }
            with self._writer.as_default(step=counters["train_step"]):
                for name, value in summaries.items():
                    if value is not None:
                        tf.summary.scalar(name, value)
            self._writer.flush()
        return figures
