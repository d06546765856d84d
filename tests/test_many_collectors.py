"""python -m benchmarks.many_collectors --quick: 8 collectors against one server at smoke
size hold the update-to-data ratio, each inserts, all stop by themselves at the final step."""

import json
import sys

import pytest

from benchmarks.many_collectors import window_ratio
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


def test_the_ratio_is_the_slope_over_the_window_not_its_two_ends():
    # A learner at exactly one train step per pair, 225 pairs behind the inserts (initial
    # collection and the feed), sampled 20 times: the server sees its step only at pushes of 25,
    # and each sample catches up to 30 pairs in flight. The last sample is 24 steps past a push
    # and 30 pairs ahead, the first neither: the two ends alone read 0.980.
    since_push = [0, 12, 3, 20, 7, 15, 1, 24, 9, 18, 5, 22, 11, 2, 16, 8, 21, 4, 13, 24]
    in_flight = [0, 14, 29, 6, 21, 11, 25, 3, 17, 8, 27, 12, 1, 19, 24, 5, 15, 28, 9, 30]
    samples = [{"t_s": 0.0, "train_step": None, "inserts": 0, "table_sizes": {"learner_feed": 0}}]
    for i, (late, extra) in enumerate(zip(since_push, in_flight)):
        step = 150 + 140 * i + late
        samples.append(
            {
                "t_s": 2.0 * (i + 1),
                "train_step": step - late,
                "inserts": step + 225 + extra,
                "table_sizes": {"learner_feed": 100},
            }
        )
    samples.append({**samples[-1], "train_step": 3000})  # at the end: not in the window
    window = window_ratio(samples, final_step=3000)
    assert round(window["train_steps"] / window["inserts"], 3) == 0.980, window
    assert abs(window["updates_per_insert"] - 1.0) <= 0.01, window
    assert window["samples"] == 20 and window["feed_sizes"] == [100, 100]
    assert window_ratio(samples[:3], final_step=3000) is None  # two samples: no slope


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
