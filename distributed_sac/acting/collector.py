"""The collector's loop: an Actor stepping its own environment, random actions for the initial
collection and then the newest pulled weights, its pairs written to the replay server."""

from __future__ import annotations

import dataclasses
from typing import Callable

import reverb
import tensorflow as tf
from tf_agents.policies import random_py_policy

from distributed_sac.acting.actor import Actor, EpisodeStatistics
from distributed_sac.config import RunConfig
from distributed_sac.learner.step_record import LearnerStep
from distributed_sac.replay import tables
from distributed_sac.replay.connection import Reconnecting
from distributed_sac.replay.weights import WeightClient
from distributed_sac.replay.writer import ExperienceWriter
from distributed_sac.runtime.rates import ProgressReport
from distributed_sac.sac.numpy_policy import NumpyActorPolicy


@dataclasses.dataclass(frozen=True)
class ServerParts:
    """A collector's clients of the replay server."""

    client: reverb.Client  # reads the experience table's size (the random-action budget)
    weights: WeightClient  # pulls the policy's weights
    writer: ExperienceWriter  # writes its pairs


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


class CollectorProgress:
    """Observer: every `interval` env steps, a collector_progress report and TensorBoard's
    Throughput/EnvStepsPerSecond and Throughput/PolicyLagTrainSteps."""

    def __init__(self, collector: Collector, interval: int, summaries=None):
        self._collector = collector
        self._interval = interval
        self._summaries = summaries
        self._report = ProgressReport("collector_progress", "env_steps_per_s", 1)

    def __call__(self, _transition) -> None:
        env_steps = self._collector.actor.env_steps + 1
        if env_steps % self._interval:
            return
        policy = self._collector.policy_version
        lag = policy.take_mean_lag()
        rate = self._report(
            env_steps,
            task=self._collector.task,
            env_steps=env_steps,
            random_steps=self._collector.random_steps,
            policy_train_step=policy.train_step,
            policy_lag=lag,
        )
        if self._summaries is not None:
            with self._summaries.as_default(step=env_steps):
                tf.summary.scalar("Throughput/EnvStepsPerSecond", rate)
                if lag is not None:
                    tf.summary.scalar("Throughput/PolicyLagTrainSteps", lag)


class Collector:
    """Acts with random actions until the table holds the initial collection (a global budget),
    then with the newest pulled weights into `policy`, until training is finished: with the
    learner's run directory (`learner_step`), once the learner's checkpoint of its final step
    is there; without, once the pulled weights carry the final train step (see
    learner/step_record.py). `connect` makes its ServerParts, again after a lost server."""

    def __init__(
        self,
        *,
        config: RunConfig,
        task: int,
        seed: int,
        env,
        policy: NumpyActorPolicy,
        learner_step: LearnerStep,
        connect: Callable[[], ServerParts],
        summaries: tf.summary.SummaryWriter | None = None,
    ):
        self.task, self._config = task, config
        self._policy = policy
        self._random_policy = random_py_policy.RandomPyPolicy(
            env.time_step_spec(), env.action_spec(), seed=seed
        )
        self.policy_version = PolicyVersion()
        self._learner_step = learner_step
        self.training_done = False
        self.server = Reconnecting("collector", connect)
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
            CollectorProgress(self, config.log_interval, summaries),
        ]
        self.actor = Actor(env, observers)

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
