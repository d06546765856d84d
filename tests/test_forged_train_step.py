"""A client on the replay server's port that re-pushes the weights under a forged train step (the
final one, or 10⁹) neither ends the run nor gets its step into metrics.jsonl: collectors and the
evaluator believe a pushed step only up to the learner's record in the run directory, and
training is finished only once the learner's checkpoint of the final step is there. Also a
learner killed right before that checkpoint: its restart from an earlier one still finds
collectors to feed it."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import reverb
import tensorflow as tf

from distributed_sac.acting.evaluation import read_evaluations
from distributed_sac.builder import Builder
from distributed_sac.config import load_gin
from distributed_sac.layout import RunDir
from distributed_sac.learner import step_record
from distributed_sac.learner.step_record import LearnerStep, newest_checkpoint_step, write_reached
from distributed_sac.replay.weights import VARIABLES_TABLE
from distributed_sac.tools import monitor
from tests.conftest import (
    LAUNCHER_MODULE,
    RUN_TIMEOUT_S,
    SMOKE_GIN,
    bindings,
    finish,
    launch,
    read,
    reports,
    start_server,
    wait_until,
)

FORGED = 10**9


def push_forged_train_step(address: str, train_step: int) -> None:
    """Samples the `variables` item, sets its train step and inserts it back, as any client that
    reaches the server's port can (the issue's attacker)."""
    client = reverb.Client(address)
    sample = next(client.sample(VARIABLES_TABLE, num_samples=1, emit_timesteps=False))
    columns = [np.asarray(column[0]) for column in sample.data]
    assert columns[-1].shape == () and columns[-1].dtype == np.int64  # train_step sorts last
    columns[-1] = np.int64(train_step)
    client.insert(columns, {VARIABLES_TABLE: 1.0})


def test_pulled_weights_are_believed_up_to_the_learners_record(processes, tmp_path, monkeypatch):
    address, _, _ = start_server(processes, tmp_path)
    builder = Builder(load_gin([SMOKE_GIN], []))
    final = builder.config.num_iterations
    run = RunDir(str(tmp_path / "run")).create()
    policy = builder.make_policy()
    train_step = tf.Variable(50, dtype=tf.int64)
    learner = builder.make_weight_client(address, policy.variables(), train_step)
    write_reached(run, 50)
    learner.push()
    shared, alone = LearnerStep(run, final), LearnerStep(None, final)
    acting = builder.make_policy()
    with_record = builder.make_weight_client(address, acting.variables(), accept=shared.acceptable)
    without = builder.make_weight_client(
        address, builder.make_policy().variables(), accept=alone.acceptable
    )
    assert with_record.pull() == 50 and without.pull() == 50
    before = [v.numpy().copy() for v in acting.variables()]

    push_forged_train_step(address, FORGED)
    assert with_record.pull() is None and without.pull() is None  # above any bound
    # The launcher's replay summaries and `status --root_dir` show the learner's step.
    client = reverb.Client(address)
    assert monitor.server_counters(client)["train_step"] == FORGED
    assert monitor.server_counters(client, run_dir=run)["train_step"] == 50
    push_forged_train_step(address, final)
    assert with_record.pull() is None  # the learner has not reached it
    assert with_record.newest_train_step == final and with_record.train_step == 50
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(before, acting.variables()))
    assert not shared.finished(with_record.newest_train_step, with_record.train_step)
    # A role without the learner's run directory has only the server's number (README: Security).
    assert without.pull() == final and alone.finished(final, final)

    # The learner's own progress moves the bound; its final checkpoint, as TF writes it, ends it.
    write_reached(run, final)
    assert with_record.pull() == final
    assert not shared.finished(final, final)
    checkpoint = tf.train.Checkpoint(step=tf.Variable(1))
    tf.train.CheckpointManager(checkpoint, run.checkpoints, 3).save(checkpoint_number=final - 150)
    assert newest_checkpoint_step(run) == final - 150 and not shared.finished(final, final)
    tf.train.CheckpointManager(checkpoint, run.checkpoints, 3).save(checkpoint_number=final)
    assert newest_checkpoint_step(run) == final and shared.finished(final, final)
    # Found before the final weights were taken: it waits for them, but not for good.
    late = LearnerStep(run, final)
    assert not late.finished(final, final - 25)
    monkeypatch.setattr(step_record, "FINAL_WEIGHTS_WAIT_S", 0.0)
    assert late.finished(final, final - 25)


def learner_steps(log) -> list[tuple[float, int]]:
    """(unix time, train step) of the learner's progress and done reports."""
    return [
        (r["unix_time"], r["train_step"])
        for event in ("learner_progress", "learner_done")
        for r in reports(log, event)
    ]


