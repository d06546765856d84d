"""distributed_sac.tools.play: a smoke run's greedy policy to video, and its bad-input errors."""

from __future__ import annotations

import math
import re

import imageio.v2 as imageio
import numpy as np
import pytest

from distributed_sac.acting import best_policy
from distributed_sac.config import DEFAULT_GIN
from distributed_sac.layout import RunDir
from tests.conftest import SHIPPED_POLICY, SMOKE_GIN, one_error_line, run_tool, unwritable_dir

EPISODE = re.compile(r"^episode (\d+): return (\S+), length (\d+) \(walked (\S+) m\)$", re.M)
# The shipped policy's episode at play's default seed walked 19.3 m (return 17.8): a margin
# for another machine's floating point, well above a robot that falls or stands.
WALKED_M = 15.0
WROTE = re.compile(r"^wrote (.+): (\d+) frames of (\d+)x(\d+) at .* ([\d.]+) ms per frame$", re.M)


# The .gif case also cuts episodes at 30 steps: the frame rule holds for cut episodes too.
@pytest.mark.parametrize("extension, max_steps", [(".mp4", None), (".gif", 30)])
def test_two_episodes_to_video(smoke_root, tmp_path, extension, max_steps):
    output = tmp_path / f"minitaur{extension}"
    cap = ["--max_steps_per_episode", str(max_steps)] if max_steps else []
    result = run_tool(
        "tools.play",
        [
            "--policy_dir",
            RunDir(str(smoke_root)).greedy_policy,
            "--gin_file",
            SMOKE_GIN,
            "--episodes",
            "2",
            "--output",
            str(output),
            *cap,
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    episodes = EPISODE.findall(result.stdout)
    assert [int(number) for number, _, _, _ in episodes] == [1, 2], result.stdout
    returns = [float(value) for _, value, _, _ in episodes]
    lengths = [int(length) for _, _, length, _ in episodes]
    # The return is the distance walked less an energy penalty.
    assert all(float(w) >= float(r) - 5e-4 for _, r, _, w in episodes), episodes
    assert all(math.isfinite(value) for value in returns)
    # gin/smoke.gin: episodes of at most 100 steps
    assert all(1 <= length <= (max_steps or 100) for length in lengths)
    (wrote,) = WROTE.findall(result.stdout)
    expected_frames = sum(length + 1 for length in lengths)  # each first observation + each step
    assert wrote[:4] == (str(output), str(expected_frames), "320", "240")

    frames = imageio.mimread(output, memtest=False)
    assert len(frames) == expected_frames
    for frame in frames:
        assert frame.shape[:2] == (240, 320) and frame.shape[2] in (3, 4)
        assert frame[:, :, :3].std() > 0  # not blank
    # The robot moves: the first and last frames of the video differ.
    assert np.abs(frames[0][:, :, :3].astype(int) - frames[-1][:, :, :3]).mean() > 1
    print(
        f"{extension}: returns {returns}, lengths {lengths}, {len(frames)} frames, "
        f"{output.stat().st_size} bytes, rendering {wrote[4]} ms per frame"
    )


@pytest.mark.slow
def test_bad_input(smoke_root, tmp_path):
    """Each bad input: exit code 2 and one line naming it, before any episode is played."""
    policy = ["--policy_dir", RunDir(str(smoke_root)).greedy_policy]
    out = ["--output", str(tmp_path / "v.mp4")]
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    locked, prefix = unwritable_dir(tmp_path / "locked")
    cases = [
        (["--policy_dir", str(tmp_path / "missing")] + out, (), "policy_dir not found: "),
        (["--policy_dir", str(empty_dir)] + out, (), "is not a SavedModel policy"),
        (
            ["--policy_dir", str(smoke_root)] + out,
            (),
            f"this looks like a root_dir: try --root_dir {smoke_root}",
        ),
        (policy + ["--output", str(locked / "v.mp4")], prefix, "output directory is not writable"),
        (policy + ["--output", str(tmp_path / "no" / "v.mp4")], (), "output directory does not"),
        (policy + ["--output", str(tmp_path / "v.avi")], (), "unsupported output format '.avi'"),
        (policy + out + ["--episodes", "0"], (), "--episodes must be at least 1, got 0"),
    ]
    for args, command_prefix, expected in cases:
        result = run_tool("tools.play", ["--gin_file", SMOKE_GIN, *args], 120, command_prefix)
        line = one_error_line(result, "play")
        assert expected in line, (args, line)
        print(line)
    assert not list(locked.iterdir())
    assert not list(tmp_path.glob("v.*"))


def test_root_dir_plays_the_best_policy(smoke_root, tmp_path):
    run = RunDir(str(smoke_root))
    best = best_policy.read_record(run.best_greedy_policy)
    output = tmp_path / "best.gif"
    result = run_tool(
        "tools.play",
        ["--root_dir", str(smoke_root), "--gin_file", SMOKE_GIN, "--output", str(output)]
        + ["--episodes", "1", "--max_steps_per_episode", "5", "--width", "64", "--height", "48"],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines()[0] == (
        f"playing {run.best_greedy_policy} ({best_policy.describe(best)} in training)"
    )
    assert output.stat().st_size > 0


def test_the_shipped_walking_policy_walks(tmp_path):
    """docs/minitaur_default_policy, the best policy of a run of the default gin/minitaur.gin, is
    committed so that a user can play a walking robot before training: its record says how it
    scored, and one 1000-step episode (README shows the command) walks without falling."""
    record = best_policy.read_record(SHIPPED_POLICY)
    assert record["AverageReturn"] >= 15 and record["env_steps"] <= 2_000_000, record
    output = tmp_path / "walk.gif"
    result = run_tool(
        "tools.play",
        [
            "--policy_dir",
            SHIPPED_POLICY,
            "--gin_file",
            DEFAULT_GIN,
            "--episodes",
            "1",
            "--width",
            "64",
            "--height",
            "48",
            "--output",
            str(output),
        ],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    ((_, episode_return, length, walked),) = EPISODE.findall(result.stdout)
    print(f"shipped policy: return {episode_return}, {length} decisions, walked {walked} m")
    # The whole episode (250 decisions of 4 environment steps: a fall ends it early), forward.
    assert int(length) == 250, result.stdout
    assert float(walked) >= WALKED_M and float(episode_return) >= 15, result.stdout
