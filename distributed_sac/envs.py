"""Environment loading: pybullet and gym tasks as TF-Agents Python environments."""

from __future__ import annotations

import functools
import os
import random
import sys

import numpy as np
import tree

from distributed_sac.config import RunConfig
from distributed_sac.errors import UserError


def load_env(config: RunConfig, seed: int | None = None):
    """Returns the configured environment as a PyEnvironment, seeded when `seed` is given.

    RunConfig.action_repeat and observation_scale wrap it, for every role and tool alike.
    Seeding also seeds Python's and numpy's global generators: Minitaur's randomizer draws each
    episode's masses, friction and motor damping from them, not from the environment's own
    generator. So call it once per process, for the environment that process steps.
    """
    import gym

    # Registers the pybullet tasks (MinitaurBulletEnv-v0, ...) with gym.
    import pybullet_envs  # noqa: F401
    from tf_agents.environments import suite_gym, wrappers

    if config.env_name not in gym.envs.registry.env_specs:
        raise UserError(f"unknown environment '{config.env_name}' (RunConfig.env_name)")
    env_wrappers = []
    if config.action_smoothing > 0:  # inside the repeat: each environment step is smoothed
        env_wrappers.append(functools.partial(smooth_actions, weight=config.action_smoothing))
    if config.action_repeat > 1:  # outside the time limit, which so counts environment steps
        env_wrappers.append(functools.partial(wrappers.ActionRepeat, times=config.action_repeat))
    env = suite_gym.load(
        config.env_name, max_episode_steps=config.max_episode_steps, env_wrappers=env_wrappers
    )
    discrete = [spec for spec in tree.flatten(env.action_spec()) if spec.dtype.kind != "f"]
    if discrete:
        env.close()
        raise UserError(
            f"RunConfig.env_name '{config.env_name}' has discrete actions "
            f"({discrete[0].dtype.name}); SAC needs continuous actions (a gym Box action space)"
        )
    if config.observation_scale is not None:
        env = scale_observations(env, config.observation_scale)
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        env.seed(seed)
    return env


def check_env(config: RunConfig) -> None:
    """UserError unless RunConfig.env_name is a task SAC can learn: known, continuous actions,
    observation_scale fitting it. Loads the environment once (under a second for Minitaur),
    quietly: pybullet and gym print start-up lines (some from C) that a role's log keeps but the
    launcher's console need not show."""
    import ctypes
    import warnings

    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 1)
        os.dup2(devnull.fileno(), 2)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_env(config).close()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        libc.fflush(None)  # C's buffered lines go to /dev/null too, not after the restore
        for fd, original in zip((1, 2), saved):
            os.dup2(original, fd)
            os.close(original)


def smooth_actions(env, weight: float):
    """`env` applying weight * (the action it applied last) + (1 - weight) * action: a
    first-order low-pass filter, as pybullet's own Minitaur controllers use; reset at each
    episode's start."""
    from tf_agents.environments import wrappers

    class SmoothedActions(wrappers.PyEnvironmentBaseWrapper):
        def __init__(self, inner):
            super().__init__(inner)
            self._applied = None

        def _reset(self):
            self._applied = None
            return self._env.reset()

        def _step(self, action):
            action = np.asarray(action)
            if self._applied is not None:
                action = (weight * self._applied + (1.0 - weight) * action).astype(action.dtype)
            self._applied = action
            return self._env.step(action)

    return SmoothedActions(env)


def scale_observations(env, scale):
    """`env` with each observation multiplied by `scale` (one factor per dimension)."""
    from tf_agents.environments import wrappers
    from tf_agents.specs import array_spec

    spec = env.observation_spec()
    if not isinstance(spec, array_spec.ArraySpec) or len(spec.shape) != 1:
        raise UserError("RunConfig.observation_scale needs a flat vector observation")
    if len(scale) != spec.shape[0]:
        raise UserError(
            f"RunConfig.observation_scale has {len(scale)} factors; "
            f"{env.gym.spec.id if hasattr(env, 'gym') else 'the environment'} observes "
            f"{spec.shape[0]} numbers"
        )
    factors = np.asarray(scale, spec.dtype)

    class ScaledObservations(wrappers.PyEnvironmentBaseWrapper):
        def observation_spec(self):
            if isinstance(spec, array_spec.BoundedArraySpec):
                return array_spec.BoundedArraySpec(
                    spec.shape,
                    spec.dtype,
                    spec.minimum * factors,
                    spec.maximum * factors,
                    spec.name,
                )
            return spec

        def _reset(self):
            return scaled(self._env.reset())

        def _step(self, action):
            return scaled(self._env.step(action))

    def scaled(time_step):
        return time_step._replace(observation=(time_step.observation * factors).astype(spec.dtype))

    return ScaledObservations(env)
