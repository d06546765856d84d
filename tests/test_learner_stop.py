"""python -m benchmarks.learner_stop --quick: SIGTERMs to a training learner, each timed, each
followed by a restart from the checkpoint it wrote on the way out."""

import json
import sys

import pytest

SCRIPT = [sys.executable, "-m", "benchmarks.learner_stop"]


@pytest.mark.slow
def test_quick_learner_stop_times_each_stop(processes, tmp_path):
    output, log = tmp_path / "stop.json", tmp_path / "stop.log"
    proc = processes.start([*SCRIPT, "--quick", "--output", str(output)], log)
    code = proc.wait(timeout=900)
    printed = log.read_text()
    assert code == 0, printed[-3000:]
    print(printed[printed.index("stop 1:") :])
    figures = json.loads(output.read_text())
    assert len(figures["stops"]) == 2
    for stop in figures["stops"]:
        # The checkpoint is written before the process exits, both after the signal.
        assert 0 < stop["checkpoint_written_s"] <= stop["exit_s"], stop
        assert stop["stop_checkpoint_s"] > 0
    # The restarted learner resumed: the second stop is further on than the first.
    assert figures["stops"][1]["train_step"] > figures["stops"][0]["train_step"]
    assert figures["policy_export_s"] and figures["checkpoint_s"]
    assert figures["launcher_learner_grace_s"] == 5.6
