"""Environment loading: pybullet and gym tasks as TF-Agents Python environments."""

from __future__ import annotations

import functools
import random

import numpy as np

from distributed_sac.config import RunConfig
from distributed_sac.errors import UserError


def load_env(config: RunConfig, seed: int | None = None):
    """Returns the configured environment as a PyEnvironment, seeded when `seed` is given.

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
    repeat = []
    if config.action_repeat > 1:  # outside the time limit, which so counts environment steps
        repeat = [functools.partial(wrappers.ActionRepeat, times=config.action_repeat)]
    env = suite_gym.load(
        config.env_name, max_episode_steps=config.max_episode_steps, env_wrappers=repeat
    )
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        env.seed(seed)
    return env
