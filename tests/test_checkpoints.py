"""Learner checkpoints: a newest checkpoint that cannot be read falls back to the one before."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from distributed_sac.errors import UserError
from distributed_sac.learner.checkpoints import LearnerCheckpoints
from distributed_sac.learner.replay import LearnerReplay


class _Agent(tf.Module):
    def __init__(self):
        super().__init__()
        self.weights = tf.Variable(np.zeros(4, np.float32))


def _learner_state():
    """A stand-in agent, train step and replay: real TF variables, checkpointed as the
    learner's are."""
    return _Agent(), tf.Variable(0, dtype=tf.int64), LearnerReplay(8, (2, 3))


def _save_at(directory, steps):
    agent, train_step, replay = _learner_state()
    checkpoints = LearnerCheckpoints(str(directory), agent, train_step, replay)
    for step in steps:
        agent.weights.assign(np.full(4, step, np.float32))
        train_step.assign(step)
        checkpoints.save(step)


def _corrupt(directory, step):
    for data in Path(directory).glob(f"ckpt-{step}.data-*"):
        data.write_bytes(os.urandom(data.stat().st_size))


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path, caplog):
    _save_at(tmp_path, [100, 200])
    _corrupt(tmp_path, 200)
    agent, train_step, replay = _learner_state()
    with caplog.at_level(logging.WARNING):
        restored = LearnerCheckpoints(str(tmp_path), agent, train_step, replay).restore_latest()
    assert restored == str(tmp_path / "ckpt-100")
    assert int(train_step.numpy()) == 100
    np.testing.assert_array_equal(agent.weights.numpy(), np.full(4, 100, np.float32))
    warning = " ".join(record.getMessage() for record in caplog.records)
    assert f"checkpoint {tmp_path}/ckpt-200 cannot be read" in warning
    assert f"falling back to {tmp_path}/ckpt-100" in warning


def test_a_truncated_newest_checkpoint_falls_back_too(tmp_path):
    # A kill or a full disk mid-write leaves a short file.
    _save_at(tmp_path, [100, 200])
    (data,) = Path(tmp_path).glob("ckpt-200.data-*")
    data.write_bytes(data.read_bytes()[:10])
    agent, train_step, replay = _learner_state()
    restored = LearnerCheckpoints(str(tmp_path), agent, train_step, replay).restore_latest()
    assert restored == str(tmp_path / "ckpt-100") and int(train_step.numpy()) == 100


def test_no_readable_checkpoint_is_one_error_naming_them(tmp_path):
    _save_at(tmp_path, [100, 200])
    _corrupt(tmp_path, 100)
    _corrupt(tmp_path, 200)
    agent, train_step, replay = _learner_state()
    with pytest.raises(UserError) as raised:
        LearnerCheckpoints(str(tmp_path), agent, train_step, replay).restore_latest()
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read checkpoint {tmp_path}/ckpt-100 (corrupted?): ")
    assert message.endswith(f"; nor the newer {tmp_path}/ckpt-200")


def test_a_checkpoint_of_another_config_is_not_skipped(tmp_path):
    _save_at(tmp_path, [100])
    other = _Agent()
    other.weights = tf.Variable(np.zeros(5, np.float32))  # another shape
    with pytest.raises(UserError, match="ckpt-100 does not match this config"):
        LearnerCheckpoints(
            str(tmp_path), other, tf.Variable(0, dtype=tf.int64), LearnerReplay(8, (2, 3))
        ).restore_latest()
