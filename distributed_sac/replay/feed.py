"""The learner's side of the feed table: taking new experience pairs out of it, in bulk."""

from __future__ import annotations

import math

import numpy as np
import reverb
import tensorflow as tf
from absl import logging

from distributed_sac.errors import first_line
from distributed_sac.replay.connection import BoundedCall
from distributed_sac.replay.tables import FEED_TABLE
from distributed_sac.replay.transitions import PAIR_COLUMN

# Items per request: bounds the memory of one drain (10 000 Minitaur pairs are 3.2 MB).
_MAX_ITEMS_PER_TAKE = 10_000


class FeedReader:
    """Takes items out of the feed table, each exactly once (only the learner reads it).

    One TrajectoryDataset request per `take`, for exactly the items the table holds, against
    one gRPC round trip per item with `Client.sample` (docs/performance.md has the figures).
    """

    def __init__(
        self, client: reverb.Client, address: str, pair_shape, call_timeout_s: float = 30.0
    ):
        self._client, self._address = client, address
        self._pair_shape = tf.TensorShape(pair_shape)
        self._bounded = BoundedCall("taking from the feed", call_timeout_s)
        self._info_timeout_s = max(1, math.ceil(call_timeout_s))  # server_info takes whole seconds

    def available(self) -> int:
        """Items waiting in the feed."""
        return self._client.server_info(timeout=self._info_timeout_s)[FEED_TABLE].current_size

    def take(self, count: int) -> np.ndarray:
        """The `count` oldest waiting items (at most the available ones), [n, 2, width]; a
        server that stops answering meanwhile raises ServerCallTimeout."""
        count = min(count, _MAX_ITEMS_PER_TAKE)
        if count <= 0:
            return np.zeros([0, *self._pair_shape], np.float32)
        return self._bounded(self._take, count)

    def late_take(self, wait_s: float = 0.0) -> tuple[bool, np.ndarray | None]:
        """(finished, pairs) of a take that timed out: Reverb cannot cancel it, so once the
        server answers again it takes its items out of the feed all the same, and they are the
        learner's (see BoundedCall.late). Waits for it up to `wait_s`."""
        return self._bounded.late(wait_s)

    def _take(self, count: int) -> np.ndarray:
        items = reverb.TrajectoryDataset(
            server_address=self._address,
            table=FEED_TABLE,
            dtypes={PAIR_COLUMN: tf.float32},
            shapes={PAIR_COLUMN: self._pair_shape},
            max_in_flight_samples_per_worker=count,
            num_workers_per_iterator=1,
            max_samples=count,
            # The items are there (server_info said so); this only bounds a surprise.
            rate_limiter_timeout_ms=10_000,
        ).batch(count)
        try:
            taken = [batch.data[PAIR_COLUMN].numpy() for batch in items]
        except tf.errors.InvalidArgumentError as error:
            # Reverb's server does not check items against the table's signature (only its
            # client does, unless told not to): an item of another shape or dtype fails the
            # take. The pairs of this take are lost to the learner (they stay in the
            # experience table); the next take goes on past it.
            logging.warning(
                "dropped a take of up to %d pairs: the feed held an item that does not fit "
                "this config (%s)",
                count,
                first_line(error, 200),
            )
            taken = []
        return np.concatenate(taken) if taken else np.zeros([0, *self._pair_shape], np.float32)
