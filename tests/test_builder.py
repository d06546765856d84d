"""Every role derives the same specs, signatures and tables from one config."""

import pytest
import reverb
import tensorflow as tf
import tree
from tf_agents.train.utils import train_utils

from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.errors import UserError
from distributed_sac.replay import tables
from distributed_sac.replay.transitions import PAIR_COLUMN
from distributed_sac.replay.weights import WeightClient, weights_signature
from tests.conftest import PENDULUM_GIN, SMOKE_GIN


def _flat_specs(nest):
    return [(spec.shape.as_list(), spec.dtype.name) for spec in tree.flatten(nest)]


def test_roles_derive_identical_signatures_from_one_config():
    config = load_gin([SMOKE_GIN], [])
    server_side = Builder(config).signatures()
    collector_side = Builder(config).signatures()
    assert set(server_side) == {tables.EXPERIENCE_TABLE, tables.FEED_TABLE, tables.VARIABLES_TABLE}
    for table in server_side:
        assert _flat_specs(server_side[table]) == _flat_specs(collector_side[table])
        tree.assert_same_structure(server_side[table], collector_side[table])


def test_learner_agent_matches_the_signatures_other_roles_use():
    config = load_gin([SMOKE_GIN], [])
    builder = Builder(config)
    agent = builder.make_agent(train_utils.create_train_step())
    signatures = builder.signatures()
    assert _flat_specs(tables.experience_signature(agent.collect_data_spec)) == _flat_specs(
        signatures[tables.EXPERIENCE_TABLE]
    )
    pushed = weights_signature(agent.collect_policy.variables())
    assert _flat_specs(pushed) == _flat_specs(signatures[tables.VARIABLES_TABLE])


def test_minitaur_specs_and_experience_items_hold_pairs():
    config = load_gin([SMOKE_GIN], [])
    time_step_spec, action_spec = Builder(config).specs
    assert time_step_spec.observation.shape == (28,)
    assert action_spec.shape == (8,)
    experience = Builder(config).signatures()[tables.EXPERIENCE_TABLE]
    # One packed (t, t+1) pair: step_type 1 + observation 28 + action 8 + next_step_type 1
    # + reward 1 + discount 1 values per step, and the pair's number (4).
    assert experience[PAIR_COLUMN].shape == (2, 44)


def test_other_env_gives_other_signature():
    minitaur = Builder(load_gin([SMOKE_GIN], [])).signatures()[tables.EXPERIENCE_TABLE]
    pendulum = Builder(load_gin([PENDULUM_GIN], [])).signatures()[tables.EXPERIENCE_TABLE]
    assert _flat_specs(minitaur) != _flat_specs(pendulum)


def test_tables_follow_the_config():
    config = load_gin([SMOKE_GIN], [])
    experience, feed, variables = Builder(config).make_tables()
    assert experience.name == tables.EXPERIENCE_TABLE
    assert feed.name == tables.FEED_TABLE
    assert variables.name == tables.VARIABLES_TABLE
    server = reverb.Server([experience, feed, variables])
    try:
        info = reverb.Client(f"localhost:{server.port}").server_info()
        assert info[tables.EXPERIENCE_TABLE].max_size == config.replay_capacity
        assert info[tables.VARIABLES_TABLE].max_size == 1
        assert info[tables.EXPERIENCE_TABLE].sampler_options.uniform
        assert info[tables.EXPERIENCE_TABLE].remover_options.fifo
        # The feed is a queue: oldest first, each item taken once.
        assert info[tables.FEED_TABLE].sampler_options.fifo
        assert info[tables.FEED_TABLE].remover_options.fifo
        assert info[tables.FEED_TABLE].max_times_sampled == 1
    finally:
        server.stop()


