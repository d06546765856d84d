"""One live run per root_dir: a relaunch waits for the roles of a killed launcher (they hold the
run's lock with it) instead of running beside them. (A second launcher beside a live one is
refused: tests/test_observability.py, on its live cluster.)"""

from __future__ import annotations

import signal
import time

import pytest

from distributed_sac.layout import RunDir
from distributed_sac.runtime.waits import poll_until
from tests.conftest import (
    bindings,
    finish,
    last_line,
    launch,
    pid_of,
    read,
    reports,
    run_processes_of,
    stacks_and_logs,
    wait_until,
)


@pytest.mark.slow
def test_relaunch_waits_for_an_orphaned_role_and_then_resumes(processes, tmp_path, no_leftovers):
    """The launcher SIGKILLed while its learner takes 30 s to stop (a fault that delays its
    final checkpoint): the learner outlives it holding the lock, so a relaunch waits and fails
    after --orphan_wait_s (10 s here, 30 by default) saying why. Once the learner has
    checkpointed and exited, the same relaunch resumes from that checkpoint."""
    root = tmp_path / "run"
    # Killed at its first checkpoint (train step 150), the run is far from its 600th step.
    args = bindings("RunConfig.num_iterations = 600", "FaultInjection.stop_delay_s = 30")
    launcher, _ = launch(processes, root, *args)
    run = RunDir(str(root))
    wait_until(lambda: reports(run.log("learner"), "learner_checkpoint"), "a checkpoint", launcher)
    learner = pid_of(root, "learner")
    launcher.send_signal(signal.SIGKILL)
    launcher.wait(timeout=10)
    gone = time.monotonic()

    def others():
        return [p for p in run_processes_of(root) if int(p.split()[0]) != learner]

    poll_until(lambda: not others(), 20)
    left = others()
    print(f"roles left {time.monotonic() - gone:.1f}s after the launcher's SIGKILL: {left}")
    assert left == [], stacks_and_logs(left)  # server, collector, evaluator: gone with it
    assert any(int(p.split()[0]) == learner for p in run_processes_of(root))

    refused, refused_out = launch(
        processes, root, *args, "--orphan_wait_s", "10", out=tmp_path / "refused.out"
    )
    assert refused.wait(timeout=120) == 2
    output = read(refused_out)
    assert "waiting up to 10s for the roles of a stopped run to exit" in output
    assert last_line(output) == (
        f"local.sh: error: --root_dir {root} is still held by roles of a stopped run after "
        f"10s (see: fuser {run.run_lock})"
    )
    assert len(reports(run.log("learner"), "learner_start")) == 1  # nothing was relaunched

    poll_until(lambda: not run_processes_of(root), 60)
    assert run_processes_of(root) == []
    (saved,) = reports(run.log("learner"), "learner_stopped")  # its checkpoint on the way out
    relaunch, relaunch_out = launch(
        processes, root, *bindings("RunConfig.num_iterations = 600"), out=tmp_path / "again.out"
    )
    finish(relaunch, relaunch_out)
    resumed = reports(run.log("learner"), "learner_start")[-1]
    print(f"orphan stopped at train_step {saved['train_step']}; relaunch resumed there")
    assert resumed["restored_from"] and resumed["train_step"] == saved["train_step"] > 0
