"""Collector role: steps its own environment with the collect policy and writes (t, t+1) pairs."""

from __future__ import annotations

import hashlib
import socket
from typing import NamedTuple

from absl import flags

from distributed_sac.acting.actor import Actor, EpisodeStatistics
from distributed_sac.builder import Builder
from distributed_sac.config import SEED_LIMIT, derived_seed
from distributed_sac.errors import UserError
from distributed_sac.learner.step_record import LearnerStep
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting
from distributed_sac.replay.transitions import PairNumbering
from distributed_sac.reports import report
from distributed_sac.runtime import cli
from distributed_sac.runtime.rates import WindowedRate

flags.DEFINE_string(
    "task",
    "0",
    "Unique collector id (an integer; seeds its environment and policy), or 'auto': derived "
    "from the hostname, distinct per container when replicas cannot be numbered.",
)
FLAGS = flags.FLAGS


def task_id(flag: str) -> int:
    """--task as an integer; 'auto' hashes the hostname (a container's id) to one."""
    if flag == "auto":
        digest = hashlib.sha256(socket.gethostname().encode()).digest()
        return int.from_bytes(digest[:4], "big") % 1_000_000
    bad = UserError(f"--task must be 'auto' or an integer from 0 to {SEED_LIMIT - 1}, got {flag!r}")
    try:
        task = int(flag)
    except ValueError:
        raise bad from None
    if not 0 <= task < SEED_LIMIT:  # it offsets the run's seed (config.derived_seed)
        raise bad
    return task


class ServerParts(NamedTuple):
    client: object  # experience table
    weights: object  # WeightClient on the variables table
    writer: object  # ExperienceWriter


class PolicyVersion:
    """Which weights the collector acts with, and its policy lag (train steps between the newest
    pushed weights and the ones acted with, read at each pull just before switching)."""

    def __init__(self):
        self.train_step: int | None = None
        self.versions: set[int] = set()
        self.lags: list[int] = []

    def pulled(self, train_step: int | None) -> bool:
        """Records a pull; True when these weights are new."""
        if train_step is None:
            return False
        if self.train_step is not None:
            self.lags.append(train_step - self.train_step)
        new = train_step != self.train_step
        self.train_step = train_step
        self.versions.add(train_step)
        return new

    def take_mean_lag(self) -> float | None:
        lag = round(sum(self.lags) / len(self.lags), 1) if self.lags else None
        self.lags.clear()
        return lag


class ProgressReport:
    """Observer: every `interval` env steps, a collector_progress report and TensorBoard's
    Throughput/EnvStepsPerSecond and Throughput/PolicyLagTrainSteps."""

    def __init__(self, collector: Collector, interval: int, summaries=None):
        self._collector = collector
        self._interval = interval
        self._summaries = summaries
        self._rate = WindowedRate()  # since the previous report
        self._rate.mark(0)

    def __call__(self, _transition) -> None:
        env_steps = self._collector.actor.env_steps + 1
        if env_steps % self._interval:
            return
        rate = self._rate.mark(env_steps)
        policy = self._collector.policy_version
        lag = policy.take_mean_lag()
        report(
            "collector_progress",
            task=self._collector.task,
            env_steps=env_steps,
            random_steps=self._collector.random_steps,
            env_steps_per_s=round(rate, 1),
            policy_train_step=policy.train_step,
            policy_lag=lag,
        )
        if self._summaries is not None:
            import tensorflow as tf

            with self._summaries.as_default(step=env_steps):
                tf.summary.scalar("Throughput/EnvStepsPerSecond", rate)
                if lag is not None:
                    tf.summary.scalar("Throughput/PolicyLagTrainSteps", lag)


