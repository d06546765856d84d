"""Writing a video from RGB frames with the ffmpeg binary that ships in the imageio-ffmpeg wheel."""

from __future__ import annotations

import os

import imageio_ffmpeg
import numpy as np

from distributed_sac.errors import UserError, first_line

EXTENSIONS = (".mp4", ".gif")


class VideoWriter:
    """Streams RGB frames to ffmpeg: .mp4 as H.264, .gif with its own palette.

    Every frame sent is one frame of the file: ffmpeg's GIF encoder keeps identical consecutive
    frames, where Pillow's would merge them. As a context manager it closes the file at the end,
    and removes it when anything failed, so no half-written video is left behind.
    """

    def __init__(self, path: str, fps: float):
        self._path, self._fps = path, fps
        self._gif = path.lower().endswith(".gif")
        self._pipe = None
        self.frames = 0
        self.size = None  # (width, height), once the first frame came

    def append(self, frame: np.ndarray) -> None:
        if self._pipe is None:
            self._open(frame.shape[1], frame.shape[0])
        try:
            self._pipe.send(frame)
        except OSError as error:  # ffmpeg died: disk full, output removed, ...
            raise UserError(f"ffmpeg could not write {self._path}: {first_line(error)}") from None
        self.frames += 1

    def _open(self, width: int, height: int) -> None:
        if self._gif:
            options = dict(
                codec="gif",
                pix_fmt_out="pal8",
                macro_block_size=1,
                output_params=[
                    "-filter_complex",
                    "split[a][b];[a]palettegen=stats_mode=full[p];[b][p]paletteuse",
                    "-loop",
                    "0",
                ],
            )
        else:
            if width % 2 or height % 2:
                raise UserError(f"an .mp4 needs an even frame size, got {width}x{height}")
            options = dict(codec="libx264", pix_fmt_out="yuv420p", macro_block_size=2)
        self.size = (width, height)
        self._pipe = imageio_ffmpeg.write_frames(
            self._path, (width, height), fps=self._fps, ffmpeg_log_level="error", **options
        )
        self._pipe.send(None)  # starts ffmpeg

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, kind, error, traceback) -> None:
        try:
            self.close()
        except BaseException:
            self._remove()
            raise
        if kind is not None:
            self._remove()

    def _remove(self) -> None:
        if os.path.exists(self._path):
            os.remove(self._path)

    def close(self) -> None:
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            try:
                pipe.close()
            except OSError as error:
                raise UserError(
                    f"ffmpeg could not write {self._path}: {first_line(error)}"
                ) from None
