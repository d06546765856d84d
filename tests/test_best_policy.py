"""The evaluator's best policy: written, replaced only by a better evaluation, kept across a
restart, published without a gap, loadable with TensorFlow alone."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from distributed_sac import best_policy
from distributed_sac import evaluation as metrics
from distributed_sac.best_policy import BestPolicyKeeper
from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.numpy_policy import NumpyActorPolicy
from distributed_sac.policy_export import publish_dir, published_versions
from tests.conftest import (
    SMOKE_GIN,
    bindings,
    read,
    reports,
    standalone_action,
    start_by_hand,
    wait_for_line,
)


def evaluation(train_step: int, value: float) -> dict:
    return {"train_step": train_step, "env_steps": 2 * train_step, "AverageReturn": value}


@pytest.fixture(scope="module")
def greedy():
    """The evaluator's greedy policy on Minitaur, with random weights (biases start at 0)."""
    policy = NumpyActorPolicy(Builder(load_gin([SMOKE_GIN], [])).make_policy(), greedy=True)
    rng = np.random.default_rng(3)
    for variable in policy.tf_variables:
        variable.assign(rng.normal(0, 0.3, variable.shape).astype(np.float32))
    policy.sync()
    return policy


def zero_observation_action(policy: NumpyActorPolicy) -> np.ndarray:
    from tf_agents.trajectories import time_step as ts

    return policy.action(ts.restart(np.zeros(28, np.float32))).action


def test_only_a_better_evaluation_replaces_the_best_policy(greedy, tmp_path):
    policy_dir = str(tmp_path / "policies" / "best_greedy_policy")
    keeper = BestPolicyKeeper(policy_dir, greedy.tf_policy)
    assert keeper.best is None
    assert keeper.offer(evaluation(100, 1.5))
    first = os.path.realpath(policy_dir)
    assert best_policy.read_record(policy_dir) == evaluation(100, 1.5)
    for worse in (evaluation(200, 1.5), evaluation(300, -2.0), evaluation(400, float("nan"))):
        assert not keeper.offer(worse)
    assert os.path.realpath(policy_dir) == first  # the very same directory, untouched
    assert best_policy.read_record(policy_dir) == evaluation(100, 1.5)

    # A restarted evaluator knows the best so far, and only beats it.
    restarted = BestPolicyKeeper(policy_dir, greedy.tf_policy)
    assert restarted.best == evaluation(100, 1.5)
    assert not restarted.offer(evaluation(500, 1.0))
    assert restarted.offer(evaluation(600, 2.5))
    assert best_policy.read_record(policy_dir) == evaluation(600, 2.5)
    # One version on disk: the one the name points at.
    assert published_versions(policy_dir) == [os.path.realpath(policy_dir)]
    assert not os.path.exists(first)

    # It needs TensorFlow alone (README's snippet), and acts with the evaluated weights.
    action = standalone_action(policy_dir, tmp_path)
    np.testing.assert_allclose(action, zero_observation_action(greedy), atol=1e-4)
    import tensorflow as tf

    assert int(tf.saved_model.load(policy_dir).get_train_step().numpy()) == 600


def test_a_writer_killed_halfway_leaves_the_published_policy(greedy, tmp_path):
    policy_dir = str(tmp_path / "best_greedy_policy")
    keeper = BestPolicyKeeper(policy_dir, greedy.tf_policy)
    keeper.offer(evaluation(100, 1.0))
    published = os.path.realpath(policy_dir)

    def killed(directory):
        os.makedirs(directory)
        with open(os.path.join(directory, "saved_model.pb"), "wb") as f:
            f.write(b"\x08half")
        raise KeyboardInterrupt  # the writer dies before the switch

    with pytest.raises(KeyboardInterrupt):
        publish_dir(policy_dir, killed)
    assert os.path.realpath(policy_dir) == published
    assert best_policy.read_record(policy_dir) == evaluation(100, 1.0)
    # The next publication clears the half-written version.
    assert BestPolicyKeeper(policy_dir, greedy.tf_policy).offer(evaluation(200, 2.0))
    assert published_versions(policy_dir) == [os.path.realpath(policy_dir)]


