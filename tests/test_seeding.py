"""One gin seed drives every role: the learner's initial weights and each seeded environment."""

from __future__ import annotations

import random
import signal

import numpy as np
import pytest
import reverb

from distributed_sac.config import load_gin
from distributed_sac.sac.envs import load_env
from tests.conftest import SMOKE_GIN, start_server, wait_for_line


def _initial_weights(processes, tmp_path, address, seed: int, name: str) -> list[np.ndarray]:
    """Starts a learner with `seed`, reads the weights it pushes before training, stops it."""
    log = tmp_path / f"{name}.log"
    args = ["--gin_file", SMOKE_GIN, "--gin_bindings", f"RunConfig.seed = {seed}"]
    args += ["--replay_server_address", address, "--root_dir", str(tmp_path / name)]
    learner = processes.role("learner", args, log)
    try:
        # learner_start comes after the initial push; the table holds nothing else to train on.
        wait_for_line(log, "learner_start", learner, timeout_s=180)
        sample = next(
            reverb.Client(address).sample("variables", num_samples=1, emit_timesteps=False)
        )
        return [np.asarray(column[0]) for column in sample.data]
    finally:
        learner.send_signal(signal.SIGKILL, group=True)  # it waits for experience that never comes
        learner.wait(timeout=30)


@pytest.mark.slow
def test_learners_with_one_seed_push_identical_initial_weights(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path)
    first = _initial_weights(processes, tmp_path, address, 0, "seed0")
    again = _initial_weights(processes, tmp_path, address, 0, "seed0-again")
    other = _initial_weights(processes, tmp_path, address, 1, "seed1")
    assert len(first) == len(again) == len(other) > 4
    # Every array, the actor's output layer included (Keras seeds that one from Python's random).
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    kernels = [(a, b) for a, b in zip(first, other) if a.ndim == 2]
    assert kernels and all(not np.array_equal(a, b) for a, b in kernels)


def _random_episode(seed: int) -> tuple[np.ndarray, float]:
    env = load_env(load_gin([SMOKE_GIN], []), seed=seed)
    actions = np.random.default_rng(0)
    spec = env.action_spec()
    observations, total = [env.reset().observation], 0.0
    for _ in range(30):
        time_step = env.step(actions.uniform(spec.minimum, spec.maximum, spec.shape))
        observations.append(time_step.observation)
        total += float(time_step.reward)
    env.close()
    return np.stack(observations), total


def test_a_seeded_minitaur_replays_its_randomized_physics():
    observations, total = _random_episode(seed=3)
    # Minitaur's randomizer draws masses and friction from the global generators: disturb them.
    random.seed(12345)
    np.random.seed(12345)
    observations_again, total_again = _random_episode(seed=3)
    np.testing.assert_array_equal(observations, observations_again)
    assert total == total_again
    observations_other, _ = _random_episode(seed=4)
    assert not np.array_equal(observations, observations_other)


@pytest.mark.slow
def test_the_largest_seed_derives_seeds_in_range_for_collectors_and_evaluator(processes, tmp_path):
    """seed + task (a collector) and seed + 1 000 000 (the evaluator) wrap below 2**32: before,
    both crashed in numpy's seeding ("Seed must be between 0 and 2**32 - 1")."""
    address, _, _ = start_server(processes, tmp_path)
    common = ["--gin_file", SMOKE_GIN, "--gin_bindings", "RunConfig.seed = 4294967295"]
    common += ["--replay_server_address", address]
    collector_log, evaluator_log = tmp_path / "collector.log", tmp_path / "evaluator.log"
    collector = processes.role("collector", [*common, "--task", "1"], collector_log)
    evaluator = processes.role(
        "evaluator", [*common, "--root_dir", str(tmp_path / "run")], evaluator_log
    )
    # Both past seeding their environments and policies: collecting, and evaluating-ready.
    wait_for_line(collector_log, "collector_progress", collector, timeout_s=180)
    wait_for_line(evaluator_log, "evaluator_start", evaluator, timeout_s=180)
