"""Collectors and the evaluator act in numpy: it must be TF-Agents' ActorPolicy, to the digit."""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.policies import greedy_policy
from tf_agents.trajectories import time_step as ts

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.sac.numpy_policy import NumpyActorPolicy
from tests.conftest import PENDULUM_GIN, SMOKE_GIN


def _randomized_policy(gin_file):
    builder = Builder(load_gin([gin_file], []))
    tf_policy = builder.make_policy()
    rng = np.random.default_rng(7)
    for variable in tf_policy.variables():  # biases start at zero; make every weight count
        variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    return builder, tf_policy


def _observations(builder, count):
    env = builder.make_env(seed=1)
    spec = env.action_spec()
    time_step, observations = env.reset(), []
    rng = np.random.default_rng(1)
    while len(observations) < count:
        observations.append(time_step.observation)
        time_step = env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype))
    env.close()
    return observations


@pytest.mark.parametrize("gin_file", [SMOKE_GIN, PENDULUM_GIN])
def test_numpy_policy_matches_the_tf_actor_policy(gin_file):
    builder, tf_policy = _randomized_policy(gin_file)
    stochastic = NumpyActorPolicy(tf_policy, seed=0)
    greedy = NumpyActorPolicy(tf_policy, greedy=True)
    tf_greedy = greedy_policy.GreedyPolicy(tf_policy)
    for observation in _observations(builder, 20):
        batched = ts.restart(tf.constant(observation[None]), batch_size=1)
        distribution = tf_policy.distribution(batched).action
        loc, scale = stochastic.distribution_parameters(observation)
        np.testing.assert_allclose(
            loc, distribution.input_distribution.loc[0], rtol=1e-4, atol=1e-5
        )
        np.testing.assert_allclose(
            scale, distribution.input_distribution.stddev()[0], rtol=1e-4, atol=1e-6
        )
        want = tf_greedy.action(batched).action[0].numpy()
        have = greedy.action(ts.restart(observation)).action
        assert have.dtype == want.dtype and have.shape == want.shape
        np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)
        sampled = stochastic.action(ts.restart(observation)).action
        spec = tf_policy.action_spec
        assert np.all(sampled >= spec.minimum) and np.all(sampled <= spec.maximum)


def test_sync_takes_new_weights_and_samples_vary():
    builder, tf_policy = _randomized_policy(SMOKE_GIN)
    policy = NumpyActorPolicy(tf_policy, greedy=True)
    observation = _observations(builder, 1)[0]
    before = policy.action(ts.restart(observation)).action
    for variable in tf_policy.variables():
        variable.assign(variable * 0.5)
    assert np.array_equal(policy.action(ts.restart(observation)).action, before)
    policy.sync()
    assert not np.allclose(policy.action(ts.restart(observation)).action, before)
    stochastic = NumpyActorPolicy(tf_policy, seed=0)
    samples = [stochastic.action(ts.restart(observation)).action for _ in range(5)]
    assert len({sample.tobytes() for sample in samples}) == 5


def test_other_networks_are_refused():
    builder = Builder(load_gin([SMOKE_GIN], []))
    tf_policy = builder.make_policy()

    class Odd:
        action_spec = tf_policy.action_spec
        time_step_spec = tf_policy.time_step_spec

        @staticmethod
        def variables():
            return tf_policy.variables()[:-1]

    with pytest.raises(ValueError, match="not the project's MLP actor"):
        NumpyActorPolicy(Odd())
