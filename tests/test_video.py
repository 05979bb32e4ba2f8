"""`bbopt.rollout.video.write_video`: every frame at the stated rate, through imageio when it
is there (the Pillow fallback keeps every second frame, so a test can tell the two apart)."""

import numpy as np
import pytest

from bbopt.rollout.video import write_video

iio = pytest.importorskip("imageio.v3")


def frames(count=10):
    return [np.full((48, 64, 3), 20 * i, np.uint8) for i in range(count)]


def test_a_gif_keeps_every_frame_at_the_rate_without_a_deprecated_option(tmp_path, recwarn):
    path = write_video(frames(), tmp_path / "clip.gif", fps=25)
    assert path == tmp_path / "clip.gif" and iio.imread(path).shape == (10, 48, 64, 3)
    assert iio.immeta(path)["duration"] == 40  # ms per frame
    assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]


def test_an_mp4_keeps_every_frame_at_the_rate(tmp_path):
    pytest.importorskip("imageio_ffmpeg")
    path = write_video(frames(), tmp_path / "clip.mp4", fps=25)
    assert path.suffix == ".mp4" and iio.imread(path).shape[0] == 10 and iio.immeta(path)["fps"] == 25
