"""The disk filling up while the learner writes a checkpoint or exports a policy: one line, exit
code 2, what was written before stays usable, nothing half written is left.

The learner's run directory is a small tmpfs the test mounts (and unmounts), filled by the test
once the first checkpoint or policy is out. Needs root (CI is).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tests.conftest import last_line, read, reports, start_by_hand

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MiB tmpfs at tmp_path/disk, unmounted after the test."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(disk) -> str:
    """Writes a file until the disk is full; its path."""
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
    return path


def learner_error(learner, log) -> str:
    code = learner.wait(timeout=120)
    line = last_line(read(log))
    print(f"learner exited {code}: {line}")
    assert code == 2, read(log)[-3000:]
    assert "Traceback" not in read(log), read(log)[-3000:]
    return line


def wait_until_true(condition, what: str, learner, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert learner.poll() is None, f"the learner exited before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout_s:.0f} s"
        time.sleep(0.1)


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
    wait_until_true(lambda: reports(log, "learner_checkpoint"), "checkpoint", learner)
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
    wait_until_true(lambda: reports(resumed_log, "learner_start"), "learner_start", resumed)
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
    wait_until_true(lambda: os.path.exists(run.collect_policy), "policy export", learner)
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
        loaded = subprocess.run(
            [
                sys.executable,
                "-c",
                # tf_agents registers the policies' distribution specs (the collect policy's).
                "import tensorflow as tf, tf_agents.distributions; "
                f"p = tf.saved_model.load({policy!r}); "
                "print(int(p.get_train_step().numpy()))",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )
        assert loaded.returncode == 0, loaded.stderr[-2000:]
        step = int(loaded.stdout.split()[-1])
        assert step > 0 and step % 150 == 0, (policy, step)
