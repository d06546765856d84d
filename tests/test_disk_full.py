"""The disk filling up while the learner writes a checkpoint or exports a policy: one line, exit
code 2, what was written before stays usable, nothing half written is left. While the replay
server writes a periodic checkpoint: one line, counted, and the server serves on.

The run directory is a small tmpfs the test mounts (and unmounts), filled by the test
once the first checkpoint or policy is out. Needs root (CI is).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import numpy as np
import pytest
import reverb

from distributed_sac.layout import RunDir
from distributed_sac.replay import server_checkpoints, tables
from tests.conftest import (
    last_line,
    read,
    reports,
    run_python,
    start_by_hand,
    wait_for_line,
    wait_until,
)
from tests.test_server_checkpoints import MINITAUR_PAIR_WIDTH, insert_pairs, pair_numbers, start

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True, timeout=60
    )
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=60)


def fill(disk, leave_bytes: int = 0) -> str:
    """Writes a file until the disk is full (or has about `leave_bytes` left); its path."""
    path = os.path.join(disk, "filler")
    chunk = b"\0" * (1 << 20)
    with open(path, "wb", buffering=0) as f:
        try:
            while True:
                f.write(chunk)
        except OSError:
            pass
    # Whatever is left is smaller than a page or two.
    with open(path, "ab", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 512)
        except OSError:
            pass
    if leave_bytes:
        os.truncate(path, os.path.getsize(path) - leave_bytes)
    return path


def learner_error(learner, log) -> str:
    code = learner.wait(timeout=120)
    line = last_line(read(log))
    print(f"learner exited {code}: {line}")
    assert code == 2, read(log)[-3000:]
    assert "Traceback" not in read(log), read(log)[-3000:]
    return line


@pytest.mark.slow
def test_checkpoint_on_a_full_disk_keeps_the_previous_one(processes, tmp_path, small_disk):
    _, learner, _, run = start_by_hand(
        processes,
        tmp_path,
        "RunConfig.checkpoint_interval = 150",
        "RunConfig.policy_save_interval = 100000",
        root=small_disk / "run",
    )
    log = tmp_path / "learner.log"
    wait_until(lambda: reports(log, "learner_checkpoint"), "checkpoint", learner, 120)
    fill(small_disk)
    line = learner_error(learner, log)
    saved = reports(log, "learner_checkpoint")[-1]["path"]  # the last one written in full
    assert line.startswith("learner: error: no space left on device writing checkpoint "), line
    assert f"the latest complete checkpoint is still {saved}" in line
    # Nothing of the failed checkpoint is left: every file belongs to one the index lists.
    index = read(os.path.join(run.checkpoints, "checkpoint"))
    assert f'model_checkpoint_path: "{os.path.basename(saved)}"' in index
    for name in os.listdir(run.checkpoints):
        assert name == "checkpoint" or f'"{name.split(".")[0]}"' in index, (name, index)
    # With space again, a learner resumes from it.
    os.remove(small_disk / "filler")
    resumed_log = tmp_path / "learner_resumed.log"
    resumed = processes.role("learner", learner.args[3:], resumed_log)
    wait_until(lambda: reports(resumed_log, "learner_start"), "learner_start", resumed, 120)
    (start,) = reports(resumed_log, "learner_start")
    assert start["restored_from"] == saved
    assert start["train_step"] == int(saved.rsplit("-", 1)[1])


@pytest.mark.slow
def test_policy_export_on_a_full_disk_keeps_the_previous_policy(processes, tmp_path, small_disk):
    _, learner, _, run = start_by_hand(
        processes,
        tmp_path,
        "RunConfig.checkpoint_interval = 100000",
        "RunConfig.policy_save_interval = 150",
        root=small_disk / "run",
    )
    log = tmp_path / "learner.log"
    wait_until(lambda: os.path.exists(run.collect_policy), "policy export", learner, 120)
    fill(small_disk)
    line = learner_error(learner, log)
    assert line.startswith("learner: error: no space left on device writing "), line
    assert line.endswith("is still the previous policy: free space, then start the run again")
    # Each name still points at a complete export, which loads; nothing half written is left.
    os.remove(small_disk / "filler")
    for policy in (run.greedy_policy, run.collect_policy):
        # The newest version is the published one (the failed one is gone), with at most the
        # one before it, kept for readers (policy_export.publish_dir).
        name = os.path.basename(policy)
        versions = sorted(
            (n for n in os.listdir(run.policies) if n.startswith(name + ".v")),
            key=lambda n: int(n.rsplit(".v", 1)[1]),
        )
        assert versions[-1] == os.readlink(policy) and len(versions) <= 2, versions
        loaded = run_python(
            # tf_agents registers the policies' distribution specs (the collect policy's).
            "import tensorflow as tf, tf_agents.distributions; "
            f"p = tf.saved_model.load({policy!r}); "
            "print(int(p.get_train_step().numpy()))",
            timeout_s=120,
        )
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        step = int(loaded.stdout.split()[-1])
        assert step > 0 and step % 150 == 0, (policy, step)


def insert_random_pairs(address: str, count: int) -> None:
    """`count` pairs of random values (which compress no smaller) into the experience table,
    streamed through one writer (a second or two for thousands)."""
    with reverb.Client(address).writer(max_sequence_length=1) as writer:
        for _ in range(count):
            writer.append([np.random.rand(2, MINITAUR_PAIR_WIDTH).astype(np.float32)])
            writer.create_item(tables.EXPERIENCE_TABLE, 1, 1.0)


def test_a_periodic_replay_checkpoint_on_a_full_disk_is_one_line_and_the_server_serves_on(
    processes, tmp_path, small_disk
):
    """The replay server's root_dir on the small disk, a checkpoint every 6 s. Before: a
    checkpoint that ran out of space mid-write crashed the server with a traceback (exit 1,
    which the launcher restarts, to fail the same way at the next interval); one small enough
    to sit in Reverb's write buffers came out empty with a DONE file, and Reverb deleted the
    good one before it. Now each failed checkpoint is one line, counted; nothing half written
    is left, the previous checkpoint stays the newest complete one, the server serves on, and
    once there is space again the next one is written."""
    root = small_disk / "run"
    server, log, address = start(  # its log off the small disk: a full disk loses no line
        processes,
        root,
        gin_bindings=(
            "RunConfig.replay_checkpoint_interval_s = 6",
            "RunConfig.replay_capacity = 20000",
        ),
        log_dir=tmp_path,
    )
    wait_for_line(log, "replay_server_ready", server)
    insert_pairs(address, 0, 30)
    wait_until(lambda: reports(log, "replay_checkpoint"), "replay checkpoint", server, 60)
    run = RunDir(str(root))
    (complete,) = server_checkpoints.complete_checkpoints(run.reverb)
    failed = lambda: reports(log, "replay_checkpoint_failed")  # noqa: E731
    # Room for a checkpoint like the last one, not for one with 2 MB more pairs, inserted
    # before the next one is due: Reverb's write fails midway.
    filler = fill(small_disk, leave_bytes=server_checkpoints.SPACE_MARGIN_BYTES + (1 << 19))
    more = 2 * 2**20 // (2 * MINITAUR_PAIR_WIDTH * 4)
    began = time.monotonic()
    insert_random_pairs(address, more)
    print(f"{more} pairs inserted in {time.monotonic() - began:.1f} s")
    wait_until(failed, "a failed checkpoint", server, 60)
    (first,) = failed()[:1]
    print(first)
    assert first["failures"] == 1
    assert first["error"] == (
        f"no space left on device writing a replay checkpoint to {run.reverb}; the newest "
        f"complete one is still {complete}"
    )
    # The disk full: the next one is not attempted (Reverb would write it empty).
    os.remove(filler)
    filler = fill(small_disk)
    wait_until(lambda: len(failed()) >= 2, "a second failed checkpoint", server, 60)
    second = failed()[1]
    print(second)
    assert second["failures"] == 2
    assert second["error"].startswith(
        f"no space left on device for a replay checkpoint in {run.reverb} ("
    ), second
    assert "Traceback" not in read(log), read(log)[-3000:]
    # Nothing half written is left; the server still takes and hands out pairs.
    assert os.listdir(run.reverb) == [os.path.basename(complete)]
    insert_pairs(address, 100_000, 1)
    assert pair_numbers(address, 1)
    os.remove(filler)
    written = len(reports(log, "replay_checkpoint"))
    wait_until(lambda: len(reports(log, "replay_checkpoint")) > written, "checkpoint", server, 60)
    newest = reports(log, "replay_checkpoint")[-1]
    assert newest["table_sizes"][tables.EXPERIENCE_TABLE] == 30 + more + 1
    assert server_checkpoints.complete_checkpoints(run.reverb) == [newest["path"]]
    server.send_signal(signal.SIGTERM)
    assert server.wait(timeout=60) == 0, read(log)[-3000:]
