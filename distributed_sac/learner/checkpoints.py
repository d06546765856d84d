"""The learner's checkpoints: agent (networks, target networks, optimizers, alpha), train_step
and the learner's replay (its pairs and how many it has drained).

TF-Agents' Checkpointer restores whatever matches and silently initialises the rest, so a
checkpoint from another config would quietly restart training. These restores are strict: a
checkpoint that does not match this config, or cannot be read, is a UserError.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil

import tensorflow as tf
from absl import logging as absl_logging

from distributed_sac.errors import DiskFull, UserError, first_line, is_disk_full, one_line


class LearnerCheckpoints:
    """Saves to and restores from `directory` (the newest `max_to_keep` are kept)."""

    def __init__(
        self, directory: str, agent, train_step: tf.Variable, replay, max_to_keep: int = 3
    ):
        self.directory = directory
        self._checkpoint = tf.train.Checkpoint(
            agent=agent, train_step=train_step, learner_replay=replay
        )
        # CheckpointManager writes the data files first and the index last: a crash mid-save
        # leaves the previous checkpoint as the latest.
        self._manager = tf.train.CheckpointManager(
            self._checkpoint, self.directory, max_to_keep=max_to_keep
        )

    @property
    def latest(self) -> str | None:
        return self._manager.latest_checkpoint

    def latest_is_at(self, train_step: int) -> bool:
        """Whether the newest checkpoint is ckpt-<train_step>."""
        return self.latest == os.path.join(self.directory, f"ckpt-{train_step}")

    def save(self, train_step: int) -> str:
        """Writes checkpoint ckpt-<train_step> and returns its path. On a full disk, removes
        what it wrote of it and raises DiskFull: the previous checkpoint stays the latest."""
        try:
            return self._manager.save(checkpoint_number=train_step)
        except (tf.errors.OpError, OSError) as error:
            if not is_disk_full(error):
                raise
            prefix = os.path.join(self.directory, f"ckpt-{train_step}")
            if prefix not in self._manager.checkpoints:  # never one a restore could use
                # TF writes the shards under <prefix>_temp/ and renames them to <prefix>.*.
                for partial in glob.glob(glob.escape(prefix) + "[._]*"):
                    if os.path.isdir(partial):
                        shutil.rmtree(partial, ignore_errors=True)
                    else:
                        os.remove(partial)
            raise DiskFull(
                f"no space left on device writing checkpoint {prefix}; the latest complete "
                f"checkpoint is still {self.latest}: free space, then start the run again"
            ) from None

    def restore_latest(self) -> str | None:
        """Restores the newest readable checkpoint and returns its path; None when there is none.

        A newest one that cannot be read (a kill or a full disk mid-write, corruption) is
        skipped for the one before, with a warning; one that does not match this config is an
        error (the older ones were written by the same config). Call after every variable
        exists (optimizer slots included), so that every saved value must find its variable
        now rather than be deferred.
        """
        paths = list(reversed(self._manager.checkpoints))
        if not paths:
            return None
        for index, path in enumerate(paths):
            try:
                self._restore(path)
                return path
            except _Unreadable as error:
                if index + 1 < len(paths):
                    absl_logging.warning(
                        "checkpoint %s cannot be read (%s); falling back to %s",
                        path,
                        error,
                        paths[index + 1],
                    )
                    continue
                raise UserError(
                    f"cannot read checkpoint {path} (corrupted?): {error}"
                    + (f"; nor the newer {', '.join(paths[:index])}" if index else "")
                ) from None

    def _restore(self, path: str) -> None:
        # A mismatch makes TF log every unmatched object before raising; our one line says it.
        tf_logger = logging.getLogger("tensorflow")
        level = tf_logger.level
        tf_logger.setLevel(logging.CRITICAL)
        try:
            status = self._checkpoint.restore(path)
            status.assert_existing_objects_matched()
            status.assert_consumed()
            tf_logger.setLevel(level)
        except (AssertionError, ValueError) as error:
            # The logger stays quiet: TF would list the unmatched objects again at exit.
            raise UserError(
                f"checkpoint {path} does not match this config: {first_line(error)}; "
                "use the gin config it was written with, or another --root_dir"
            ) from None
        # A truncated data file ("Read less bytes than requested") surfaces as an IndexError.
        except (tf.errors.OpError, OSError, IndexError) as error:
            tf_logger.setLevel(level)
            raise _Unreadable(one_line(error)[:300]) from None


class _Unreadable(Exception):
    """A checkpoint's files cannot be read."""
