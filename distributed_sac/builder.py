"""One builder, made from the run config, that every role asks for its parts.

Each role derives specs, table signatures, policy and agent through these functions from the
same gin config, so a role on another host needs nothing but the server address. A role is then
flags -> config -> builder -> its loop.
"""

from __future__ import annotations

import functools

import reverb
import tensorflow as tf
from tf_agents.train import learner as tfa_learner
from tf_agents.train.utils import spec_utils, train_utils

from distributed_sac.config import RunConfig
from distributed_sac.errors import UserError
from distributed_sac.learner.parts import LearnerParts
from distributed_sac.learner.replay import LearnerReplay, NStepReturns
from distributed_sac.replay import connection, tables
from distributed_sac.replay.feed import FeedReader
from distributed_sac.replay.transitions import PAIR_COLUMN, TransitionPacking
from distributed_sac.replay.weights import WeightClient, weights_signature
from distributed_sac.replay.writer import ExperienceWriter
from distributed_sac.sac import agent as agent_lib
from distributed_sac.sac import envs
from distributed_sac.sac.numpy_policy import NumpyActorPolicy


class Builder:
    def __init__(self, config: RunConfig):
        self.config = config

    # ------------------------------------------------------------ specs and signatures

    @functools.cached_property
    def specs(self):
        """(time_step_spec, action_spec) as tensor specs, read off one throwaway environment."""
        env = self.make_env()
        try:
            _, action_spec, time_step_spec = spec_utils.get_tensor_specs(env)
        finally:
            env.close()
        return time_step_spec, action_spec

    @functools.cached_property
    def _reference_policy(self):
        """A policy built once for its specs and variable shapes (never acted with)."""
        return self.make_policy()

    @property
    def collect_data_spec(self):
        """The spec of one trajectory step, as collectors write it and the learner trains on."""
        return self._reference_policy.trajectory_spec

    def signatures(self) -> dict:
        """Both tables' signatures, keyed by table name."""
        return {
            tables.EXPERIENCE_TABLE: tables.experience_signature(self.collect_data_spec),
            tables.FEED_TABLE: tables.experience_signature(self.collect_data_spec),
            tables.VARIABLES_TABLE: weights_signature(self._reference_policy.variables()),
        }

    # ------------------------------------------------------------ the parts roles use

    def make_env(self, seed=None):
        return envs.load_env(self.config, seed=seed)

    def make_tables(self) -> list:
        return tables.make_tables(
            self.config, self.collect_data_spec, self._reference_policy.variables()
        )

    def connect(self, address: str, table_names=tables.TABLES) -> reverb.Client:
        """A client to a server whose named tables match this config; UserError otherwise
        (also when it stays unreachable for connect_timeout_s)."""
        client = connection.connect(address, self.config.connect_timeout_s)
        layout = self.packing.describe()
        for table in table_names:
            layout_hint = layout if table in tables.EXPERIENCE_TABLES else ""
            tables.check_signature(client, table, self.signatures()[table], layout_hint)
        return client

    def make_experience_writer(self, client: reverb.Client, numbering=None) -> ExperienceWriter:
        """A writer of pairs numbered by `numbering` (a collector's PairNumbering; a new one
        when None)."""
        return ExperienceWriter(client, self.collect_data_spec, numbering=numbering)

    def make_weight_client(
        self, address: str, policy_variables, train_step=None, update_period: int = 1, accept=None
    ) -> WeightClient:
        """A weight client on the server at `address` (learner: pushes `train_step` with the
        weights; actors: pull into `policy_variables` every `update_period` calls of update(),
        weights whose train step `accept` refuses left alone)."""
        client = self.connect(address, (tables.VARIABLES_TABLE,))
        return WeightClient(
            client,
            policy_variables,
            train_step,
            update_period,
            self.config.server_call_timeout_s,
            accept,
        )

    def make_policy(self):
        """The stochastic policy the agent trains, as a TF-Agents policy of its own variables
        (same order and shapes as the learner's `agent.collect_policy.variables()`)."""
        return agent_lib.make_policy(*self.specs)

    def make_acting_policy(self, greedy: bool = False, seed=None) -> NumpyActorPolicy:
        """The actor in numpy (greedy: its mode), over TF variables that a weight client pulls
        into (`.tf_variables`); `sync()` it after a pull."""
        return NumpyActorPolicy(self.make_policy(), greedy=greedy, seed=seed)

    def make_agent(self, train_step: tf.Variable):
        """The learner's SacAgent; call inside the distribution strategy's scope."""
        return agent_lib.make_agent(*self.specs, train_step)

    def make_learner(self, root_dir: str, strategy: tf.distribute.Strategy) -> LearnerParts:
        """The learner's agent, train step and TF-Agents Learner, made in the strategy's scope,
        and its replay, made outside it (one copy on the host, not one per replica); the
        Learner's dataset samples that replay, each replica its share of the batch."""
        config = self.config
        replay = self.make_learner_replay()
        replica_batch_size = _replica_batch_size(config.batch_size, strategy.num_replicas_in_sync)
        with strategy.scope():
            train_step = train_utils.create_train_step()
            agent = self.make_agent(train_step)
        learner = tfa_learner.Learner(
            root_dir,  # TF-Agents writes its summaries to <root_dir>/train (layout.TRAIN)
            train_step,
            agent,
            experience_dataset_fn=lambda: self.make_dataset(
                replay, replica_batch_size, agent_lib.discount_factor(agent)
            ),
            after_train_strategy_step_fn=agent_lib.policy_summaries(
                agent, train_step, config.summary_interval
            ),
            # Checkpoints are ours (LearnerCheckpoints): strict restores, and saves only of
            # finite weights. The Learner has built every variable, optimizer slots included,
            # by now.
            checkpoint_interval=0,
            summary_interval=config.summary_interval,
            strategy=strategy,
        )
        return LearnerParts(agent=agent, train_step=train_step, learner=learner, replay=replay)

    @functools.cached_property
    def packing(self) -> TransitionPacking:
        return TransitionPacking(self.collect_data_spec)

    def make_feed_reader(self, address: str) -> FeedReader:
        """The learner's reader of the feed table at `address` (see replay/feed)."""
        client = self.connect(address, (tables.FEED_TABLE,))
        shape = self.packing.signature()[PAIR_COLUMN].shape
        return FeedReader(client, address, shape, self.config.server_call_timeout_s)

    def make_learner_replay(self) -> LearnerReplay:
        """The learner's in-memory replay of `replay_capacity` pairs (see learner_replay)."""
        shape = self.packing.signature()[PAIR_COLUMN].shape
        return LearnerReplay(self.config.replay_capacity, shape, tables.feed_size(self.config))

    def make_dataset(
        self, replay: LearnerReplay, batch_size=None, gamma: float | None = None
    ) -> tf.data.Dataset:
        """Batches of Trajectory [batch, 2, ...] sampled uniformly from the learner's replay;
        `batch_size` defaults to the config's (a replica of a distribution strategy takes its
        share). With RunConfig.n_step_returns above 1 each pair is an n-step one, discounted by
        the agent's `gamma`."""
        batch_size = batch_size or self.config.batch_size
        returns = None
        if self.config.n_step_returns > 1:
            returns = NStepReturns(
                self.config.n_step_returns,
                gamma,
                self.packing.position("reward"),
                self.packing.position("discount"),
                self.packing.fields_width,
            )
        return replay.dataset(
            batch_size, self.packing.unpack, self.config.dataset_prefetch_batches, returns
        )


def _replica_batch_size(batch_size: int, replicas: int) -> int:
    if batch_size % replicas:
        raise UserError(
            f"RunConfig.batch_size ({batch_size}) must be divisible by the strategy's "
            f"{replicas} replicas"
        )
    return batch_size // replicas
