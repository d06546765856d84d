"""The collectors' experience writer: one Reverb item per (t, t+1) pair."""

from __future__ import annotations

import numpy as np
import reverb
from tf_agents.trajectories import trajectory as trajectory_lib

from distributed_sac.replay.tables import EXPERIENCE_TABLE
from distributed_sac.transitions import PAIR_COLUMN, TransitionPacking


class ExperienceWriter:
    """Writes each overlapping (t, t+1) pair of a collector's trajectories as one item.

    Each item is one packed [2, width] step of its own (see transitions), so it is one chunk:
    the cheapest thing for the learner to sample. Reverb's writer queues items without
    blocking, so a collector held back by the rate limiter would run ahead and pile up stale
    experience in memory. `wait_for_room` bounds that queue.
    """

    def __init__(self, client: reverb.Client, collect_data_spec, max_pending_items: int = 16):
        self._packing = TransitionPacking(collect_data_spec)
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)
        self._max_pending_items = max_pending_items
        self._previous = None  # the packed step before this one, in the same episode
        self.items_created = 0

    def write(self, traj: trajectory_lib.Trajectory) -> None:
        packed = self._packing.pack(traj)
        if self._previous is not None:
            self._writer.append({PAIR_COLUMN: np.stack([self._previous, packed])})
            self._writer.create_item(
                EXPERIENCE_TABLE,
                priority=1.0,
                trajectory={PAIR_COLUMN: self._writer.history[PAIR_COLUMN][-1]},
            )
            self.items_created += 1
        # A boundary (LAST -> FIRST) step closes the episode: pairs never span two episodes.
        # Tracked here rather than with the writer's end_episode(), which waits for every
        # pending item and so would block forever once a finished learner stops sampling.
        self._previous = None if traj.is_boundary() else packed

    def __call__(self, traj: trajectory_lib.Trajectory) -> None:
        """As an actor's observer."""
        self.write(traj)

    def wait_for_room(self, timeout_s: float) -> bool:
        """Blocks until few items are pending on the server; False if that took over timeout_s."""
        try:
            self._writer.flush(self._max_pending_items, timeout_ms=int(timeout_s * 1000))
            return True
        except reverb.errors.DeadlineExceededError:
            return False

    def close(self, timeout_s: float = 5.0) -> bool:
        """Sends what the rate limiter admits within timeout_s; False if items were left unsent."""
        try:
            self._writer.flush(timeout_ms=int(timeout_s * 1000))
            all_sent = True
        except reverb.errors.DeadlineExceededError:
            # Training is over, so the limiter admits no more; those items would have no reader.
            all_sent = False
        self._writer.close()
        return all_sent
