"""The TF-Agents tutorial's synchronous SAC loop, as its notebook writes it, on a run config.

One process: an in-process Reverb table, TF-Agents' Actor collecting one step per iteration with
the collect policy (PyTFEagerPolicy), then `Learner.run(iterations=1)` over a prefetched dataset
of (t, t+1) pairs, with the notebook's triggers (policy SavedModels, steps/s log).
benchmarks.throughput times it; benchmarks.learning trains it next to the cluster.
"""

from __future__ import annotations

import os

import reverb
import tensorflow as tf
from tf_agents.policies import py_tf_eager_policy, random_py_policy
from tf_agents.replay_buffers import reverb_replay_buffer, reverb_utils
from tf_agents.train import actor, learner, triggers
from tf_agents.train.utils import train_utils

from distributed_sac.builder import Builder
from distributed_sac.replay import tables


class TutorialLoop:
    """The notebook's objects, built from `config`; `seed` seeds TensorFlow and the collect env."""

    def __init__(self, config, root_dir: str, seed: int | None = None):
        if seed is not None:
            tf.keras.utils.set_random_seed(seed)  # TF, and Python's and numpy's generators
        builder = Builder(config)
        self._env = builder.make_env(seed=seed)
        self.train_step = train_utils.create_train_step()
        self.agent = builder.make_agent(self.train_step)

        table = reverb.Table(
            "uniform_table",
            max_size=config.replay_capacity,
            sampler=reverb.selectors.Uniform(),
            remover=reverb.selectors.Fifo(),
            rate_limiter=reverb.rate_limiters.MinSize(1),
        )
        self._server = reverb.Server([table])
        replay_buffer = reverb_replay_buffer.ReverbReplayBuffer(
            self.agent.collect_data_spec,
            sequence_length=2,
            table_name="uniform_table",
            local_server=self._server,
        )
        self._client = replay_buffer.py_client
        dataset = replay_buffer.as_dataset(
            sample_batch_size=config.batch_size, num_steps=2
        ).prefetch(50)
        self._observer = reverb_utils.ReverbAddTrajectoryObserver(
            self._client, "uniform_table", sequence_length=2, stride_length=1
        )
        self._random_actor = actor.Actor(
            self._env,
            random_py_policy.RandomPyPolicy(
                self._env.time_step_spec(), self._env.action_spec(), seed=seed
            ),
            self.train_step,
            steps_per_run=config.initial_collect_steps,
            observers=[self._observer],
        )
        self._collect_actor = actor.Actor(
            self._env,
            py_tf_eager_policy.PyTFEagerPolicy(self.agent.collect_policy, use_tf_function=True),
            self.train_step,
            steps_per_run=1,
            metrics=actor.collect_metrics(10),
            summary_dir=os.path.join(root_dir, learner.TRAIN_DIR),
            observers=[self._observer],
        )
        self._learner = learner.Learner(
            root_dir,
            self.train_step,
            self.agent,
            lambda: dataset,
            triggers=[
                triggers.PolicySavedModelTrigger(
                    os.path.join(root_dir, learner.POLICY_SAVED_MODEL_DIR),
                    self.agent,
                    self.train_step,
                    interval=config.policy_save_interval,
                ),
                triggers.StepPerSecondLogTrigger(self.train_step, interval=1000),
            ],
        )

    def collect_initial(self) -> None:
        """The notebook's initial collection: `initial_collect_steps` random steps."""
        self._random_actor.run()

    def iterate(self, count: int) -> None:
        """`count` iterations of: collect one step, train one step."""
        for _ in range(count):
            self._collect_actor.run()
            self._learner.run(iterations=1)

    def items_inserted(self) -> int:
        """Experience items the table has taken in, read as the cluster's evaluator reads its
        env_steps (the notebook's table has the name of the cluster's experience table)."""
        self._observer.flush()
        return tables.items_inserted(self._client)

    def close(self) -> None:
        self._observer.close()
        self._server.stop()
