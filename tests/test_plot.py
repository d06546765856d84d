"""distributed_sac.tools.plot on the metrics.jsonl of a real smoke run, and its bad-input errors."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from distributed_sac.layout import RunDir
from tests.conftest import one_error_line, read, run_tool, unwritable_dir


def png_size(path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk."""
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR", header
    return struct.unpack(">II", header[16:24])


def evaluations(root) -> list[dict]:
    return [json.loads(line) for line in read(RunDir(str(root)).metrics).splitlines()]


def summary(name, runs: list[dict], skipped=0) -> str:
    last = runs[-1]
    note = f" (unreadable lines skipped: {skipped})" if skipped else ""
    return (
        f"{name}: {len(runs)} evaluations, last AverageReturn {last['AverageReturn']:.6g} "
        f"at train_step {last['train_step']}{note}"
    )


def test_one_run_png_has_the_requested_pixel_size(smoke_root, tmp_path):
    output = tmp_path / "returns.png"
    result = run_tool(
        "tools.plot",
        ["--root_dir", str(smoke_root), "--output", str(output)]
        + ["--width_px", "901", "--height_px", "433", "--title", "smoke"]
        + ["--x_axis", "env_steps"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert png_size(output) == (901, 433)
    runs = evaluations(smoke_root)
    assert len(runs) >= 2 and runs[-1]["train_step"] == 300
    assert result.stdout.splitlines() == [f"wrote {output} (901x433 px)", summary("run", runs)]
    print(result.stdout, f"PNG {output.stat().st_size} bytes", sep="")


def test_two_runs_default_size_and_a_cut_line(smoke_root, tmp_path):
    # A second run: the first two evaluations, then a line cut short by a kill mid-write.
    other = tmp_path / "other"
    other_run = RunDir(str(other))
    Path(other_run.eval).mkdir(parents=True)
    lines = read(RunDir(str(smoke_root)).metrics).splitlines()
    Path(other_run.metrics).write_text("\n".join(lines[:2]) + '\n{"train_step": 3')
    output = tmp_path / "both.png"
    result = run_tool(
        "tools.plot",
        ["--root_dir", str(smoke_root), "--root_dir", str(other), "--output", str(output)],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert png_size(output) == (1200, 500)
    assert result.stdout.splitlines() == [
        f"wrote {output} (1200x500 px)",
        summary("run", evaluations(smoke_root)),
        summary("other", evaluations(smoke_root)[:2], skipped=1),
    ]
    print(result.stdout)


@pytest.mark.parametrize("extension, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_vector_formats(smoke_root, tmp_path, extension, magic):
    output = tmp_path / f"returns{extension}"
    result = run_tool("tools.plot", ["--root_dir", str(smoke_root), "--output", str(output)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert output.read_bytes().startswith(magic)
    assert result.stdout.splitlines()[0] == f"wrote {output}"


def test_bad_input(smoke_root, tmp_path):
    """Each bad input: exit code 2 and one line naming it."""
    good = ["--root_dir", str(smoke_root)]
    out = ["--output", str(tmp_path / "r.png")]
    empty_dir = tmp_path / "fresh"
    empty_dir.mkdir()
    empty_metrics = tmp_path / "started"
    Path(RunDir(str(empty_metrics)).eval).mkdir(parents=True)
    Path(RunDir(str(empty_metrics)).metrics).write_text("")
    older = tmp_path / "older"  # evaluations written before env_steps existed
    Path(RunDir(str(older)).eval).mkdir(parents=True)
    Path(RunDir(str(older)).metrics).write_text(
        '{"train_step": 0, "AverageReturn": 1.0, "wall_time": 1.0}\n'
    )
    locked, prefix = unwritable_dir(tmp_path / "locked")
    cases = [
        (
            ["--root_dir", str(older), "--x_axis", "env_steps"] + out,
            (),
            f"{older}'s evaluations have no env_steps (an older run)",
        ),
        (["--root_dir", str(tmp_path / "missing")] + out, (), "root_dir not found: "),
        (["--root_dir", str(empty_dir)] + out, (), f"no evaluations yet in {empty_dir} "),
        (["--root_dir", str(empty_metrics)] + out, (), "eval/metrics.jsonl is empty"),
        (good + ["--output", str(tmp_path / "no" / "r.png")], (), "output directory does not"),
        (good + ["--output", str(locked / "r.png")], prefix, "output directory is not writable"),
        (good + ["--output", str(tmp_path / "r.jpg")], (), "unsupported output format '.jpg'"),
        (out, (), "plot needs at least one --root_dir"),
    ]
    for args, command_prefix, expected in cases:
        result = run_tool("tools.plot", args, timeout_s=120, prefix=command_prefix)
        line = one_error_line(result, "plot")
        assert expected in line, (args, line)
        print(line)
    assert not list(locked.iterdir())
    assert not (tmp_path / "r.png").exists() and not (tmp_path / "r.jpg").exists()
