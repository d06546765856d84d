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
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf

from distributed_sac.transitions import pair_numbers

# Sources remembered (the least recently seen forgotten first): a source is one collector
# process, and a run has a few per collector.
MAX_SOURCES = 10_000


class PairLedger(tf.Module):
    """The next sequence expected from each source, and the pairs skipped and missed."""

    def __init__(self):
        super().__init__(name="pair_ledger")
        # {source: next sequence} as JSON, oldest seen first.
        self.expected = tf.Variable("{}", dtype=tf.string, trainable=False, name="expected")
        self.duplicates = tf.Variable(0, dtype=tf.int64, trainable=False, name="duplicates")
        self.lost = tf.Variable(0, dtype=tf.int64, trainable=False, name="lost")
        self.unnumbered = tf.Variable(0, dtype=tf.int64, trainable=False, name="unnumbered")

    def figures(self) -> dict:
        return {
            "pairs_duplicate": int(self.duplicates.numpy()),
            "pairs_lost": int(self.lost.numpy()),
            "pairs_unnumbered": int(self.unnumbered.numpy()),
        }

    def admit(self, pairs: np.ndarray) -> np.ndarray:
        """The pairs of a take, in the feed's order, that the replay has not had yet. Pairs
        without a number (written by a client of another kind) are admitted and counted."""
        if len(pairs) == 0:
            return pairs
        sources, sequences, numbered = pair_numbers(pairs)
        expected = {int(k): v for k, v in json.loads(self.expected.numpy()).items()}
        keep = np.ones(len(pairs), bool)
        duplicates = lost = 0
        for index in np.flatnonzero(numbered):
            source, sequence = int(sources[index]), int(sequences[index])
            next_sequence = expected.pop(source, 0)  # re-inserted below: newest last
            if sequence < next_sequence:
                keep[index] = False
                duplicates += 1
                expected[source] = next_sequence
            else:
                lost += sequence - next_sequence
                expected[source] = sequence + 1
        for source in list(expected)[: max(0, len(expected) - MAX_SOURCES)]:
            del expected[source]
        self.expected.assign(json.dumps(expected))
        self.duplicates.assign_add(duplicates)
        self.lost.assign_add(lost)
        self.unnumbered.assign_add(int(np.count_nonzero(~numbered)))
        return pairs[keep]
