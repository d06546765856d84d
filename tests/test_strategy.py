"""The learner under MirroredStrategy on 2 logical CPU devices, against a live server."""

from __future__ import annotations

import math

import pytest

from tests.conftest import SMOKE_GIN, read, reports, start_server


@pytest.mark.slow
def test_mirrored_learner_trains_and_pushes_weights_a_collector_pulls(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path)
    common = ["--gin_file", SMOKE_GIN, "--replay_server_address", address]
    learner_log, collector_log = tmp_path / "learner.log", tmp_path / "collector.log"
    learner = processes.role(
        "learner",
        [*common, "--root_dir", str(tmp_path / "run"), "--strategy", "mirrored"],
        learner_log,
    )
    # --task auto: the id compose replicas get, from the hostname.
    collector = processes.role("collector", [*common, "--task", "auto"], collector_log)
    assert learner.wait(timeout=400) == 0, read(learner_log)[-3000:]
    assert collector.wait(timeout=120) == 0, read(collector_log)[-3000:]

    (start,) = reports(learner_log, "learner_start")
    assert start["strategy"] == "mirrored" and start["replicas"] == 2
    losses = [r["loss"] for r in reports(learner_log, "learner_progress")]
    print(f"mirrored learner over 2 CPU devices, losses: {losses}")
    assert len(losses) >= 5 and all(math.isfinite(loss) for loss in losses)
    assert [r["train_step"] for r in reports(learner_log, "learner_done")] == [300]
    (done,) = reports(collector_log, "collector_done")
    assert done["last_policy_train_step"] == 300 and done["policy_versions"] >= 2
    assert 0 <= done["task"] < 1_000_000


def test_batch_not_divisible_by_replicas_is_named(processes, tmp_path):
    address, _, _ = start_server(processes, tmp_path)
    log = tmp_path / "learner.log"
    learner = processes.role(
        "learner",
        [
            "--gin_file",
            SMOKE_GIN,
            "--replay_server_address",
            address,
            "--root_dir",
            str(tmp_path / "run"),
            "--strategy",
            "mirrored",
            "--mirrored_cpu_devices",
            "3",
        ],
        log,
    )
    assert learner.wait(timeout=200) == 2
    assert read(log).strip().splitlines()[-1] == (
        "learner: error: RunConfig.batch_size (32) must be divisible by the strategy's 3 replicas"
    )
