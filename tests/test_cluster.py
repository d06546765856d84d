"""The whole local cluster, real processes on 127.0.0.1, through launch/local.sh."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from distributed_sac.acting import best_policy
from distributed_sac.layout import RunDir
from distributed_sac.tools.cluster import RestartBudget
from tests.conftest import (
    SMOKE_GIN,
    last_line,
    launch,
    read,
    reports,
    run_processes_of,
    standalone_action,
    wait_for_line,
)


def test_smoke_run_with_two_collectors(smoke_run, tmp_path):
    root, output, code = smoke_run  # launch/local.sh ... --num_collectors 2 --evaluator_nice 3
    assert code == 0, output[-3000:]
    assert "all roles exited cleanly" in output  # learner, collectors, evaluator, server: exit 0
    assert "\x1b" not in output and "\r" not in output  # not a TTY: plain lines only
    assert "train_step 300/300  loss" in output
    # Its first line names the config and what it is (the gin file's opening comment).
    assert f"config:        {os.path.abspath(SMOKE_GIN)}: A tiny run of the same roles" in output
    # The launcher warns about the open port when the host has interfaces besides loopback.
    exposed = [name for _, name in socket.if_nameindex() if name != "lo"]
    assert ("warning: the replay server accepts anyone on port" in output) == bool(exposed)
    assert run_processes_of(root) == []

    run = RunDir(str(root))
    assert [done["train_step"] for done in reports(run.log("learner"), "learner_done")] == [300]
    for task in (0, 1):
        (done,) = reports(run.log(f"collector-{task}"), "collector_done")
        assert done["items_created"] > 100
        assert done["policy_versions"] >= 2, done  # weights really flow
        assert done["last_policy_train_step"] == 300

    # The launcher lowered the evaluator's priority by --evaluator_nice (from its own).
    (start,) = reports(run.log("evaluator"), "evaluator_start")
    assert start["nice"] == os.nice(0) + 3
    evaluations = [json.loads(line) for line in read(run.metrics).splitlines()]
    assert evaluations, "the evaluator wrote no metrics"
    for evaluation in evaluations:
        assert set(evaluation) == {
            "train_step",
            "env_steps",
            "AverageReturn",
            "AverageEpisodeLength",
            "weights_time",
            "wall_time",
        }
        assert math.isfinite(evaluation["AverageReturn"])
        assert evaluation["weights_time"] <= evaluation["wall_time"]
    # Experience behind each evaluated policy: the learner trains only once the table holds the
    # initial collection (200 items in smoke.gin).
    env_steps = [evaluation["env_steps"] for evaluation in evaluations]
    assert env_steps == sorted(env_steps)
    assert env_steps[-1] >= 200
    assert evaluations[-1]["train_step"] == 300
    assert Path(run.operative_config).read_text().count("RunConfig.") > 5
    # smoke.gin checkpoints every 150 train steps, and the learner saves at its final step.
    assert {"ckpt-150.index", "ckpt-300.index"} <= {p.name for p in Path(run.checkpoints).iterdir()}
    assert list(Path(run.train).iterdir()), "no learner summaries"

    # README's snippet loads the best greedy policy with TensorFlow alone: the policy of the
    # best evaluation, replaced only by better ones.
    best = best_policy.read_record(run.best_greedy_policy)
    assert best["AverageReturn"] == max(e["AverageReturn"] for e in evaluations)
    assert best in evaluations
    saved = reports(run.log("evaluator"), "best_policy")
    assert saved and saved[-1]["train_step"] == best["train_step"]
    returns = [report["AverageReturn"] for report in saved]
    assert returns == sorted(set(returns)), returns  # each one better than the one before
    assert returns[0] == evaluations[0]["AverageReturn"]
    action = standalone_action(run.best_greedy_policy, tmp_path)
    # Eight numbers, each a motor command in [-1, 1].
    assert len(action) == 8 and all(abs(x) <= 1.0 for x in action), action

    observation = tf.constant(np.random.default_rng(0).normal(size=(1, 28)), tf.float32)
    for policy_dir in (run.greedy_policy, run.collect_policy, run.best_greedy_policy):
        policy = tf.saved_model.load(policy_dir)
        action = policy.action(ts.restart(observation, batch_size=1)).action.numpy()
        assert action.shape == (1, 8)
        assert np.all(np.abs(action) <= 1.0)
        expected_step = best["train_step"] if policy_dir == run.best_greedy_policy else 300
        assert int(policy.get_train_step().numpy()) == expected_step


@pytest.mark.slow
def test_three_collectors_hold_the_update_to_data_ratio(processes, tmp_path, no_leftovers):
    """The feed's queue limiter and the learner's intake hold UTD 1 with any collector count:
    the learner never trains past the pairs it drained, and collectors never insert more than
    the slack past what it drained."""
    root = tmp_path / "run"
    initial, slack, final = 200, 100, 900
    launcher, out = launch(
        processes,
        root,
        "--num_collectors",
        "3",
        "--gin_bindings",
        f"RunConfig.num_iterations = {final}",
        "--gin_bindings",
        f"RunConfig.rate_limiter_slack_steps = {slack}",
        "--gin_bindings",
        "RunConfig.replay_capacity = 10000",  # holds every pair: its size counts the inserts
    )
    code = launcher.wait(timeout=900)
    assert code == 0, read(out)[-3000:]
    run = RunDir(str(root))
    progress = reports(run.log("learner"), "learner_progress")
    assert progress
    for point in progress:  # UTD 1: one train step per pair past the initial collection
        assert point["train_step"] <= point["pairs_drained"] - initial, point
    (done,) = reports(run.log("learner"), "learner_done")
    assert done["train_step"] == final
    drained = done["pairs_drained"]
    assert drained == initial + final  # it drains only what its next train steps need
    inserted = reports(run.log("replay_server"), "replay_checkpoint")[-1]["table_sizes"][
        "uniform_table"
    ]
    # Feed inserts wait while `slack` pairs are undrained. Behind a waiting feed item, a
    # collector's writer (16 items pending at most, then the collector waits) may still put
    # the experience-table halves of its pairs in: at most 16 + 1 pairs per collector.
    assert drained <= inserted <= drained + slack + 3 * 17, (drained, inserted)
    for task in range(3):
        (collector,) = reports(run.log(f"collector-{task}"), "collector_done")
        assert collector["items_created"] > 50, collector  # none starved
    print(
        f"3 collectors, UTD 1: {final} train steps, {drained} pairs drained, {inserted} inserted "
        f"(initial {initial}): train steps per pair past the initial collection "
        f"{final / (inserted - initial):.3f}"
    )


@pytest.mark.slow
def test_a_dead_role_stops_the_run_and_is_named(processes, tmp_path, no_leftovers):
    root = tmp_path / "run"
    launcher, out = launch(
        processes,
        root,
        "--gin_bindings",
        "RunConfig.num_iterations = 100000",
        "--max_restarts",
        "0",
    )
    collector_log = RunDir(str(root)).log("collector-0")
    wait_for_line(collector_log, "collector_progress", launcher, timeout_s=180)
    (pid,) = [
        int(line.split()[0])
        for line in run_processes_of(root)
        if "distributed_sac.roles.collector" in line
    ]
    os.kill(pid, signal.SIGKILL)
    code = launcher.wait(timeout=60)
    assert code == 1
    # A kill names the signal; the collector's log holds no error, so none is quoted.
    assert last_line(read(out)) == (
        f"local.sh: error: collector-0 exited with signal SIGKILL (log: {collector_log})"
    )
    assert run_processes_of(tmp_path) == []


def test_restart_budget_counts_within_a_sliding_window():
    budget = RestartBudget(max_restarts=3, window_s=3600)
    assert [budget.take(t) for t in (0, 10, 20)] == [1, 2, 3]
    assert budget.take(30) is None  # a fourth crash within the hour stops the run
    assert budget.take(3599) is None
    # Crashes spread over days never exhaust it: the oldest leave the window.
    assert budget.take(3600) == 3
    assert budget.recent(3600 + 20) == 1
    assert [budget.take(t) for t in (86_400, 172_800, 259_200, 345_600)] == [1, 1, 1, 1]