def test_feed_is_a_queue_of_the_slack_when_the_ratio_is_set():
    config = load_gin([SMOKE_GIN], ["RunConfig.updates_per_env_step = 1.0"])
    limiter = tables.make_feed_rate_limiter(config)
    assert isinstance(limiter, reverb.rate_limiters.Queue)
    assert tables.feed_size(config) == config.rate_limiter_slack_steps


def test_feed_never_blocks_inserts_when_no_ratio_is_set():
    config = load_gin([SMOKE_GIN], ["RunConfig.updates_per_env_step = None"])
    limiter = tables.make_feed_rate_limiter(config)
    assert isinstance(limiter, reverb.rate_limiters.MinSize)
    assert tables.feed_size(config) == config.replay_capacity


def test_weights_round_trip_through_the_variables_table():
    config = load_gin([SMOKE_GIN], [])
    builder = Builder(config)
    server = reverb.Server(builder.make_tables())
    try:
        client = builder.connect(f"localhost:{server.port}")
        source = builder.make_policy()
        for variable in source.variables():
            variable.assign(tf.random.normal(variable.shape))
        step = tf.Variable(42, dtype=tf.int64)
        target = builder.make_policy()
        receiver = WeightClient(client, target.variables(), train_step=None)
        assert receiver.pull() is None  # nothing pushed yet
        WeightClient(client, source.variables(), step).push()
        assert receiver.pull() == 42
        for a, b in zip(source.variables(), target.variables()):
            assert (a.numpy() == b.numpy()).all()
    finally:
        server.stop()


def _optimizers(agent) -> tuple:
    return (agent._actor_optimizer, agent._critic_optimizer, agent._alpha_optimizer)


def _learning_rates(agent, step: int) -> list[float]:
    """Each optimizer's learning rate after `step` train steps (each counts its own steps)."""
    rates = []
    for optimizer in _optimizers(agent):
        optimizer.iterations.assign(step)
        rate = optimizer.learning_rate  # a schedule: the rate as a function of that count
        rates.append(round(float(rate(optimizer.iterations) if callable(rate) else rate), 9))
    return rates


def test_learning_rates_fall_linearly_over_the_decay_steps_when_asked():
    rates = ["actor = 1e-3", "critic = 2e-3", "alpha = 4e-3"]
    bindings = [f"make_agent.{name.replace(' =', '_learning_rate =')}" for name in rates]
    config = load_gin([SMOKE_GIN], [*bindings, "make_agent.learning_rate_decay_steps = 100"])
    agent = Builder(config).make_agent(train_utils.create_train_step())
    assert _learning_rates(agent, 0) == [1e-3, 2e-3, 4e-3]
    assert _learning_rates(agent, 50) == [0.00055, 0.0011, 0.0022]  # halfway to 0.1 of each
    assert _learning_rates(agent, 100) == _learning_rates(agent, 1000) == [1e-4, 2e-4, 4e-4]
    constant = Builder(load_gin([SMOKE_GIN], bindings)).make_agent(train_utils.create_train_step())
    assert _learning_rates(constant, 1000) == [1e-3, 2e-3, 4e-3]


@pytest.mark.parametrize(
    "binding, message",
    [
        (
            "make_agent.learning_rate_decay_steps = 0",
            "make_agent.learning_rate_decay_steps must be None or an integer of at least 1, got 0",
        ),
        (
            "make_agent.learning_rate_decay_steps = 1e5",
            "make_agent.learning_rate_decay_steps must be None or an integer of at least 1, "
            "got 100000.0",
        ),
        (
            "make_agent.final_learning_rate_fraction = 1.5",
            "make_agent.final_learning_rate_fraction must be from 0 to 1, got 1.5",
        ),
        (
            "make_critic_network.dropout_rate = 0.01",
            "make_critic_network.dropout_rate needs make_critic_network.layer_norm",
        ),
    ],
)
def test_bad_network_and_agent_bindings_are_one_line_when_the_config_loads(binding, message):
    with pytest.raises(UserError) as raised:
        load_gin([SMOKE_GIN], [binding])
    assert str(raised.value) == message
