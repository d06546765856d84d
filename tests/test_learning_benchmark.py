"""python -m benchmarks.learning in its tiny mode: both kinds of run, the comparison, the plot."""

from __future__ import annotations

import json
import struct
import sys

import pytest

from tests.conftest import run_to_end

BENCHMARK = [sys.executable, "-m", "benchmarks.learning"]


def png_size(path) -> tuple[int, int]:
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


@pytest.mark.slow
def test_quick_learning_benchmark_compares_loop_and_cluster(processes, tmp_path):
    out = tmp_path / "results"
    log = tmp_path / "learning.log"
    proc = processes.start([*BENCHMARK, "--quick", "--output_dir", str(out)], log)
    code = proc.wait(timeout=1200)
    printed = log.read_text()
    assert code == 0, printed[-3000:]
    result = json.loads((out / "learning.json").read_text())
    names = [run["name"] for run in result["runs"]]
    assert names == [
        "loop-seed0",
        "cluster-seed0",
        "loop-seed1",
        "cluster-seed1",
        "cluster-seed0-repeat",
    ]
    # smoke.gin: 200 random steps, then 200 train steps for a 400-step budget, evaluated every
    # 100 env steps.
    for run in result["runs"]:
        points = run["points"]
        steps = [p["train_step"] for p in points]
        assert steps[0] == 0 and steps[-1] == 200 and steps == sorted(steps), (run["name"], steps)
        assert all(p["wall_s"] > 0 for p in points)
        # Training starts once the table holds the initial collection (200 items in smoke.gin).
        assert all(p["env_steps"] >= 200 for p in points if p["train_step"] > 0)
        assert all(p["AverageEpisodeLength"] > 0 for p in points)
        if run["kind"] == "loop":
            # Items stored: one per env step (reset steps not counted, as TF-Agents' Actor does
            # not), less the first step of the episode under way, which has no pair yet.
            assert steps == [0, 100, 200]
            assert [p["env_steps"] for p in points] == [199, 299, 399]
            wall = [p["wall_s"] for p in points]
            assert wall == sorted(wall)
    summary = result["summary"]
    assert len(summary["at_equal_env_steps"]) == 3
    for row in summary["at_equal_env_steps"]:
        assert len(row["loop_returns"]) == 2 and len(row["cluster_returns"]) == 2
        assert row["within_or_above"] == (row["cluster_mean"] >= min(row["loop_returns"]))
    assert summary["loop_seconds"] > 0 and summary["budget_time_ratio"] > 0
    assert len(summary["reach_loop_final"]) == 3
    same = summary["same_seed"]
    assert same["seed"] == 0
    curves = summary["curves_at_grid"]
    gaps = [abs(a - b) for a, b in zip(curves["cluster-seed0"], curves["cluster-seed0-repeat"])]
    assert same["mean_abs_gap"] == pytest.approx(sum(gaps) / len(gaps))
    first, repeat = same["first_evaluation"]
    if first["train_step"] == repeat["train_step"] == 0:
        # One seed, untrained weights, one evaluation environment: the same episodes.
        assert first["AverageReturn"] == repeat["AverageReturn"]
    assert png_size(out / "learning.png") == (1300, 500)
    assert "within or above" in printed and "same seed 0 twice" in printed
    print(printed[printed.index("learning on") :])

    # --summarize recomputes the same figures from learning.json alone.
    (out / "learning.png").unlink()
    again = _run("--summarize", str(out))
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads((out / "learning.json").read_text())["summary"] == summary
    assert png_size(out / "learning.png") == (1300, 500)


def _run(*args):
    return run_to_end([*BENCHMARK, *args])


def _error(result) -> str:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.mark.slow
def test_bad_arguments_get_one_line_errors(tmp_path):
    new = str(tmp_path / "new")
    assert _error(_run("--seeds", "0", "--output_dir", new)) == (
        "learning: error: --seeds needs at least two distinct non-negative seeds; got '0'"
    )
    assert _error(_run("--seeds", "a,b", "--output_dir", new)).startswith(
        "learning: error: --seeds must be like 0,1"
    )
    assert _error(_run("--env_steps", "10000", "--output_dir", new)) == (
        "learning: error: --env_steps (10000) must exceed RunConfig.initial_collect_steps "
        "(10000), the random steps both runs take first"
    )
    assert _error(_run("--eval_every", "0", "--output_dir", new)) == (
        "learning: error: --eval_every must be at least 1, got 0"
    )
    full = tmp_path / "full"
    full.mkdir()
    (full / "learning.json").write_text("{}")
    assert _error(_run("--output_dir", str(full))) == (
        f"learning: error: --output_dir {full} exists and is not an empty directory"
    )
    assert _error(_run("--output_dir", str(tmp_path / "no" / "such"))).startswith(
        "learning: error: cannot create --output_dir"
    )
    assert _error(_run("--gin_file", str(tmp_path / "none.gin"), "--output_dir", new)).startswith(
        "learning: error: gin file not found"
    )
    assert (
        _error(_run("--gin_bindings", "RunConfig.batch_size = -1", "--output_dir", new))
        == "learning: error: RunConfig.batch_size must be an integer of at least 1, got -1"
    )
    assert _error(_run("--summarize", new)).startswith(
        f"learning: error: cannot read the figures in {new}/learning.json"
    )
