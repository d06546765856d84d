"""One builder, made from the run config, that every role asks for its parts.

Each role derives specs, table signatures, policy and agent through these functions from the
same gin config, so a role on another host needs nothing but the server address.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tf_agents.policies import greedy_policy, py_tf_eager_policy
from tf_agents.train.utils import spec_utils

from distributed_sac import agent as agent_lib
from distributed_sac import envs, replay
from distributed_sac.config import RunConfig


class Builder:
    def __init__(self, config: RunConfig):
        self.config = config

    @functools.cached_property
    def specs(self):
        """(time_step_spec, action_spec) as tensor specs, read off one throwaway environment."""
        env = self.make_env()
        try:
            _, action_spec, time_step_spec = spec_utils.get_tensor_specs(env)
        finally:
            env.close()
        return time_step_spec, action_spec

    def make_env(self, seed=None):
        return envs.load_env(self.config, seed=seed)

    def make_policy(self):
        """The stochastic collect policy (a TF policy), weights to be pulled from the server."""
        return agent_lib.make_policy(*self.specs)

    def make_agent(self, train_step: tf.Variable):
        return agent_lib.make_agent(*self.specs, train_step)

    @staticmethod
    def py_policy(tf_policy, greedy: bool = False):
        if greedy:
            tf_policy = greedy_policy.GreedyPolicy(tf_policy)
        return py_tf_eager_policy.PyTFEagerPolicy(tf_policy, use_tf_function=True)

    def signatures(self) -> dict:
        """Both tables' signatures, keyed by table name."""
        policy = self.make_policy()
        return {
            replay.EXPERIENCE_TABLE: replay.experience_signature(policy.trajectory_spec),
            replay.VARIABLES_TABLE: replay.weights_signature(policy.variables()),
        }

    def make_tables(self):
        policy = self.make_policy()
        return replay.make_tables(self.config, policy.trajectory_spec, policy.variables())

    def connect(self, address: str, tables=(replay.EXPERIENCE_TABLE, replay.VARIABLES_TABLE)):
        """A client to a server whose named tables match this config; UserError otherwise."""
        client = replay.connect(address, self.config.connect_timeout_s)
        signatures = self.signatures()
        for table in tables:
            replay.check_signature(client, table, signatures[table])
        return client

    def make_dataset(self, address: str, collect_data_spec) -> tf.data.Dataset:
        """Batches of (t, t+1) pairs sampled from the experience table."""
        from tf_agents.replay_buffers import reverb_replay_buffer

        buffer = reverb_replay_buffer.ReverbReplayBuffer(
            collect_data_spec,
            sequence_length=replay.SEQUENCE_LENGTH,
            table_name=replay.EXPERIENCE_TABLE,
            server_address=address,
        )
        return buffer.as_dataset(
            sample_batch_size=self.config.batch_size, num_steps=replay.SEQUENCE_LENGTH
        ).prefetch(50)
