"""Greedy evaluation and its record: the evaluator role and the benchmarks' tutorial loop score
policies alike, play records them through the same episode loop, and every tool reads
metrics.jsonl through `read_evaluations`."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Callable

from absl import logging

from distributed_sac.config import derived_seed

if TYPE_CHECKING:  # plot and status read metrics.jsonl without importing TensorFlow
    from tf_agents.trajectories.time_step import TimeStep

EVAL_SEED_OFFSET = 1_000_000  # keeps evaluation episodes apart from every collector's
# What every evaluation line carries (plot and status rely on these).
REQUIRED_KEYS = ("train_step", "AverageReturn", "wall_time")


def make_eval_env(builder):
    """The evaluation environment, seeded from the run's seed (apart from the collectors')."""
    return builder.make_env(seed=derived_seed(builder.config.seed, EVAL_SEED_OFFSET))


def run_episodes(
    env,
    policy,
    num_episodes: int,
    stop_requested: Callable[[], bool] = lambda: False,
    *,
    max_steps: int | None = None,
    on_step: Callable[[TimeStep], None] = lambda time_step: None,
    on_episode_end: Callable[[float, int], None] = lambda episode_return, length: None,
) -> dict | None:
    """Plays episodes with `policy`, each to its last step or `max_steps`; AverageReturn and
    AverageEpisodeLength. `on_step` sees every time step (each episode's first one too),
    `on_episode_end` each episode's return and length. None when `stop_requested()` turned true
    meanwhile (checked at each step: the evaluation is dropped)."""
    returns, lengths = [], []
    for _ in range(num_episodes):
        time_step = env.reset()
        on_step(time_step)
        total, length = 0.0, 0
        while not time_step.is_last() and (max_steps is None or length < max_steps):
            if stop_requested():
                return None
            time_step = env.step(policy.action(time_step).action)
            on_step(time_step)
            total += float(time_step.reward)
            length += 1
        on_episode_end(total, length)
        returns.append(total)
        lengths.append(length)
    return {
        "AverageReturn": sum(returns) / len(returns),
        "AverageEpisodeLength": sum(lengths) / len(lengths),
    }


def append_evaluation(metrics_path: str, evaluation: dict) -> None:
    """Appends one line. A last line torn by a kill mid-write (no newline at the end) is cut off
    first: appended to, it would swallow the new line, and both would be skipped when read."""
    with open(metrics_path, "ab+") as f:
        end = f.seek(0, os.SEEK_END)
        keep = _after_last_newline(f, end)
        if keep < end:
            logging.warning(
                "%s: cutting a torn last line (%d bytes) before appending", metrics_path, end - keep
            )
            f.truncate(keep)
        f.write((json.dumps(evaluation) + "\n").encode())


def _after_last_newline(f, end: int, chunk: int = 4096) -> int:
    """The offset just past the last newline among the first `end` bytes of `f` (0 if none)."""
    position = end
    while position > 0:
        start = max(0, position - chunk)
        f.seek(start)
        found = f.read(position - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        position = start
    return 0


def read_evaluations(metrics_path: str) -> tuple[list[dict], int]:
    """(evaluations in file order, number of lines skipped) of a metrics.jsonl; ([], 0) when it
    does not exist. A line cut short by a kill mid-write, or one without REQUIRED_KEYS, is
    skipped; train_step is an int, AverageReturn and wall_time floats."""
    if not os.path.exists(metrics_path):
        return [], 0
    evaluations, skipped = [], 0
    with open(metrics_path, errors="replace") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                evaluation = json.loads(line)
                evaluations.append(
                    {
                        **evaluation,
                        "train_step": int(evaluation["train_step"]),
                        "AverageReturn": float(evaluation["AverageReturn"]),
                        "wall_time": float(evaluation["wall_time"]),
                    }
                )
            except (ValueError, KeyError, TypeError):
                skipped += 1
    return evaluations, skipped
