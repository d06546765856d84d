"""Packed (t, t+1) pairs: what the learner samples is exactly what a collector wrote."""

import numpy as np
import reverb
import tensorflow as tf
from tf_agents.policies import random_py_policy
from tf_agents.trajectories import trajectory

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.replay import tables
from distributed_sac.replay.transitions import TransitionPacking
from tests.conftest import SMOKE_GIN


def _trajectories(builder, num_steps):
    env = builder.make_env(seed=3)
    policy = random_py_policy.RandomPyPolicy(env.time_step_spec(), env.action_spec(), seed=3)
    time_step = env.reset()
    steps = []
    for _ in range(num_steps):
        action_step = policy.action(time_step)
        next_time_step = env.step(action_step.action)
        steps.append(trajectory.from_transition(time_step, action_step, next_time_step))
        time_step = next_time_step
    env.close()
    return steps


def _flat(traj):
    return [np.asarray(field) for field in tf.nest.flatten(traj)]


def _pair_key(first, second) -> bytes:
    return np.concatenate([field.reshape(-1) for field in _flat(first) + _flat(second)]).tobytes()


def test_pack_then_unpack_restores_every_field_with_its_dtype():
    builder = Builder(load_gin([SMOKE_GIN], []))
    spec = builder.make_policy().trajectory_spec
    packing = TransitionPacking(spec)
    for traj in _trajectories(builder, 5):
        restored = packing.unpack(tf.constant(packing.pack(traj)))
        for want, have, field_spec in zip(_flat(traj), _flat(restored), tf.nest.flatten(spec)):
            assert have.dtype == field_spec.dtype.as_numpy_dtype
            np.testing.assert_array_equal(have, want)
    assert packing.describe().startswith("step_type 1 + observation 28 + action 8")


def test_learner_dataset_yields_the_pairs_collectors_wrote():
    config = load_gin(
        [SMOKE_GIN],
        # A feed that holds all 247 pairs (smoke.gin's slack is 100).
        [
            "RunConfig.initial_collect_steps = 10",
            "RunConfig.batch_size = 16",
            "RunConfig.rate_limiter_slack_steps = 1000",
        ],
    )
    builder = Builder(config)
    server = reverb.Server(builder.make_tables())
    try:
        address = f"localhost:{server.port}"
        client = builder.connect(address)
        writer = builder.make_experience_writer(client)
        steps = _trajectories(builder, 250)  # smoke episodes end at 100 steps
        for traj in steps:
            writer.write(traj)
        writer.close()
        written_pairs = {_pair_key(a, b) for a, b in zip(steps, steps[1:]) if not a.is_boundary()}
        assert writer.items_created == len(written_pairs) == 247

        replay = builder.make_learner_replay()
        feed = builder.make_feed_reader(address)
        assert feed.available() == 247
        replay.add(feed.take(feed.available()))
        assert feed.available() == 0  # each pair taken exactly once
        assert replay.size == 247
        assert tables.table_sizes(client)[tables.EXPERIENCE_TABLE] == 247
        experience, _ = next(iter(builder.make_dataset(replay)))
        assert experience.observation.shape == (16, 2, 28)
        assert experience.step_type.dtype == tf.int32
        for i in range(16):
            pair = tf.nest.map_structure(lambda field, i=i: field[i].numpy(), experience)
            first = tf.nest.map_structure(lambda field: field[0], pair)
            second = tf.nest.map_structure(lambda field: field[1], pair)
            assert _pair_key(first, second) in written_pairs
    finally:
        server.stop()
