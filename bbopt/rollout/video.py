"""Writing rendered frames to a video file."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["write_video"]


def write_video(frames: Sequence[np.ndarray], path: Path, fps: int) -> Path:
    """Write ``frames`` (``[H, W, 3]`` uint8) to ``path`` through imageio (an mp4 needs
    imageio-ffmpeg); without imageio or ffmpeg, a gif of every second frame through Pillow
    (matplotlib's dependency) next to it. Returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import imageio.v3 as iio

        # imageio's Pillow plugin (gif) takes each frame's duration in ms; ffmpeg (mp4) the rate
        timing = {"duration": round(1000 / fps), "loop": 0} if path.suffix.lower() == ".gif" else {"fps": fps}
        iio.imwrite(path, np.stack(frames), **timing)
    except Exception:  # no imageio/ffmpeg: fall back to a gif with Pillow
        from PIL import Image

        path = path.with_suffix(".gif")
        images = [Image.fromarray(frame) for frame in frames[::2]]
        images[0].save(path, save_all=True, append_images=images[1:], duration=int(2000 / fps), loop=0)
    return path
