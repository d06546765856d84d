"""The evaluator's best policy: written, replaced only by a better evaluation, kept across a
restart, published without a gap, loadable with TensorFlow alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from distributed_sac.acting import best_policy, evaluator
from distributed_sac.acting import evaluation as metrics
from distributed_sac.acting.best_policy import BestPolicyKeeper
from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.layout import COLLECT_POLICY, GREEDY_POLICY, RunDir
from distributed_sac.learner.policy_export import PolicyExporter, publish_dir, published_versions
from distributed_sac.sac.numpy_policy import NumpyActorPolicy
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
    # The version the name points at and the one before it (for a reader that resolved it).
    assert published_versions(policy_dir) == [first, os.path.realpath(policy_dir)]

    # It needs TensorFlow alone (README's snippet), and acts with the evaluated weights.
    action = standalone_action(policy_dir, tmp_path)
    np.testing.assert_allclose(action, zero_observation_action(greedy), atol=1e-4)
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
    assert published_versions(policy_dir) == [published]  # what it wrote is removed
    # A writer killed outright (SIGKILL, power loss) leaves its version behind: the next
    # publication removes it, and keeps the one the name pointed at.
    leftover = published.replace(".v1", ".v2")
    os.makedirs(leftover)
    with open(os.path.join(leftover, "saved_model.pb"), "wb") as f:
        f.write(b"\x08half")
    assert BestPolicyKeeper(policy_dir, greedy.tf_policy).offer(evaluation(200, 2.0))
    assert published_versions(policy_dir) == [published, published.replace(".v1", ".v3")]
    assert os.path.realpath(policy_dir) == published.replace(".v1", ".v3")


def test_a_reader_that_resolved_a_learner_export_reads_it_after_the_next_export(tmp_path):
    """`cp -rL` or play resolve a policy's name, then read its files for a while: the learner's
    next export (the real one, PolicyExporter) leaves the version they resolved in place, and
    the one after removes it."""
    policies = str(tmp_path / "policies")
    train_step = tf.Variable(150, dtype=tf.int64)
    exporter = PolicyExporter(
        policies, Builder(load_gin([SMOKE_GIN], [])).make_policy(), train_step
    )
    exporter.export()
    names = [os.path.join(policies, name) for name in (GREEDY_POLICY, COLLECT_POLICY)]
    resolved = [os.path.realpath(name) for name in names]  # the readers hold these
    train_step.assign(300)
    exporter.export()
    for name, version in zip(names, resolved):
        assert os.path.realpath(name) != version  # replaced
        # tf_agents (imported here) registers the collect policy's distribution specs.
        assert int(tf.saved_model.load(version).get_train_step().numpy()) == 150, version
        assert int(tf.saved_model.load(name).get_train_step().numpy()) == 300
    train_step.assign(450)
    exporter.export()
    for name, version in zip(names, resolved):
        assert not os.path.exists(version)  # a grace of one replacement, no more
        assert len(published_versions(name)) == 2
        assert published_versions(name)[-1] == os.path.realpath(name)


def test_a_reader_that_resolved_the_best_policy_reads_it_after_a_better_one(greedy, tmp_path):
    """The same for the evaluator's best policy (BestPolicyKeeper): a copy started before a
    better evaluation replaced it still finds every file of the version it resolved."""
    policy_dir = str(tmp_path / "best_greedy_policy")
    keeper = BestPolicyKeeper(policy_dir, greedy.tf_policy)
    assert keeper.offer(evaluation(100, 1.0))
    resolved = os.path.realpath(policy_dir)
    files = sorted(
        os.path.relpath(os.path.join(d, f), resolved) for d, _, fs in os.walk(resolved) for f in fs
    )
    assert keeper.offer(evaluation(200, 2.0))
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-r", resolved, str(copy)], check=True, timeout=60)
    copied = sorted(
        os.path.relpath(os.path.join(d, f), copy) for d, _, fs in os.walk(copy) for f in fs
    )
    assert copied == files
    assert best_policy.read_record(str(copy)) == evaluation(100, 1.0)
    assert best_policy.read_record(policy_dir) == evaluation(200, 2.0)
    assert keeper.offer(evaluation(300, 3.0))
    assert not os.path.exists(resolved)
    assert published_versions(policy_dir)[-1] == os.path.realpath(policy_dir)


def test_a_new_version_is_on_disk_before_the_name_switches_to_it(greedy, tmp_path, monkeypatch):
    """Every file and directory of a new best policy, and the directory holding it, are fsynced
    before the switch, and that directory again after it (a crash then finds the name pointing
    at a complete version)."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(source, destination):
        events.append(("replace", os.path.realpath(os.path.dirname(destination))))
        real_replace(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    policy_dir = str(tmp_path / "policies" / "best_greedy_policy")
    parent = os.path.realpath(os.path.dirname(policy_dir))
    keeper = BestPolicyKeeper(policy_dir, greedy.tf_policy)
    for step in (100, 200):  # the first publication, then a replacement
        events.clear()
        assert keeper.offer(evaluation(step, step / 100))
        version = os.path.realpath(policy_dir)
        written = {version} | {
            os.path.join(d, f) for d, dirs, files in os.walk(version) for f in files + dirs
        }
        (switch,) = [i for i, event in enumerate(events) if event[0] == "replace"]
        assert events[switch] == ("replace", parent)
        synced_before = {path for kind, path in events[:switch] if kind == "fsync"}
        assert written <= synced_before, written - synced_before
        assert ("fsync", parent) in events[:switch]
        assert events[switch + 1 :] == [("fsync", parent)]


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
    # The old directory is kept as the previous version, for a reader that was inside it.
    assert [os.path.basename(v) for v in published_versions(str(final))] == [
        "greedy_policy.v1",
        "greedy_policy.v2",
    ]
    assert (final.parent / "greedy_policy.v1" / "old").read_text() == "old"


def test_a_best_policy_whose_line_a_kill_cut_off_is_written_by_the_restarted_evaluator(
    greedy, tmp_path
):
    """The evaluator saves a better policy before its metrics.jsonl line. Killed between the
    two, its restart appends the policy's record as the line, so the best policy stays the best
    evaluation (a kill during the save leaves neither: the earlier best, no line)."""

    run = RunDir(str(tmp_path / "run"))
    os.makedirs(run.eval)
    summaries = tf.summary.create_file_writer(run.eval)
    keeper = BestPolicyKeeper(run.best_greedy_policy, greedy.tf_policy)

    def result(step, value):
        return {**evaluation(step, value), "AverageEpisodeLength": 100.0, "wall_time": 1.0 + step}

    evaluator.write(run, summaries, result(0, -1.0), keeper)
    evaluator.write(run, summaries, result(100, -2.0), keeper)
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
    _, learner, _, run = start_by_hand(processes, tmp_path)
    log = tmp_path / "evaluator.log"
    evaluator_process = processes.role(
        "evaluator",
        [*learner.args[3:], *bindings("FaultInjection.best_policy_save_hold_s = 5")],
        log,
    )
    wait_for_line(
        log, "FaultInjection: holding the best policy save", evaluator_process, timeout_s=240
    )
    signalled = time.monotonic()
    evaluator_process.send_signal(signal.SIGTERM)
    code = evaluator_process.wait(timeout=60)
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

    # Restarted, it keeps that best policy; stopped wherever it is (polling, playing or saving a
    # better policy, which it finishes), it exits promptly and leaves the two in agreement.
    restarted = processes.role("evaluator", learner.args[3:], log)
    wait_for_line(log, "best policy so far: ", restarted, timeout_s=240)
    signalled = time.monotonic()
    restarted.send_signal(signal.SIGTERM)
    code = restarted.wait(timeout=60)
    seconds = time.monotonic() - signalled
    lines, _ = metrics.read_evaluations(run.metrics)
    best = best_policy.read_record(run.best_greedy_policy)
    assert code == 128 + signal.SIGTERM and seconds < 20, (
        code,
        seconds,
        restarted.output()[-3000:],
    )
    assert best["AverageReturn"] == max(line["AverageReturn"] for line in lines), (best, lines)
    assert best["train_step"] in [line["train_step"] for line in lines]