def test_a_plain_directory_from_an_older_run_is_taken_over(tmp_path):
    final = tmp_path / "greedy_policy"
    final.mkdir()
    (final / "old").write_text("old")

    def write(directory):
        os.makedirs(directory)
        with open(os.path.join(directory, "new"), "w") as f:
            f.write("new")

    publish_dir(str(final), write)
    assert final.is_symlink() and (final / "new").read_text() == "new"
    assert [os.path.basename(v) for v in published_versions(str(final))] == ["greedy_policy.v2"]


def test_a_best_policy_whose_line_a_kill_cut_off_is_written_by_the_restarted_evaluator(
    greedy, tmp_path
):
    """The evaluator saves a better policy before its metrics.jsonl line. Killed between the
    two, its restart appends the policy's record as the line, so the best policy stays the best
    evaluation (a kill during the save leaves neither: the earlier best, no line)."""
    import tensorflow as tf

    from distributed_sac.layout import RunDir
    from distributed_sac.roles import evaluator

    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.eval)
    summaries = tf.summary.create_file_writer(run.eval)
    keeper = BestPolicyKeeper(run.best_greedy_policy, greedy.tf_policy)

    def result(step, value):
        return {**evaluation(step, value), "AverageEpisodeLength": 100.0, "wall_time": 1.0 + step}

    evaluator._write(run, summaries, result(0, -1.0), keeper)
    evaluator._write(run, summaries, result(100, -2.0), keeper)
    assert keeper.offer(result(200, 0.5))  # killed here: the policy saved, not its line
    last = evaluator.last_evaluated_step(run.metrics)
    assert last == 100

    restarted = BestPolicyKeeper(run.best_greedy_policy, greedy.tf_policy)
    assert evaluator.restore_cut_line(run, summaries, restarted.best, last) == 200
    lines, _ = metrics.read_evaluations(run.metrics)
    assert [line["train_step"] for line in lines] == [0, 100, 200]
    assert restarted.best == lines[-1] == max(lines, key=lambda line: line["AverageReturn"])
    # A line already there is not written twice.
    assert evaluator.restore_cut_line(run, summaries, restarted.best, 200) == 200
    assert len(metrics.read_evaluations(run.metrics)[0]) == 3


@pytest.mark.slow
def test_an_evaluator_stopped_while_it_saves_a_better_policy_finishes_the_save(processes, tmp_path):
    """SIGTERM to a real evaluator held halfway through saving its first best policy (the
    SavedModel written, evaluation.json not yet): it finishes the save and the evaluation's
    line, then exits 143 (unfinished: a supervisor restarts it). The policy and the line agree,
    and nothing half written is left."""
    import tensorflow as tf

    _, learner, _, run = start_by_hand(processes, tmp_path)
    log = tmp_path / "evaluator.log"
    evaluator = processes.role(
        "evaluator",
        [*learner.args[3:], *bindings("FaultInjection.best_policy_save_hold_s = 5")],
        log,
    )
    wait_for_line(log, "FaultInjection: holding the best policy save", evaluator, timeout_s=240)
    signalled = time.monotonic()
    evaluator.send_signal(signal.SIGTERM)
    code = evaluator.wait(timeout=60)
    seconds = time.monotonic() - signalled
    record = best_policy.read_record(run.best_greedy_policy)
    lines, skipped = metrics.read_evaluations(run.metrics)
    state = (
        f"exit {code} {seconds:.1f}s after SIGTERM, record {record}, lines {lines}, "
        f"policies/ {sorted(os.listdir(run.policies))}\n{read(log)[-3000:]}"
    )
    assert code == 128 + signal.SIGTERM, state
    assert record is not None and skipped == 0, state
    assert [(line["train_step"], line["AverageReturn"]) for line in lines] == [
        (record["train_step"], record["AverageReturn"])
    ], state
    assert published_versions(run.best_greedy_policy) == [
        os.path.realpath(run.best_greedy_policy)
    ], state
    policy = tf.saved_model.load(run.best_greedy_policy)
    assert int(policy.get_train_step().numpy()) == record["train_step"]
    (stopped,) = reports(log, "evaluator_stopped")
    assert stopped["last_evaluated"] == record["train_step"]
    assert seconds < 30, state  # the 5 s hold, then the line
