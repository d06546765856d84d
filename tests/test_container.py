"""The image built for real with podman (docker/build_local.sh), two collectors running in it
against a replay server and a learner on the host. Needs root (CI is); podman and what it runs
on come from launch/system-packages.txt (launch/test.sh and build_local.sh install them)."""

from __future__ import annotations

import os
import time

import pytest

from tests.conftest import SMOKE_GIN, read, reports, start_server
from tests.podman import IMAGE, needs_root, podman

pytestmark = [needs_root, pytest.mark.slow]


def test_two_containerised_collectors_feed_a_learner_on_the_host(processes, tmp_path, podman_env):
    size = podman(podman_env, "image", "inspect", "--format", "{{.Size}}", IMAGE)
    address, _, _ = start_server(processes, tmp_path)
    common = ["--gin_file", SMOKE_GIN, "--replay_server_address", address]
    learner_log = tmp_path / "learner.log"
    learner = processes.role("learner", [*common, "--root_dir", str(tmp_path / "run")], learner_log)

    names = [f"dsac-test-{os.getpid()}-{task}" for task in (0, 1)]
    started = time.monotonic()
    try:
        collectors = [
            processes.start(
                [
                    "podman",
                    "run",
                    "--rm",
                    "--network=host",  # the image's entrypoint is tini: no --init needed
                    "--name",
                    name,
                    IMAGE,
                    "python",
                    "-m",
                    "distributed_sac.roles.collector",
                    "--gin_file=/app/gin/smoke.gin",
                    f"--replay_server_address={address}",
                    f"--task={task}",
                ],
                tmp_path / f"{name}.log",
                env=podman_env,
            )
            for task, name in enumerate(names)
        ]
        first_progress = None
        deadline = time.monotonic() + 600
        while learner.poll() is None and time.monotonic() < deadline:
            for collector, name in zip(collectors, names):
                code = collector.poll()
                assert code in (None, 0), read(tmp_path / f"{name}.log")[-3000:]
            progress = reports(tmp_path / f"{names[0]}.log", "collector_progress")
            if first_progress is None and progress:
                first_progress = time.monotonic() - started
            time.sleep(0.5)
        assert learner.wait(timeout=10) == 0, read(learner_log)[-3000:]
        for collector, name in zip(collectors, names):
            assert collector.wait(timeout=120) == 0, read(tmp_path / f"{name}.log")[-3000:]
    finally:
        podman(podman_env, "rm", "-f", "--ignore", *names)
    leftover = podman(podman_env, "ps", "-a", "--format", "{{.Names}}").split()
    assert not set(names) & set(leftover)

    assert [r["train_step"] for r in reports(learner_log, "learner_done")] == [300]
    assert first_progress is not None, "no progress report from the first container"
    items = []
    for task, name in enumerate(names):
        (done,) = reports(tmp_path / f"{name}.log", "collector_done")
        assert done["task"] == task and done["items_created"] > 50
        assert done["last_policy_train_step"] == 300
        items.append(done["items_created"])
    print(
        f"image {int(size) / 1e6:.0f} MB; containerised collectors inserted {items} items; "
        f"first progress report ({SMOKE_GIN.rsplit('/', 1)[1]}: 50 env steps) "
        f"{first_progress:.1f}s after podman run"
    )
