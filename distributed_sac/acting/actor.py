"""A small actor loop: steps one environment with a policy and hands each transition to its
observers, as TF-Agents' Actor does. The collector's experience writer, episode statistics and
progress reports are observers."""

from __future__ import annotations

from typing import Callable

import tensorflow as tf
from absl import logging
from tf_agents.trajectories import trajectory

Observer = Callable[[trajectory.Trajectory], None]


class Actor:
    def __init__(self, env, observers: list[Observer]):
        self.env = env
        self._observers = observers
        self.env_steps = 0
        self.time_step = env.reset()

    def step(self, policy) -> None:
        """One environment step with `policy`; every observer sees the (t, t+1) transition."""
        action_step = policy.action(self.time_step)
        next_time_step = self.env.step(action_step.action)
        transition = trajectory.from_transition(self.time_step, action_step, next_time_step)
        for observer in self._observers:
            observer(transition)
        self.env_steps += 1
        self.time_step = next_time_step

    def reset(self) -> None:
        """Starts a fresh episode (observers with a `reset` forget the cut one)."""
        self.time_step = self.env.reset()
        for observer in self._observers:
            if hasattr(observer, "reset"):
                observer.reset()


class EpisodeStatistics:
    """Observer: each finished episode's return and length, logged and (with a summary writer)
    written as Metrics/EpisodeReturn and Metrics/EpisodeLength at the actor's env step."""

    def __init__(self, env_steps: Callable[[], int], summaries=None, describe_policy=None):
        self._env_steps = env_steps
        self._summaries = summaries
        self._describe_policy = describe_policy or (lambda: "")
        self.episodes = 0
        self.reset()

    def reset(self) -> None:
        self.episode_return, self.episode_length = 0.0, 0

    def __call__(self, transition: trajectory.Trajectory) -> None:
        if not transition.is_boundary():  # the LAST -> FIRST step belongs to no episode
            self.episode_return += float(transition.reward)
            self.episode_length += 1
        if not transition.is_last():
            return
        self.episodes += 1
        logging.info(
            "episode %d: return %.3f, length %d%s",
            self.episodes,
            self.episode_return,
            self.episode_length,
            self._describe_policy(),
        )
        if self._summaries is not None:
            with self._summaries.as_default(step=self._env_steps() + 1):
                tf.summary.scalar("Metrics/EpisodeReturn", self.episode_return)
                tf.summary.scalar("Metrics/EpisodeLength", self.episode_length)
        self.reset()
