"""python -m benchmarks.many_collectors --quick: 8 collectors against one server at smoke
size hold the update-to-data ratio, each inserts, all stop by themselves at the final step."""

import json
import sys

import pytest

from tests.conftest import REPO_ROOT, run_processes_of, run_to_end

SCRIPT = [sys.executable, "-m", "benchmarks.many_collectors"]


@pytest.mark.slow
def test_eight_collectors_hold_the_ratio_and_stop_at_the_final_step(processes, tmp_path):
    output, log, root = tmp_path / "many.json", tmp_path / "many.log", tmp_path / "run"
    command = [*SCRIPT, "--quick", "--root_dir", root, "--output", output]
    proc = processes.start([str(part) for part in command], log)
    code = proc.wait(timeout=900)
    printed = log.read_text()
    assert code == 0, printed[-3000:]
    figures = json.loads(output.read_text())
    print(printed[printed.index("effective updates_per_insert") :])
    assert figures["num_collectors"] == 8 and len(figures["collectors"]) == 8
    for name, collector in figures["collectors"].items():
        assert collector["items_created"] > 0, (name, collector)
        assert collector["stopped_at_final_step"], (name, collector)
    window = figures["window"]
    assert window["train_steps"] >= 1000 and window["inserts"] >= 1000, window
    assert abs(window["updates_per_insert"] - 1.0) <= 0.02, window
    assert figures["launcher_exit_code"] == 0
    assert figures["launcher_unreadable_lines"] == [] and figures["tracebacks"] == {}
    assert all(figures["targets"].values()), figures["targets"]
    assert run_processes_of(root) == []


def test_many_collectors_refuses_a_free_ratio_in_one_line(tmp_path):
    result = run_to_end(
        [
            *SCRIPT,
            "--gin_file",
            f"{REPO_ROOT}/gin/smoke.gin",
            "--gin_bindings",
            "RunConfig.updates_per_env_step = None",
            "--root_dir",
            str(tmp_path / "run"),
        ],
        300,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == (
        "many_collectors: error: the config leaves the update-to-data ratio free; "
        "set updates_per_env_step"
    )
