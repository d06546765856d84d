"""The learner's replay: the newest `replay_capacity` pairs in memory, sampled in graph.

Sampling 256 items per train step from Reverb cost the learner about as much CPU as the gradient
step itself (gRPC, per-item decoding, tf.data batching; 0.65 of the in-memory limit alone, 0.52
in the cluster). Here every pair crosses the network once: the learner drains new pairs from the
server's feed table in bulk, keeps them in a ring (a TF variable on its own device) and samples a
batch with one gather. The server's experience table still holds the same items for status,
checkpoints and the collectors' random-action budget.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING, Callable, NamedTuple

import numpy as np
import tensorflow as tf
from absl import logging

from distributed_sac.learner.pair_ledger import PairLedger
from distributed_sac.replay import tables
from distributed_sac.reports import report

if TYPE_CHECKING:  # parts imports this module
    from distributed_sac.config import RunConfig
    from distributed_sac.learner.parts import ServerParts
    from distributed_sac.replay.connection import Reconnecting

# How long a drain after a reconnect waits for a take the lost server cut short: Reverb cannot
# cancel it, and once the server answers it finishes within the take's own limit (10 s).
LATE_TAKE_WAIT_S = 15.0


class LearnerReplay(tf.Module):
    """A ring of the newest `capacity` packed pairs; uniform sampling over what it holds.

    Its variables go into the learner's checkpoint, so a restarted learner samples from the same
    items (less those drained after that checkpoint, which its kill lost: its ledger counts
    them). `feed_size`: the most pairs the server's feed holds (tables.feed_size; default
    `capacity`), which bounds the duplicates its ledger skips in a row.
    """

    def __init__(self, capacity: int, pair_shape, feed_size: int | None = None):
        super().__init__(name="learner_replay")
        self.capacity = capacity
        self.pairs = tf.Variable(
            tf.zeros([capacity, *pair_shape], tf.float32), trainable=False, name="pairs"
        )
        # Pairs ever added (overwritten ones included, not those dropped for NaN or inf): the
        # update-to-data ratio counts them.
        self.added = tf.Variable(0, dtype=tf.int64, trainable=False, name="added")
        # Pairs refused for holding NaN or inf, by this process: a Python int, not a variable,
        # so that checkpoints written without it still match (its log keeps the run's count).
        self.dropped_nonfinite = 0
        self.ledger = PairLedger(feed_size or capacity)  # the pairs it has had (see pair_ledger)

    @property
    def size(self) -> int:
        return min(int(self.added.numpy()), self.capacity)

    def figures(self) -> dict:
        """What the learner's reports say of its replay: pairs held, pairs ever drained, pairs
        this process refused for holding NaN or inf, and its ledger's counts."""
        return {
            "replay_size": self.size,
            "pairs_drained": int(self.added.numpy()),
            "pairs_dropped_nonfinite": self.dropped_nonfinite,
            **self.ledger.figures(),
        }

    def add(self, pairs: np.ndarray) -> None:
        """Appends [n, 2, width] pairs, overwriting the oldest once full. Pairs holding NaN or
        inf are dropped and counted: one in the replay would be sampled again and again, and
        make every train step (and every resume from a checkpoint holding it) diverge."""
        if len(pairs) == 0:  # a take the ledger emptied (every pair one it had)
            return
        finite = np.isfinite(pairs).reshape(len(pairs), -1).all(axis=1)
        if not finite.all():
            dropped = int(len(pairs) - finite.sum())
            self.dropped_nonfinite += dropped
            logging.warning(
                "dropped %d pairs holding NaN or inf (written by a faulty or hostile client)",
                dropped,
            )
            report("learner_dropped_pairs", count=dropped, reason="NaN or inf", **self.figures())
            pairs = pairs[finite]
        count = len(pairs)
        if count == 0:
            return
        kept = pairs[-self.capacity :]
        first = int(self.added.numpy()) + count - len(kept)
        slots = (first + np.arange(len(kept), dtype=np.int64)) % self.capacity
        self.pairs.scatter_nd_update(slots[:, None], kept)
        self.added.assign_add(count)

    def sample(self, batch_size: int) -> tf.Tensor:
        """`batch_size` pairs drawn uniformly, with replacement, from those held; [b, 2, width]."""
        held = tf.minimum(self.added, self.capacity)
        slots = tf.random.uniform([batch_size], 0, tf.maximum(held, 1), dtype=tf.int64)
        return tf.gather(self.pairs, slots)

    def sample_n_step(self, batch_size: int, returns: NStepReturns) -> tf.Tensor:
        """`batch_size` pairs (s_t, s_t+m) drawn uniformly, each the first of up to
        `returns.steps` consecutive pairs of one episode folded into one: its reward the
        discounted sum of theirs, its discount gamma^(m-1) times their discounts, so the agent's
        target r + gamma * discount * V(s_t+m) is the m-step return; [b, 2, width].

        Consecutive means linked: a pair's second step is the next pair's first, bit for bit
        (the writer packs each step once; the rows' pair numbers differ and are not compared).
        Pairs of other collectors in between, an episode's end, or the ring's newest pair cut a
        chain short.
        """
        steps = returns.steps
        held = tf.minimum(self.added, self.capacity)
        oldest = self.added - held
        starts = oldest + tf.random.uniform(
            [batch_size], 0, tf.maximum(held - steps + 1, 1), dtype=tf.int64
        )
        slots = (starts[:, None] + tf.range(steps, dtype=tf.int64)[None, :]) % self.capacity
        chain = tf.gather(self.pairs, slots)  # [b, steps, 2, width]
        step = slice(0, returns.step_width)
        linked = tf.reduce_all(tf.equal(chain[:, 1:, 0, step], chain[:, :-1, 1, step]), axis=-1)
        alive = tf.math.cumprod(
            tf.concat([tf.ones([batch_size, 1]), tf.cast(linked, tf.float32)], axis=1), axis=1
        )
        rewards = chain[:, :, 0, returns.reward_index]
        discounts = chain[:, :, 0, returns.discount_index]
        # weight_k = gamma^k * d_0 ... d_(k-1): what reward k counts for in the return.
        weights = tf.math.cumprod(returns.gamma * discounts, axis=1, exclusive=True)
        folded_reward = tf.reduce_sum(alive * weights * rewards, axis=1)
        last = tf.cast(tf.reduce_sum(alive, axis=1), tf.int32) - 1
        rows = tf.stack([tf.range(batch_size), last], axis=1)
        folded_discount = tf.gather_nd(weights * discounts, rows)
        width = self.pairs.shape[-1]
        reward_mask = tf.one_hot(returns.reward_index, width)
        discount_mask = tf.one_hot(returns.discount_index, width)
        first = (
            chain[:, 0, 0] * (1.0 - reward_mask - discount_mask)
            + folded_reward[:, None] * reward_mask
            + folded_discount[:, None] * discount_mask
        )
        second = tf.gather_nd(chain[:, :, 1], rows)
        return tf.stack([first, second], axis=1)

    def dataset(
        self, batch_size: int, unpack: Callable, prefetch: int, returns: NStepReturns | None
    ) -> tf.data.Dataset:
        """An endless dataset of (unpacked [batch_size, 2, ...] batch, ()): the Learner's input,
        with no sample info; n-step folded pairs when `returns` asks for more than one step."""
        if returns is None or returns.steps == 1:
            draw = lambda: self.sample(batch_size)  # noqa: E731
        else:
            draw = lambda: self.sample_n_step(batch_size, returns)  # noqa: E731
        return (
            tf.data.Dataset.from_tensors(0)
            .repeat()
            .map(lambda _: (unpack(draw()), ()))
            .prefetch(prefetch)
        )


