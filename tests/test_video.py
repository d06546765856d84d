"""distributed_sac.tools.video: every frame sent is one frame of the file; a failure while
writing leaves no file behind."""

from __future__ import annotations

import imageio.v2 as imageio
import numpy as np
import pytest

from distributed_sac.errors import UserError
from distributed_sac.tools.video import VideoWriter


def frames(count: int) -> list[np.ndarray]:
    # Identical neighbours too: a GIF writer that merged them would lose frames.
    return [np.full((48, 64, 3), 40 * (i // 2), np.uint8) for i in range(count)]


@pytest.mark.parametrize("name", ["v.mp4", "v.gif"])
def test_every_frame_is_written(tmp_path, name):
    path = tmp_path / name
    with VideoWriter(str(path), fps=10) as video:
        for frame in frames(6):
            video.append(frame)
    assert (video.frames, video.size) == (6, (64, 48))
    read = imageio.mimread(path, memtest=False)
    assert len(read) == 6 and read[0].shape[:2] == (48, 64)


def test_a_failure_while_writing_removes_the_file(tmp_path):
    path = tmp_path / "v.mp4"
    with pytest.raises(RuntimeError), VideoWriter(str(path), fps=10) as video:
        for frame in frames(3):
            video.append(frame)
        raise RuntimeError("the episode failed")
    assert not path.exists()


def test_an_odd_mp4_frame_size_is_named(tmp_path):
    path = tmp_path / "v.mp4"
    with pytest.raises(UserError, match="an .mp4 needs an even frame size, got 63x48"):
        with VideoWriter(str(path), fps=10) as video:
            video.append(np.zeros((48, 63, 3), np.uint8))
    assert not path.exists()
