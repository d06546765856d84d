"""How a (t, t+1) pair of trajectory steps travels through Reverb: one flat float32 column.

Reverb samples an item column by column, each column its own chunk to fetch and decode, so a
Trajectory's six columns cost about five times more per sampled item than one column (measured:
~50 vs ~270 batches of 256 per second on this project's 2-core machine). Packing every field of
a step into one float32 vector keeps the learner's data pipeline off its critical path. The
values are unchanged: step types are small integers, exact in float32.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tree

from distributed_sac.errors import UserError

PAIR_COLUMN = "transition_pair"
SEQUENCE_LENGTH = 2  # SAC learns from (t, t+1) pairs
_EXACT_IN_FLOAT32 = (tf.float32, tf.int32, tf.int16, tf.int8, tf.uint8, tf.bool)


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
        self.width = sum(self._sizes)

    def signature(self) -> dict:
        """The experience table's signature: one [2, width] float32 column per item."""
        return {PAIR_COLUMN: tf.TensorSpec([SEQUENCE_LENGTH, self.width], tf.float32)}

    def describe(self) -> str:
        """The field layout of a packed step, e.g. 'step_type 1 + observation 28 + ...'."""
        return " + ".join(f"{path} {size}" for path, size in zip(self._paths, self._sizes))

    def pack(self, trajectory) -> np.ndarray:
        """One trajectory step (numpy fields, no batch axis) as a float32 vector."""
        return np.concatenate(
            [np.asarray(field, np.float32).reshape(-1) for field in tf.nest.flatten(trajectory)]
        )

    def unpack(self, packed: tf.Tensor):
        """A [..., width] float32 tensor back into a Trajectory with those outer axes."""
        outer_shape = packed.shape[:-1]
        if not outer_shape.is_fully_defined():
            outer_shape = tf.shape(packed)[:-1]
        fields = tf.split(packed, self._sizes, axis=-1)
        restored = [
            tf.cast(tf.reshape(field, tf.concat([outer_shape, spec.shape], axis=0)), spec.dtype)
            for field, spec in zip(fields, self._flat_specs)
        ]
        return tf.nest.pack_sequence_as(self.trajectory_spec, restored)