class Collector:
    """Acts with random actions until the table holds the initial collection (a global budget),
    then with the newest pulled weights, until training is finished: with the learner's run
    directory (`run_dir`), once the learner's checkpoint of its final step is there; without,
    once the pulled weights carry the final train step (see learner/step_record.py)."""

    def __init__(self, builder: Builder, task: int, summaries=None, run_dir=None):
        from tf_agents.policies import random_py_policy

        config = builder.config
        self.task, self._config, self._builder = task, config, builder
        seed = derived_seed(config.seed, task)  # every collector explores differently
        env = builder.make_env(seed=seed)
        self._policy = builder.make_acting_policy(seed=seed)
        self._random_policy = random_py_policy.RandomPyPolicy(
            env.time_step_spec(), env.action_spec(), seed=seed
        )
        self.policy_version = PolicyVersion()
        self._learner_step = LearnerStep(run_dir, config.num_iterations)
        self.training_done = False
        self._numbering = PairNumbering()  # one for this process's writers, see transitions
        self.server = Reconnecting("collector", self._connect)
        self.random_steps = 0  # taken with random actions (the initial collection)
        self._initial_collect_done = False
        self._items_by_old_writers = 0  # writers replaced after a reconnect
        self.episode_statistics = EpisodeStatistics(
            lambda: self.actor.env_steps,
            summaries,
            lambda: f", policy train step {self.policy_version.train_step}",
        )
        observers = [
            lambda transition: self.server.parts.writer.write(transition),
            self.episode_statistics,
            ProgressReport(self, config.log_interval, summaries),
        ]
        self.actor = Actor(env, observers)

    def _connect(self) -> ServerParts:
        client = self._builder.connect(cli.FLAGS.replay_server_address, (tables.EXPERIENCE_TABLE,))
        weights = self._builder.make_weight_client(
            cli.variables_address(),
            self._policy.tf_variables,
            update_period=self._config.weight_pull_interval,
            accept=self._learner_step.acceptable,
        )
        writer = self._builder.make_experience_writer(client, self._numbering)
        return ServerParts(client, weights, writer)

    def _pull(self, every_call: bool) -> None:
        weights = self.server.parts.weights
        if every_call:
            weights.pull()
        elif not weights.update():
            return
        if self.policy_version.pulled(weights.train_step):
            self._policy.sync()
        # At pulls only: a file read each env step would cost more than the step.
        self.training_done = self._learner_step.finished(
            weights.newest_train_step, weights.train_step
        )

    def _step(self) -> None:
        if self.actor.env_steps % self._config.weight_pull_interval == 0:
            if not self._initial_collect_done:
                # The random-action budget is global: read how full the table already is.
                size = tables.table_sizes(self.server.parts.client)[tables.EXPERIENCE_TABLE]
                self._initial_collect_done = size >= self._config.initial_collect_steps
        self._pull(every_call=False)
        if self.training_done:
            return
        learned = self._initial_collect_done and self.policy_version.train_step is not None
        self.random_steps += not learned
        self.actor.step(self._policy if learned else self._random_policy)
        # Held back by the rate limiter: the learner is behind, or it has finished.
        while not self.server.parts.writer.wait_for_room(timeout_s=1.0):
            self._pull(every_call=True)
            if self.training_done:
                return

    def run(self) -> None:
        while not self.training_done:
            try:
                self._step()
            except Exception as error:
                self._items_by_old_writers += self.server.parts.writer.items_created
                self.server.recover(error)
                # The episode's pairs written before the loss may be gone: start a fresh one.
                self.actor.reset()

    def close(self) -> dict:
        """Sends what is left and closes the environment; the collector_done figures."""
        writer = self.server.parts.writer
        all_items_sent = writer.close()
        self.actor.env.close()
        return {
            "task": self.task,
            "env_steps": self.actor.env_steps,
            "random_steps": self.random_steps,
            "episodes": self.episode_statistics.episodes,
            "items_created": self._items_by_old_writers + writer.items_created,
            "all_items_sent": all_items_sent,
            "policy_versions": len(self.policy_version.versions),
            "last_policy_train_step": self.policy_version.train_step,
        }


def main() -> None:
    import tensorflow as tf

    task = task_id(FLAGS.task)
    config = cli.load_config()
    cli.set_tf_threads(config.actor_tf_threads)
    tf.random.set_seed(derived_seed(config.seed, task))
    run_dir = cli.run_dir("collector", required=False)
    summaries = run_dir and tf.summary.create_file_writer(run_dir.collect(task))
    collector = Collector(Builder(config), task, summaries, run_dir)
    collector.run()
    done = collector.close()
    if summaries is not None:
        summaries.flush()
    report("collector_done", **done)


def run() -> None:
    cli.run_role("collector", main)


if __name__ == "__main__":
    run()
