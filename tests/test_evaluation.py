"""metrics.jsonl: a line torn by a kill mid-write is cut off before the next evaluation."""

from __future__ import annotations

import json

from distributed_sac.acting import evaluation
from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from tests.conftest import SMOKE_GIN


def _line(step: int) -> dict:
    return {"train_step": step, "AverageReturn": step / 10, "wall_time": 1.0 + step}


def test_a_torn_last_line_is_repaired_before_the_next_append(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    evaluation.append_evaluation(str(metrics), _line(100))
    evaluation.append_evaluation(str(metrics), _line(200))
    whole = metrics.read_bytes()
    torn = json.dumps(_line(300)).encode()[:17]  # killed mid-write
    metrics.write_bytes(whole + torn)
    assert evaluation.read_evaluations(str(metrics))[1] == 1

    evaluation.append_evaluation(str(metrics), _line(300))
    evaluations, skipped = evaluation.read_evaluations(str(metrics))
    assert skipped == 0
    assert [e["train_step"] for e in evaluations] == [100, 200, 300]
    assert metrics.read_bytes() == whole + (json.dumps(_line(300)) + "\n").encode()


def test_a_file_holding_only_a_torn_line_is_started_afresh(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_bytes(b'{"train_step": 1' + b"x" * 10_000)  # longer than one read back
    evaluation.append_evaluation(str(metrics), _line(100))
    evaluations, skipped = evaluation.read_evaluations(str(metrics))
    assert skipped == 0 and [e["train_step"] for e in evaluations] == [100]


def test_whole_lines_are_left_as_they_are(tmp_path):
    metrics = tmp_path / "metrics.jsonl"
    evaluation.append_evaluation(str(metrics), _line(100))
    before = metrics.read_bytes()
    evaluation.append_evaluation(str(metrics), _line(200))
    assert metrics.read_bytes().startswith(before)
    assert len(evaluation.read_evaluations(str(metrics))[0]) == 2


def test_an_evaluation_stopped_midway_is_dropped():
    """The evaluator's stop request, read at each step of a real Minitaur episode: the episodes
    end there and no result comes back (nothing of the evaluation is written)."""
    builder = Builder(load_gin([SMOKE_GIN], []))
    env = evaluation.make_eval_env(builder)
    policy = builder.make_acting_policy(greedy=True)
    checks = []

    def stop_requested() -> bool:
        checks.append(1)
        return len(checks) > 10

    try:
        assert evaluation.run_episodes(env, policy, 2, stop_requested) is None
        assert len(checks) == 11  # ten steps played, then stopped
        played = evaluation.run_episodes(env, policy, 1)
        assert played is not None and played["AverageEpisodeLength"] > 0  # no stop: played out
    finally:
        env.close()


def test_episodes_cut_at_max_steps_and_every_time_step_seen():
    """play's use of the loop: episodes end after max_steps; on_step sees each episode's first
    time step and one per step (a video frame each), on_episode_end each return and length."""
    builder = Builder(load_gin([SMOKE_GIN], []))
    env = evaluation.make_eval_env(builder)
    seen, ended = [], []
    try:
        played = evaluation.run_episodes(
            env,
            builder.make_acting_policy(greedy=True),
            2,
            max_steps=7,
            on_step=seen.append,
            on_episode_end=lambda total, length: ended.append((total, length)),
        )
    finally:
        env.close()
    assert [length for _, length in ended] == [7, 7]
    assert len(seen) == 2 * (7 + 1) and seen[0].is_first() and seen[8].is_first()
    assert ended[0][0] == sum(float(time_step.reward) for time_step in seen[1:8])
    assert played == {"AverageReturn": (ended[0][0] + ended[1][0]) / 2, "AverageEpisodeLength": 7}
