"""Which pairs the learner's replay has had: each pair once, and a count of those it never got.

Every pair carries its number (transitions.PairNumbering): its collector process's source and
its place in that source's sequence. The feed hands each source's pairs out in order, so the
ledger needs only the next sequence it expects from each source. A pair below it is one the
replay already had: a restored server's feed holds again the pairs drained after its
checkpoint. A pair above it means those in between never reached the replay: they were in a
killed learner's memory after its checkpoint, in a killed server's after its checkpoint, in a
take dropped for an item of another shape, or the feed dropped them (with the update-to-data
ratio free, a full feed drops its oldest). The ledger goes into the learner's checkpoint with
its replay, so a restarted learner counts what its predecessor drained after that checkpoint.

A number is only as good as the client that wrote it: any client of the server can read a
collector's source from the experience table and insert a pair of that source with a huge
sequence, after which every real pair of that collector looks like one the replay already had.
A restored feed hands out again at most its size of them in a row (tables.feed_size), so after
more than that in a row from one source the ledger resynchronises the source to the pair at
hand: a forged number costs up to a feed of real pairs (counted as duplicates) and inflates the
lost count, but cannot stall the run.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf
from absl import logging

from distributed_sac.replay.transitions import pair_numbers

# Sources remembered (the least recently seen forgotten first): a source is one collector
# process, and a run has a few per collector.
MAX_SOURCES = 10_000


class PairLedger(tf.Module):
    """The next sequence expected from each source, and the pairs skipped and missed.

    `feed_size`: the most pairs the server's feed holds (tables.feed_size), so the most
    duplicates a restored feed hands out in a row from one source.
    """

    def __init__(self, feed_size: int):
        super().__init__(name="pair_ledger")
        self.feed_size = feed_size
        # {source: [next sequence, duplicates in a row]} as JSON, oldest seen first.
        self.expected = tf.Variable("{}", dtype=tf.string, trainable=False, name="expected")
        self.duplicates = tf.Variable(0, dtype=tf.int64, trainable=False, name="duplicates")
        self.lost = tf.Variable(0, dtype=tf.int64, trainable=False, name="lost")
        self.unnumbered = tf.Variable(0, dtype=tf.int64, trainable=False, name="unnumbered")
        self.resynchronised = tf.Variable(0, dtype=tf.int64, trainable=False, name="resynchronised")

    def figures(self) -> dict:
        return {
            "pairs_duplicate": int(self.duplicates.numpy()),
            "pairs_lost": int(self.lost.numpy()),
            "pairs_unnumbered": int(self.unnumbered.numpy()),
            "sources_resynchronised": int(self.resynchronised.numpy()),
        }

    def admit(self, pairs: np.ndarray) -> np.ndarray:
        """The pairs of a take, in the feed's order, that the replay has not had yet. Pairs
        without a number (written by a client of another kind) are admitted and counted."""
        if len(pairs) == 0:
            return pairs
        sources, sequences, numbered = pair_numbers(pairs)
        expected = {int(k): v for k, v in json.loads(self.expected.numpy()).items()}
        keep = np.ones(len(pairs), bool)
        duplicates = lost = resynchronised = 0
        for index in np.flatnonzero(numbered):
            source, sequence = int(sources[index]), int(sequences[index])
            next_sequence, in_a_row = expected.pop(source, (0, 0))  # re-inserted: newest last
            if sequence < next_sequence and in_a_row < self.feed_size:
                keep[index] = False
                duplicates += 1
                expected[source] = [next_sequence, in_a_row + 1]
                continue
            if sequence < next_sequence:  # more in a row than a restored feed holds
                resynchronised += 1
                logging.warning(
                    "resynchronised source %d at sequence %d: %d pairs in a row came below the "
                    "%d it expected, more than the feed holds (%d); a client wrote a forged "
                    "number",
                    source,
                    sequence,
                    in_a_row + 1,
                    next_sequence,
                    self.feed_size,
                )
            else:
                lost += sequence - next_sequence
            expected[source] = [sequence + 1, 0]
        for source in list(expected)[: max(0, len(expected) - MAX_SOURCES)]:
            del expected[source]
        self.expected.assign(json.dumps(expected))
        self.duplicates.assign_add(duplicates)
        self.lost.assign_add(lost)
        self.unnumbered.assign_add(int(np.count_nonzero(~numbered)))
        self.resynchronised.assign_add(resynchronised)
        return pairs[keep]
