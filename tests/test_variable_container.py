"""The variables table is TF-Agents': its ReverbVariableContainer, unmodified, follows this
learner, so a TF-Agents user's own actor can act with the weights this learner trains."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.experimental.distributed import reverb_variable_container as tfa_container
from tf_agents.policies import greedy_policy
from tf_agents.trajectories import time_step as ts

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from tests.conftest import SMOKE_GIN, read, reports, start_server


def _observations(builder, count):
    env = builder.make_env(seed=3)
    spec = env.action_spec()
    rng = np.random.default_rng(3)
    time_step, observations = env.reset(), []
    while len(observations) < count:
        observations.append(time_step.observation)
        time_step = env.step(rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(spec.dtype))
    env.close()
    return observations


@pytest.mark.slow
def test_reverb_variable_container_follows_the_learner(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path)
    common = ["--gin_file", SMOKE_GIN, "--replay_server_address", address]
    learner_log = tmp_path / "learner.log"
    learner = processes.role("learner", [*common, "--root_dir", str(tmp_path / "run")], learner_log)
    collector = processes.role("collector", [*common, "--task", "0"], tmp_path / "collector.log")
    assert learner.wait(timeout=300) == 0, read(learner_log)[-3000:]
    assert collector.wait(timeout=120) == 0
    assert [r["train_step"] for r in reports(learner_log, "learner_done")] == [300]

    # A TF-Agents policy built from the same gin, and TF-Agents' container, as its docs use them.
    builder = Builder(load_gin([SMOKE_GIN], []))
    tfa_policy = builder.make_policy()
    train_step = tf.Variable(-1, dtype=tf.int64)
    container = tfa_container.ReverbVariableContainer(address)
    variables = {
        tfa_container.POLICY_KEY: tfa_policy.variables(),
        tfa_container.TRAIN_STEP_KEY: train_step,
    }
    ours = builder.make_acting_policy(greedy=True)
    before = [v.numpy().copy() for v in tfa_policy.variables()]
    container.update(variables)
    assert builder.make_weight_client(address, ours.tf_variables).pull() == 300
    ours.sync()
    assert int(train_step.numpy()) == 300
    changed = 0
    for theirs, mine, initial in zip(tfa_policy.variables(), ours.tf_variables, before):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
        changed += not np.array_equal(theirs.numpy(), initial)
    assert changed == len(before)  # every variable came from the learner, none kept its init

    tfa_greedy = greedy_policy.GreedyPolicy(tfa_policy)
    for observation in _observations(builder, 20):
        want = tfa_greedy.action(ts.restart(tf.constant(observation[None]), batch_size=1))
        have = ours.action(ts.restart(observation)).action
        np.testing.assert_allclose(have, want.action[0].numpy(), rtol=1e-4, atol=1e-5)


def test_weights_pushed_by_the_container_reach_our_actors(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path)
    builder = Builder(load_gin([SMOKE_GIN], []))
    tfa_policy = builder.make_policy()
    rng = np.random.default_rng(5)
    for variable in tfa_policy.variables():
        variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    container = tfa_container.ReverbVariableContainer(address)
    container.push(
        {
            tfa_container.POLICY_KEY: tfa_policy.variables(),
            tfa_container.TRAIN_STEP_KEY: tf.constant(7, tf.int64),
        }
    )
    ours = builder.make_acting_policy()
    assert builder.make_weight_client(address, ours.tf_variables).pull() == 7
    for theirs, mine in zip(tfa_policy.variables(), ours.tf_variables):
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())
