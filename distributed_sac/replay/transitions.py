"""How a (t, t+1) pair of trajectory steps travels through Reverb: one flat float32 column.

Reverb samples an item column by column, each column its own chunk to fetch and decode, so a
Trajectory's six columns cost several times more per sampled item than one column
(docs/performance.md has the figures). Packing every field of a step into one float32 vector
keeps the learner's data pipeline off its critical path. The
values are unchanged: step types are small integers, exact in float32.

Each row of a pair ends in the pair's number (`PairNumbering`): the collector process it comes
from and its place in that process's sequence. The learner recognises by it a pair it already
has (a restored server's feed hands out again what was drained after its checkpoint) and counts
the pairs that never reached it (pair_ledger).
"""

from __future__ import annotations

import secrets

import numpy as np
import tensorflow as tf
import tree

from distributed_sac.errors import UserError

PAIR_COLUMN = "transition_pair"
SEQUENCE_LENGTH = 2  # SAC learns from (t, t+1) pairs
_EXACT_IN_FLOAT32 = (tf.float32, tf.int32, tf.int16, tf.int8, tf.uint8, tf.bool)
# A pair's number: source and sequence, each 48 bits as two 24-bit integers (exact in float32).
PAIR_ID_WIDTH = 4
_ID_BITS = 24
_ID_PART = 1 << _ID_BITS
NUMBER_LIMIT = 1 << (2 * _ID_BITS)


class PairNumbering:
    """The numbers one collector process gives its pairs: a random 48-bit source (no two
    collector processes share one, in practice: 1000 of them collide with odds of 2e-9) and a
    sequence from 0. It outlives the process's writers, so pairs a lost server took with it
    leave a gap in the sequence that the learner counts."""

    def __init__(self, source: int | None = None):
        self.source = secrets.randbits(2 * _ID_BITS) if source is None else source
        self.next_sequence = 0

    def take(self) -> np.ndarray:
        """The next pair's number, as the PAIR_ID_WIDTH floats that end each of its rows."""
        sequence = self.next_sequence
        self.next_sequence += 1
        return np.array(
            [*divmod(self.source, _ID_PART), *divmod(sequence % NUMBER_LIMIT, _ID_PART)],
            np.float32,
        )


def pair_numbers(pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sources, sequences, numbered) of [n, 2, width] pairs; `numbered` is False for a pair
    whose number is not one PairNumbering gives (a client of another kind wrote it)."""
    tail = pairs[:, 0, -PAIR_ID_WIDTH:].astype(np.float64)
    with np.errstate(invalid="ignore"):
        numbered = np.all(
            (tail >= 0) & (tail < _ID_PART) & (tail == np.floor(tail)), axis=1
        ) & np.all(pairs[:, 1, -PAIR_ID_WIDTH:] == pairs[:, 0, -PAIR_ID_WIDTH:], axis=1)
    parts = np.where(numbered[:, None], tail, 0).astype(np.int64)
    sources = parts[:, 0] * _ID_PART + parts[:, 1]
    sequences = parts[:, 2] * _ID_PART + parts[:, 3]
    return sources, sequences, numbered


class TransitionPacking:
    """Packs trajectory steps into float32 vectors and unpacks batches of pairs."""

    def __init__(self, trajectory_spec):
        self.trajectory_spec = trajectory_spec
        self._flat_specs = tf.nest.flatten(trajectory_spec)
        self._paths = [
            "/".join(str(p) for p in path) for path, _ in tree.flatten_with_path(trajectory_spec)
        ]
        for path, spec in zip(self._paths, self._flat_specs):
            if spec.dtype not in _EXACT_IN_FLOAT32:
                raise UserError(
                    f"trajectory field {path} is {spec.dtype.name}; experience is stored as "
                    "float32, which cannot hold it exactly"
                )
        self._sizes = [spec.shape.num_elements() for spec in self._flat_specs]
        self.fields_width = sum(self._sizes)
        self.width = self.fields_width + PAIR_ID_WIDTH  # a row of a pair, its number included

    def signature(self) -> dict:
        """The experience table's signature: one [2, width] float32 column per item."""
        return {PAIR_COLUMN: tf.TensorSpec([SEQUENCE_LENGTH, self.width], tf.float32)}

    def describe(self) -> str:
        """The field layout of a packed step, e.g. 'step_type 1 + observation 28 + ...'."""
        fields = [f"{path} {size}" for path, size in zip(self._paths, self._sizes)]
        return " + ".join([*fields, f"pair number {PAIR_ID_WIDTH}"])

    def position(self, path: str) -> int:
        """Where the scalar field `path` (e.g. 'reward') sits in a packed step."""
        index = self._paths.index(path)
        if self._sizes[index] != 1:
            raise UserError(f"trajectory field {path} holds {self._sizes[index]} numbers, not one")
        return sum(self._sizes[:index])

    def pack(self, trajectory) -> np.ndarray:
        """One trajectory step (numpy fields, no batch axis) as a float32 vector."""
        return np.concatenate(
            [np.asarray(field, np.float32).reshape(-1) for field in tf.nest.flatten(trajectory)]
        )

    def pair(self, first: np.ndarray, second: np.ndarray, number: np.ndarray) -> np.ndarray:
        """Two packed steps and the pair's number (PairNumbering.take) as one [2, width] item."""
        return np.stack([np.concatenate([first, number]), np.concatenate([second, number])])

    def unpack(self, packed: tf.Tensor):
        """A [..., width] float32 tensor (rows of pairs, or packed steps without a number) back
        into a Trajectory with those outer axes."""
        outer_shape = packed.shape[:-1]
        if not outer_shape.is_fully_defined():
            outer_shape = tf.shape(packed)[:-1]
        numbered = packed.shape[-1] == self.width
        sizes = [*self._sizes, PAIR_ID_WIDTH] if numbered else self._sizes
        fields = tf.split(packed, sizes, axis=-1)[: len(self._sizes)]
        restored = [
            tf.cast(tf.reshape(field, tf.concat([outer_shape, spec.shape], axis=0)), spec.dtype)
            for field, spec in zip(fields, self._flat_specs)
        ]
        return tf.nest.pack_sequence_as(self.trajectory_spec, restored)
