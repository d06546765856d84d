"""learning_curve: env steps and training minutes of a run that was stopped and relaunched."""

from __future__ import annotations

import json
import os

import pytest

from distributed_sac.acting import evaluation
from distributed_sac.layout import RunDir
from distributed_sac.tools import learning_curve

T0 = 1_800_000_000.0
RELAUNCH = T0 + 7200  # the run waited two hours between its two launches


def write_run(root) -> RunDir:
    run = RunDir(str(root))
    os.makedirs(run.eval)
    os.makedirs(run.logs)
    lines = []

    def learner(event, when, **fields):
        lines.append(f"I1125 reports.py:18] {event} {json.dumps(dict(fields, unix_time=when))}")

    # First launch: 100 steps/s, 2 pairs per step after 1000 initial pairs; stopped at step 2000.
    learner("learner_start", T0, train_step=0, pairs_drained=0)
    for step in (1000, 2000):
        learner("learner_progress", T0 + step / 100, train_step=step, pairs_drained=1000 + 2 * step)
    learner("learner_stopped", T0 + 21, train_step=2000, pairs_drained=5000)
    # Relaunch: restored at its checkpoint of step 2000, then on to 4000.
    learner("learner_start", RELAUNCH, train_step=2000, pairs_drained=5000)
    for step in (3000, 4000):
        when = RELAUNCH + (step - 2000) / 100
        learner("learner_progress", when, train_step=step, pairs_drained=1000 + 2 * step)
    with open(run.log("learner"), "w") as f:
        f.write("\n".join(lines) + "\n")
    # The relaunched server counts its inserts from 0 again.
    for step, server_count, when in (
        (1000, 3100, T0 + 11),
        (2000, 5100, T0 + 21),
        (3000, 2050, RELAUNCH + 11),
        (3500, 3000, RELAUNCH + 16),
    ):
        evaluation.append_evaluation(
            run.metrics,
            {
                "train_step": step,
                "env_steps": server_count,
                "AverageReturn": step / 1000,
                "wall_time": when,
            },
        )
    return run


def test_env_steps_and_minutes_count_on_across_a_relaunch(tmp_path):
    run = write_run(tmp_path / "run")
    curve = learning_curve.read_curve(run.root)
    assert [e["env_steps"] for e in curve] == [3000, 5000, 7000, 8000]  # 3500: interpolated
    assert [e["server_env_steps"] for e in curve] == [3100, 5100, 2050, 3000]
    # 11 s, 21 s, then the 2 hours stopped are left out: 21 + 11 s, 21 + 16 s.
    assert [round(e["training_minutes"] * 60, 3) for e in curve] == [11, 21, 32, 37]


def test_env_steps_count_the_repeated_actions(tmp_path):
    run = write_run(tmp_path / "run")
    log = open(run.log("learner")).read()
    log = log.replace("learner_start {", 'learner_start {"action_repeat": 4, ')
    with open(run.log("learner"), "w") as f:
        f.write(log)
    curve = learning_curve.read_curve(run.root)
    assert [e["env_steps"] for e in curve] == [12000, 20000, 28000, 32000]


def test_without_a_learner_log_the_metrics_figures_are_used(tmp_path):
    run = write_run(tmp_path / "run")
    os.remove(run.log("learner"))
    curve = learning_curve.read_curve(run.root)
    assert [e["env_steps"] for e in curve] == [3100, 5100, 2050, 3000]
    assert curve[-1]["training_minutes"] == pytest.approx((RELAUNCH + 16 - T0 - 11) / 60)


def test_an_exported_record_gives_the_same_curve(tmp_path):
    run = write_run(tmp_path / "run")
    with open(run.log("learner"), "a") as log:  # lines that are no report of the learner's
        log.write("W1125 some warning\nI1125 reports.py:18] collector_progress {}\n")
    learning_curve.export_record(run.root, str(tmp_path / "record"))
    record = RunDir(str(tmp_path / "record"))
    assert learning_curve.read_curve(record.root) == learning_curve.read_curve(run.root)
    assert "warning" not in open(record.log("learner")).read()
    assert sorted(os.listdir(record.root)) == ["eval", "logs"]
