"""python -m benchmarks.big_table --quick: a table filled, checkpointed under traffic, restored."""

import json
import sys

import pytest

from tests.conftest import run_to_end

SCRIPT = [sys.executable, "-m", "benchmarks.big_table"]


@pytest.mark.slow
def test_quick_big_table_fills_checkpoints_and_restores(processes, tmp_path):
    output, log, root = tmp_path / "big.json", tmp_path / "big.log", tmp_path / "run"
    command = [*SCRIPT, "--quick", "--root_dir", root, "--output", output]
    proc = processes.start([str(part) for part in command], log)
    code = proc.wait(timeout=600)
    printed = log.read_text()
    assert code == 0, printed[-3000:]
    print(printed[printed.index("experience table of") :])
    figures = json.loads(output.read_text())
    assert figures["items_full"] == figures["items_restored"] == 20_000
    assert figures["rss_mb_full"] > figures["rss_mb_empty"] > 50
    # 20 000 pairs of 2 x 40 float32 are 6.1 MiB; Reverb compresses them (random values).
    assert figures["checkpoint_s"] > 0 and figures["checkpoint_mb_on_disk"] > 1.5
    for kind in ("inserts", "samples"):
        assert all(figures[kind][phase]["calls"] > 0 for phase in ("before", "after")), figures
    assert figures["sigterm_to_exit_s"] > 0 and figures["restored_start_s"] > 0


def test_big_table_refuses_a_run_dir_with_data(tmp_path):
    (tmp_path / "kept").write_text("a user's file")
    result = run_to_end([*SCRIPT, "--quick", "--root_dir", str(tmp_path)], 300)
    assert result.returncode == 1
    assert result.stderr.strip() == f"big_table: error: --root_dir {tmp_path} is not empty"
    assert (tmp_path / "kept").read_text() == "a user's file"
