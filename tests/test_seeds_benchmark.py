"""python -m benchmarks.seeds: the tool behind README's per-seed tables. It reads the committed
curves back to the published figures, runs seeds on the launcher and exports their curves, and
refuses bad arguments in one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys

import pytest

from distributed_sac.layout import RunDir
from distributed_sac.reports import fields_of
from tests.conftest import REPO_ROOT, run_to_end

SEEDS = [sys.executable, "-m", "benchmarks.seeds"]
DEFAULT_SEEDS = os.path.join(REPO_ROOT, "docs", "minitaur_gamma095_seeds")


def test_summarize_reads_the_default_seeds_back_to_the_published_figures(tmp_path):
    copy = tmp_path / "seeds"  # --summarize writes seeds.json where it reads
    shutil.copytree(DEFAULT_SEEDS, copy)
    marks = "500000,1000000,2000000"
    command = [*SEEDS, "--gin_file", f"{REPO_ROOT}/gin/minitaur.gin", "--seeds", "0,1,2,3,4"]
    command += ["--summarize", "--output_dir", str(copy), "--env_steps_marks", marks]
    result = run_to_end([*command, "--thresholds", "10,15"], 300)
    assert result.returncode == 0, result.stderr[-3000:]
    milestones = json.loads((copy / "seeds.json").read_text())["milestones"]
    rows = milestones["seeds"]
    # docs/results.md "The default (discount 0.95) over five seeds".
    at_1m = {seed: round(row["at"]["1000000"], 2) for seed, row in rows.items()}
    last3_1m = {seed: round(row["last3"]["1000000"], 2) for seed, row in rows.items()}
    assert at_1m == {"0": 22.82, "1": 19.09, "2": 21.29, "3": 18.70, "4": 21.59}
    assert last3_1m == {"0": 22.94, "1": 19.24, "2": 21.29, "3": 18.70, "4": 20.91}
    # The shipped policy is seed 1's best.
    best = rows["1"]["best"]
    assert (round(best["AverageReturn"], 2), best["env_steps"], best["train_step"]) == (
        23.27,
        1910000,
        475000,
    )
    assert rows["3"]["reached"]["10.0"] == {"env_steps": 410000, "training_minutes": 25.6}
    assert rows["3"]["at"]["2000000"] is None  # seeds 3 and 4 ran to 1M
    assert round(milestones["median_at"]["1000000"], 2) == 21.29
    assert re.search(
        r"^s2 +20\.94 \(20\.94\) +21\.29 \(21\.29\) +22\.11", result.stdout, re.M
    ), result.stdout


@pytest.mark.slow
def test_a_seed_runs_on_the_launcher_and_its_exported_curve_reads_back(processes, tmp_path):
    # One seed: the table over several is the test above's.
    runs, export = tmp_path / "runs", tmp_path / "export"
    command = [*SEEDS, "--gin_file", f"{REPO_ROOT}/gin/smoke.gin", "--seeds", "1"]
    command += ["--output_dir", runs, "--export_dir", export, "--timeout_s", "600"]
    command += ["--env_steps_marks", "300,450", "--thresholds=-1000,1000", "--evaluator_nice", "5"]
    log = tmp_path / "seeds.log"
    code = processes.start([str(part) for part in command], log).wait(timeout=1500)
    assert code == 0, log.read_text()[-3000:]
    milestones = json.loads((runs / "seeds.json").read_text())["milestones"]
    assert set(milestones["seeds"]) == {"1"}
    started = fields_of(RunDir(str(runs / "s1")).log("evaluator"), "evaluator_start")
    assert started[-1]["nice"] == min(19, os.nice(0) + 5)  # added to the niceness it inherits
    for seed, row in milestones["seeds"].items():
        assert row["last_env_steps"] >= 450, (seed, row)
        assert all(row["at"][mark] is not None for mark in ("300", "450")), (seed, row)
        assert row["reached"]["-1000.0"]["env_steps"] <= 300, (seed, row)
        assert row["reached"]["1000.0"] is None
        assert (export / f"s{seed}" / "eval" / "metrics.jsonl").is_file()
        assert (export / f"s{seed}" / "logs" / "learner.log").is_file()
    # Only the curves were exported, and they give the same figures as the runs.
    assert sorted(p.name for p in export.iterdir()) == ["s1", "seeds.json"]
    again = [*SEEDS, "--gin_file", f"{REPO_ROOT}/gin/smoke.gin", "--seeds", "1", "--summarize"]
    again += ["--output_dir", str(export), "--env_steps_marks", "300,450"]
    result = run_to_end([*again, "--thresholds=-1000,1000"], 300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads((export / "seeds.json").read_text())["milestones"] == milestones


def test_seeds_refuses_bad_arguments_in_one_line(tmp_path):
    def error(*args) -> str:
        result = run_to_end([*SEEDS, "--gin_file", f"{REPO_ROOT}/gin/smoke.gin", *args], 300)
        assert result.returncode != 0
        return result.stderr.strip()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert error("--seeds", "0", "--summarize", "--output_dir", str(empty)) == (
        f"seeds: error: no evaluations at {empty}/s0/eval/metrics.jsonl"
    )
    assert error("--seeds", "a,b", "--output_dir", str(empty)).startswith(
        "seeds: error: --seeds must be like 0,1"
    )
    assert error("--env_steps_marks", "0", "--output_dir", str(empty)) == (
        "seeds: error: --env_steps_marks must be positive"
    )
    assert error("--evaluator_nice", "-1", "--output_dir", str(empty)) == (
        "seeds: error: --evaluator_nice must be 0 to 19, got -1"
    )
