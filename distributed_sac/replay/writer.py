"""The collectors' experience writer: each (t, t+1) pair once, as an item of both tables."""

from __future__ import annotations

import reverb
from tf_agents.trajectories import trajectory as trajectory_lib

from distributed_sac.replay.tables import EXPERIENCE_TABLES
from distributed_sac.replay.transitions import PAIR_COLUMN, PairNumbering, TransitionPacking


class ExperienceWriter:
    """Writes each overlapping (t, t+1) pair of a collector's trajectories once, referenced by an
    item in the experience table and one in the learner's feed (the server stores the data once).

    Each pair is one packed [2, width] step of its own (see transitions), so it is one chunk.
    Reverb's writer queues items without blocking, so a collector held back by the feed's rate
    limiter would run ahead and pile up stale experience in memory. `wait_for_room` bounds that
    queue.
    """

    def __init__(
        self,
        client: reverb.Client,
        collect_data_spec,
        max_pending_items: int = 16,
        numbering: PairNumbering | None = None,
    ):
        """`numbering`: the collector process's, shared by the writers it makes one after the
        other (a new one otherwise)."""
        self._packing = TransitionPacking(collect_data_spec)
        self._numbering = numbering or PairNumbering()
        self._writer = client.trajectory_writer(num_keep_alive_refs=1)
        self._max_pending_items = max_pending_items
        self._previous = None  # the packed step before this one, in the same episode
        self.items_created = 0  # pairs written (each is an item in both tables)

    def write(self, traj: trajectory_lib.Trajectory) -> None:
        packed = self._packing.pack(traj)
        if self._previous is not None:
            pair = self._packing.pair(self._previous, packed, self._numbering.take())
            self._writer.append({PAIR_COLUMN: pair})
            pair = {PAIR_COLUMN: self._writer.history[PAIR_COLUMN][-1]}
            for table in EXPERIENCE_TABLES:
                self._writer.create_item(table, priority=1.0, trajectory=pair)
            self.items_created += 1
        # A boundary (LAST -> FIRST) step closes the episode: pairs never span two episodes.
        # Tracked here rather than with the writer's end_episode(), which waits for every
        # pending item and so would block forever once a finished learner stops draining.
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
