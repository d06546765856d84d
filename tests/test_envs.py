"""Environment loading: action repeat and observation scale keep the environment's own episodes,
returns and physics; the walking config builds; the headless camera and the distance walked."""

from __future__ import annotations

import os

import numpy as np
import pytest

from distributed_sac.config import load_gin
from distributed_sac.errors import UserError
from distributed_sac.sac.envs import Camera, load_env, walked_metres
from tests.conftest import GIN_DIR, SMOKE_GIN

WALK_GIN = os.path.join(GIN_DIR, "minitaur.gin")


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


def first_steps(bindings):
    """(observations, rewards, observation spec maximum) of a reset and five fixed actions; one
    environment at a time, as Minitaur draws its masses from the global generators."""
    env = load_env(load_gin([SMOKE_GIN], bindings), seed=2)
    try:
        steps = [env.reset()] + [env.step(np.full(8, 0.3, np.float32)) for _ in range(5)]
        return (
            np.array([s.observation for s in steps]),
            [float(s.reward) for s in steps[1:]],
            env.observation_spec().maximum,
        )
    finally:
        env.close()


def test_observation_scale_multiplies_every_observation():
    scale = tuple(float(i + 1) for i in range(28))
    observations, rewards, maximum = first_steps([])
    scaled, scaled_rewards, scaled_maximum = first_steps([f"RunConfig.observation_scale = {scale}"])
    np.testing.assert_allclose(scaled, observations * np.float32(scale), rtol=1e-6)
    assert scaled_rewards == rewards
    np.testing.assert_allclose(scaled_maximum, maximum * np.float32(scale), rtol=1e-6)


def test_observation_scale_of_the_wrong_length_is_named():
    config = load_gin([SMOKE_GIN], ["RunConfig.observation_scale = (1.0, 2.0)"])
    with pytest.raises(UserError, match="observation_scale has 2 factors; .* observes 28 numbers"):
        load_env(config)
    with pytest.raises(UserError) as error:
        load_gin([SMOKE_GIN], ["RunConfig.observation_scale = (1.0, -2.0)"])
    assert str(error.value) == (
        "RunConfig.observation_scale must be None or a tuple of numbers above 0, got (1.0, -2.0)"
    )


def test_a_discrete_action_environment_is_named():
    config = load_gin([SMOKE_GIN], ["RunConfig.env_name = 'CartPole-v1'"])
    with pytest.raises(UserError) as error:
        load_env(config)
    assert str(error.value) == (
        "RunConfig.env_name 'CartPole-v1' has discrete actions (int64); SAC needs continuous "
        "actions (a gym Box action space)"
    )


def test_the_walking_config_builds_its_environment():
    config = load_gin([WALK_GIN], [])
    env = load_env(config, seed=0)
    try:
        assert config.action_repeat == 4 and len(config.observation_scale) == 28
        assert env.reset().observation.shape == (28,)
    finally:
        env.close()


def observations_after(bindings, actions) -> np.ndarray:
    """The observations a seeded environment returns for `actions`, one step each."""
    env = load_env(load_gin([SMOKE_GIN], bindings), seed=3)
    try:
        env.reset()
        return np.array([env.step(np.asarray(a, np.float32)).observation for a in actions])
    finally:
        env.close()


def test_action_smoothing_applies_a_low_pass_filter_at_each_environment_step():
    """Decisions +0.8 then -0.8, each held 2 environment steps with weight 0.5, move the legs as
    the filtered commands 0.8, 0.8, 0 and -0.4 given one per step without smoothing."""
    decisions = [np.full(8, 0.8), np.full(8, -0.8)]
    smoothed = observations_after(
        ["RunConfig.action_repeat = 2", "RunConfig.action_smoothing = 0.5"], decisions
    )
    filtered = [np.full(8, 0.8), np.full(8, 0.8), np.full(8, 0.0), np.full(8, -0.4)]
    by_hand = observations_after([], filtered)
    np.testing.assert_array_equal(smoothed, by_hand[1::2])
    unsmoothed = observations_after(["RunConfig.action_repeat = 2"], decisions)
    assert not np.array_equal(unsmoothed, smoothed)


def test_action_smoothing_outside_its_range_is_named():
    with pytest.raises(UserError, match="RunConfig.action_smoothing must be .* 0.99, got 1.0"):
        load_gin([SMOKE_GIN], ["RunConfig.action_smoothing = 1.0"])


def test_the_camera_follows_minitaur_and_the_distance_walked_is_read():
    env = load_env(load_gin([SMOKE_GIN], []), seed=0)
    try:
        camera = Camera(env, 64, 48)
        env.reset()
        first, walked_at_start = camera.frame(), walked_metres(env)
        for _ in range(30):
            env.step(np.full(8, 0.5, np.float32))
        later, walked = camera.frame(), walked_metres(env)
    finally:
        env.close()
    assert first.shape == (48, 64, 3) and first.dtype == np.uint8 and first.std() > 0
    assert not np.array_equal(first, later) and camera.seconds > 0
    # Minitaur's log of its reward terms, cleared at reset: its forward term summed.
    assert walked_at_start is None and isinstance(walked, float)
