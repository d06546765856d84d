"""One builder, made from the run config, that every role asks for its parts.

Each role derives specs, table signatures, policy and agent through these functions from the
same gin config, so a role on another host needs nothing but the server address.
"""

from __future__ import annotations

import functools

import tensorflow as tf
from tf_agents.train.utils import spec_utils

from distributed_sac import agent as agent_lib
from distributed_sac import envs, replay
from distributed_sac.config import RunConfig
from distributed_sac.numpy_policy import NumpyActorPolicy
from distributed_sac.transitions import PAIR_COLUMN, TransitionPacking


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
    def py_policy(tf_policy, greedy: bool = False, seed=None) -> NumpyActorPolicy:
        """The policy in numpy (greedy: its mode); `sync()` it after pulling weights."""
        return NumpyActorPolicy(tf_policy, greedy=greedy, seed=seed)

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
        layout = TransitionPacking(self.make_policy().trajectory_spec).describe()
        for table in tables:
            layout_hint = layout if table == replay.EXPERIENCE_TABLE else ""
            replay.check_signature(client, table, signatures[table], layout_hint)
        return client

    def make_dataset(self, address: str, collect_data_spec, batch_size=None) -> tf.data.Dataset:
        """Batches of (Trajectory [batch, 2, ...], sample info) from the experience table;
        `batch_size` defaults to the config's (a replica of a distribution strategy takes its
        share)."""
        batch_size = batch_size or self.config.batch_size
        import reverb

        packing = TransitionPacking(collect_data_spec)
        items = reverb.TrajectoryDataset(
            server_address=address,
            table=replay.EXPERIENCE_TABLE,
            dtypes={PAIR_COLUMN: tf.float32},
            shapes={PAIR_COLUMN: packing.signature()[PAIR_COLUMN].shape},
            max_in_flight_samples_per_worker=2 * batch_size,
        )
        return (
            items.batch(batch_size, drop_remainder=True)
            .map(lambda sample: (packing.unpack(sample.data[PAIR_COLUMN]), sample.info))
            .prefetch(self.config.dataset_prefetch_batches)
        )