@pytest.mark.slow
def test_a_client_pushing_forged_train_steps_neither_ends_nor_hangs_the_run(
    processes, tmp_path, no_leftovers
):
    """The issue's attack on a launcher's run: once the first evaluation is written, forged final
    and 10⁹ train steps twice a second for 10 s."""
    final = 800
    root = tmp_path / "run"
    run = RunDir(str(root))
    launcher, out = launch(
        processes,
        root,
        *bindings(f"RunConfig.num_iterations = {final}"),
        command=LAUNCHER_MODULE,
    )
    wait_until(lambda: read_evaluations(run.metrics)[0], "the first evaluation", launcher)
    address = re.search(r"replay server ready on (\S+)", read(out)).group(1)
    # Where training stood when the first forged push landed: the attack must come well before
    # the end (the learner may train on during its 10 s).
    attacked_at_step = max((s for _, s in learner_steps(run.log("learner"))), default=0)
    started = time.monotonic()
    pushes = 0
    while time.monotonic() - started < 10:
        push_forged_train_step(address, (final, FORGED)[pushes % 2])
        pushes += 1
        time.sleep(0.5)
    output = finish(launcher, out)  # exit 0 within RUN_TIMEOUT_S
    print(f"{pushes} forged pushes from train step ~{attacked_at_step}")
    assert attacked_at_step < final - 100, "the attack came too late to tell anything"

    assert [r["train_step"] for r in reports(run.log("learner"), "learner_done")] == [final]
    progress = learner_steps(run.log("learner"))
    evaluations, _ = read_evaluations(run.metrics)
    assert evaluations[-1]["train_step"] == final
    for line in evaluations:
        # Progress is reported every log_interval (50) steps: the learner had reached at most
        # the step of its last report before the pull, plus 50.
        reached = max([step for at, step in progress if at <= line["weights_time"]], default=0)
        assert line["train_step"] <= reached + 50, (line, reached)
    refused = "ignored weights pushed under train step"
    assert refused in read(run.log("collector-0")) and refused in read(run.log("evaluator"))
    (done,) = reports(run.log("collector-0"), "collector_done")
    assert done["last_policy_train_step"] == final
    assert "restarted" not in output


@pytest.mark.slow
def test_a_learner_killed_before_its_final_checkpoint_finishes_after_its_restart(
    processes, tmp_path, no_leftovers
):
    """SIGKILL after the last chunk of training, before the final checkpoint (checkpoints every
    150 steps: the restart resumes from 300 and needs experience for 100 more steps)."""
    root = tmp_path / "run"
    run = RunDir(str(root))
    launcher, out = launch(
        processes,
        root,
        *bindings(
            "RunConfig.num_iterations = 400", "FaultInjection.kill_before_final_checkpoint = True"
        ),
        command=LAUNCHER_MODULE,
    )
    wait_until(
        lambda: "learner exited with signal SIGKILL" in read(out),
        "the learner's kill",
        launcher,
        RUN_TIMEOUT_S,
    )
    output = finish(launcher, out)
    starts = reports(run.log("learner"), "learner_start")
    assert [s["train_step"] for s in starts] == [0, 300], output[-3000:]
    assert [r["train_step"] for r in reports(run.log("learner"), "learner_done")] == [400]
    assert newest_checkpoint_step(run) == 400
    assert read_evaluations(run.metrics)[0][-1]["train_step"] == 400
    (done,) = reports(run.log("collector-0"), "collector_done")
    assert done["last_policy_train_step"] == 400
