"""Environment loading: the action repeat keeps the environment's own episodes and returns."""

from __future__ import annotations

import numpy as np

from distributed_sac.config import load_gin
from distributed_sac.envs import load_env
from tests.conftest import SMOKE_GIN


def play_zero_actions(action_repeat: int) -> tuple[int, float, int]:
    """(decisions, return, environment steps) of one episode holding every motor command at 0."""
    config = load_gin([SMOKE_GIN], [f"RunConfig.action_repeat = {action_repeat}"])
    env = load_env(config, seed=4)
    try:
        time_step, decisions, total = env.reset(), 0, 0.0
        while not time_step.is_last():
            time_step = env.step(np.zeros(8, np.float32))
            decisions += 1
            total += float(time_step.reward)
        return decisions, total, len(env.gym.unwrapped._objectives)  # Minitaur logs every step
    finally:
        env.close()


def test_action_repeat_sums_the_rewards_of_the_same_episode():
    # smoke.gin ends episodes after 100 environment steps.
    decisions, total, env_steps = play_zero_actions(1)
    repeated_decisions, repeated_total, repeated_env_steps = play_zero_actions(4)
    assert (decisions, env_steps) == (100, 100)
    assert (repeated_decisions, repeated_env_steps) == (25, 100)
    assert abs(repeated_total - total) < 1e-5  # the same physics, the rewards summed