class NStepReturns(NamedTuple):
    """How the learner folds consecutive pairs: up to `steps` of them, discounted by `gamma`
    (the agent's), with the packed step's reward and discount at these positions; a row's first
    `step_width` values are its step, the rest its pair number."""

    steps: int
    gamma: float
    reward_index: int
    discount_index: int
    step_width: int


class ExperienceIntake:
    """Drains the feed table into the learner's replay, and holds the update-to-data ratio:
    training up to train step s needs initial_collect_steps + ceil(s / updates_per_env_step)
    pairs drained, and it drains no more than that; collectors wait while the feed holds
    `rate_limiter_slack_steps` undrained pairs. With the ratio free it drains whatever waits
    and needs only initial_collect_steps."""

    def __init__(
        self,
        replay: LearnerReplay,
        server: Reconnecting[ServerParts],
        config: RunConfig,
        poll_s: float = 0.05,
    ):
        self._replay, self._server, self._config = replay, server, config
        self._poll_s = poll_s
        self._reader = None  # the feed reader of the newest connection
        self._cut_short: list = []  # readers of lost connections whose take may still finish

    def pairs_needed(self, train_step: int) -> int:
        ratio = self._config.updates_per_env_step
        initial = self._config.initial_collect_steps
        return initial if ratio is None else initial + math.ceil(train_step / ratio - 1e-9)

    def drain(self, limit: int | None = None) -> int:
        """Moves the pairs waiting in the feed (at most `limit`) into the replay; how many.

        With a fixed ratio the learner takes only what its next train steps need: a pair it
        took lets a collector insert another, so taking more would let collection run ahead.
        """

        taken: list = []  # kept across a reconnect: the pairs are out of the feed

        def take_waiting(parts) -> None:
            self._take_late(parts.feed, taken)
            waiting = parts.feed.available()
            if limit is not None:
                waiting = min(waiting, limit - sum(len(pairs) for pairs in taken))
            while waiting > 0:
                pairs = parts.feed.take(waiting)
                if len(pairs) == 0:
                    break
                taken.append(pairs)
                waiting -= len(pairs)

        before = self._replay.figures()
        try:
            self._server.call(take_waiting)
        finally:  # pairs taken before a failure still reach the replay (and its checkpoint)
            for pairs in taken:
                self._replay.add(self._replay.ledger.admit(pairs))
        after = self._replay.figures()
        skipped = after["pairs_duplicate"] - before["pairs_duplicate"]
        if skipped:
            logging.warning(
                "skipped %d pairs the replay already had: a restored server's feed handed them "
                "out again, or a forged number made them look so (%d in this run)",
                skipped,
                after["pairs_duplicate"],
            )
        lost = after["pairs_lost"] - before["pairs_lost"]
        if lost:
            logging.warning(
                "%d pairs never reached the replay: lost with a killed learner or server, "
                "dropped by the feed, or skipped by a forged number (%d in this run)",
                lost,
                after["pairs_lost"],
            )
        return after["pairs_drained"] - before["pairs_drained"]

    def _take_late(self, reader, taken: list) -> None:
        """Adds to `taken` the pairs of takes that a lost server cut short and that finished
        once it answered again. Right after a reconnect it waits for them (up to
        LATE_TAKE_WAIT_S), so that they come before the newer pairs of the new connection."""
        if reader is not self._reader:
            if self._reader is not None:
                self._cut_short.append(self._reader)
            self._reader = reader
            wait_s = LATE_TAKE_WAIT_S
        else:
            wait_s = 0.0
        for old in list(self._cut_short):
            finished, pairs = old.late_take(wait_s)
            if finished:
                self._cut_short.remove(old)
                if pairs is not None and len(pairs):
                    logging.info("%d pairs of a take cut short by the lost server", len(pairs))
                    taken.append(pairs)

    def wait_for(self, train_step: int, stop_requested: Callable[[], bool]) -> bool:
        """Drains until the replay allows training up to `train_step`; False if a stop was
        requested first."""
        needed = self.pairs_needed(train_step)
        free = self._config.updates_per_env_step is None
        # While waiting, take pairs in pieces of half the feed: each take's request costs CPU
        # of its own, and polling with takes every 50 ms during the initial collection cost the
        # learner most of a core, a collector's share on 2 cores (docs/performance.md).
        piece = max(1, min(tables.feed_size(self._config) // 2, 1000))
        last_note = time.monotonic()
        while True:
            added = int(self._replay.added.numpy())
            if free and added >= needed:
                self.drain()  # the newest pairs, whatever waits
                return True
            if added >= needed:
                return True
            missing = needed - added
            waiting = self._server.call(lambda parts: parts.feed.available())
            if waiting >= min(missing, piece):
                self.drain(None if free else missing)
                continue
            if stop_requested():
                return False
            if time.monotonic() - last_note >= 30:
                logging.info("waiting for experience: %d pairs drained, %d needed", added, needed)
                report("learner_waiting", pairs_drained=added, pairs_needed=needed)
                last_note = time.monotonic()
            time.sleep(self._poll_s)
