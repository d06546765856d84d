"""python -m benchmarks.soak --quick: every role sampled, the run stopped, the figures written."""

import json
import sys

import pytest

from benchmarks import soak
from tests.conftest import run_processes_of, run_to_end

SOAK = [sys.executable, "-m", "benchmarks.soak"]
ROLES = {"replay_server", "learner", "collector-0", "collector-1", "evaluator"}


@pytest.mark.slow
def test_quick_soak_samples_every_role_and_stops_the_run(processes, tmp_path):
    output, log, root = tmp_path / "soak.json", tmp_path / "soak.log", tmp_path / "run"
    command = [*SOAK, "--quick", "--root_dir", root, "--output", output]
    proc = processes.start([str(part) for part in command], log)
    code = proc.wait(timeout=600)
    printed = log.read_text()
    assert code == 0, printed[-3000:]
    figures = json.loads(output.read_text())
    samples = figures["samples"]
    assert len(samples) >= 10
    assert [s["t_s"] for s in samples] == sorted(s["t_s"] for s in samples)
    last = samples[-1]
    assert set(last["roles"]) == ROLES
    for name, usage in last["roles"].items():
        assert usage["rss_mb"] > 50 and usage["fds"] > 2 and usage["threads"] >= 1, (name, usage)
    # The learner trained during the minute (smoke.gin trains in seconds), as the server saw it.
    assert last["train_step"] > 0
    assert last["table_sizes"]["uniform_table"] > 0
    assert set(figures["roles"]) == ROLES
    assert figures["targets"]["no_restart"] is True
    assert set(figures["targets"]) == {
        "rss_within_10_percent",
        "fds_flat",
        "threads_flat",
        "no_restart",
        "learner_rate_held",
    }
    # Stopped as by Ctrl-C (exit 128 + SIGINT), and nothing of the run is left.
    assert figures["launcher_stop_exit_code"] == 130
    assert run_processes_of(root) == []
    assert "per role: minute" in printed and "target rss_within_10_percent:" in printed


def test_soak_refuses_a_bad_length_in_one_line():
    result = run_to_end([*SOAK, "--minutes", "0"])
    assert result.returncode != 0
    assert result.stderr.strip() == "soak: error: --minutes and --interval_s must be positive"


def test_soak_refuses_unreadable_figures_in_one_line(tmp_path):
    missing, partial = tmp_path / "none.json", tmp_path / "partial.json"
    partial.write_text('{"minutes": 60}')
    result = run_to_end([*SOAK, "--analyse", str(missing)])
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"soak: error: cannot read the figures in {missing}: ")
    result = run_to_end([*SOAK, "--analyse", str(partial)])
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"soak: error: cannot read the figures in {partial}: no samples, restarts"
    )


def synthetic_samples(threads_at) -> list[dict]:
    """A 60-minute soak sampled every 30 s: one role, steady memory, threads from
    `threads_at(t_s)`, a learner at 50 train steps/s."""
    return [
        {
            "t_s": t_s,
            "roles": {
                "learner": {"pid": 1, "rss_mb": 800.0, "fds": 13, "threads": threads_at(t_s)}
            },
            "train_step": 50 * t_s,
        }
        for t_s in range(0, 3601, 30)
    ]


def test_soak_targets_see_growth_not_a_transient_at_the_last_sample():
    # Threads of a checkpoint under way at a few samples, the last one among them: flat.
    transient = synthetic_samples(lambda t: 20 if t in (180, 720, 2310, 3600) else 16)
    figures = soak.analyse(transient, 60, [])
    assert figures["roles"]["learner"]["threads_median"] == [16, 16]
    assert figures["roles"]["learner"]["threads_range_after_reference"] == [16, 20]
    assert all(figures["targets"].values()), figures["targets"]
    # One thread more every 5 minutes: 16 -> 27, not flat.
    growing = synthetic_samples(lambda t: 16 + t // 300)
    figures = soak.analyse(growing, 60, [])
    assert figures["targets"]["threads_flat"] is False
    assert figures["targets"]["fds_flat"] and figures["targets"]["rss_within_10_percent"]


def test_soak_figures_leave_out_a_sample_without_the_role():
    # A role the launcher is restarting is missing from the samples taken meanwhile.
    samples = synthetic_samples(lambda t: 16)
    del samples[100]["roles"]["learner"]  # minute 50, past the reference
    figures = soak.analyse(samples, 60, [])
    assert figures["roles"]["learner"]["threads_range_after_reference"] == [16, 16]
