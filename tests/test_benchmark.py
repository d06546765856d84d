"""python -m benchmarks.throughput in its tiny mode: every figure the bench tooling reads."""

import json
import sys

import pytest

from tests.conftest import run_to_end

BENCHMARK = [sys.executable, "-m", "benchmarks.throughput"]
KEYS = [
    "env_limit",
    "learner_limit",
    "baseline_it_per_s",
    "cluster_learner_steps_per_s",
    "cluster_env_steps_per_s",
    "collector_alone_steps_per_s",
    "learner_alone_steps_per_s",
    "collector_vs_env_limit",
    "learner_vs_limit",
    "cluster_vs_baseline",
    "cluster_vs_learner_limit",
    "cpu_s_per_env_step",
    "cpu_s_per_train_step",
    "machine_limit_utd1",
    "cluster_vs_machine_limit",
    "learner_alone_peak_rss_mb",
]


@pytest.mark.slow
def test_quick_benchmark_writes_every_key_positive(processes, tmp_path):
    output = tmp_path / "throughput.json"
    log = tmp_path / "throughput.log"
    command = [*BENCHMARK, "--quick", "--num_collectors", "1", "--output", output]
    proc = processes.start([str(part) for part in command], log)
    code = proc.wait(timeout=900)
    printed = log.read_text()
    assert code == 0, printed[-3000:]
    figures = json.loads(output.read_text())
    for key in KEYS:
        assert isinstance(figures[key], float) and figures[key] > 0, (key, figures.get(key))
    assert figures["machine"]["cores"] >= 1 and figures["machine"]["cpu_model"]
    assert figures["date"].startswith("20")
    assert figures["cluster_runs"][0]["drained_per_s"] > 0
    # The quick run's alone phases hold a 100 000-pair replay: 100 000 x 2 x 40 float32 (32 MB)
    # in the learner, on top of TensorFlow's few hundred MB.
    assert figures["learner_alone_replay_capacity"] == 100_000
    assert figures["learner_alone_peak_rss_mb"] > 32
    # Collectors pull every 25 env steps and the learner pushes every 25 train steps (smoke.gin),
    # so the weights a collector replaces are some pushes old.
    assert figures["cluster_runs"][0]["mean_policy_lag_steps"] > 0
    # The table printed the same figures.
    assert "cluster_vs_baseline (target >= 3.5)" in printed
    assert "machine limit at UTD 1 (train steps/s)" in printed
    print(printed[printed.index("throughput on") :])


def _run(*args):
    return run_to_end([*BENCHMARK, *args])


def test_bad_arguments_get_one_line_errors(tmp_path):
    result = _run("--num_collectors", "one")
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("throughput: error: --num_collectors must be like 1,2")
    )
    result = _run("--output", str(tmp_path / "missing" / "out.json"))
    assert result.returncode != 0
    assert "throughput: error: cannot write --output" in result.stderr.strip().splitlines()[-1]
    result = _run("--gin_file", str(tmp_path / "none.gin"))
    assert result.returncode != 0
    assert "throughput: error: gin file not found" in result.stderr.strip().splitlines()[-1]
    result = _run("--gin_bindings", "RunConfig.batch_size = -1")
    assert result.returncode != 0
    assert "throughput: error: RunConfig.batch_size" in result.stderr.strip().splitlines()[-1]
