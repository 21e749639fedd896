"""Reading images and videos."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emoji_model.errors import InputImageError
from emoji_model.video import iter_video_frames, probe_video, read_image
from media import carphone_path, write_video


def test_real_clip_is_read_frame_by_frame():
    info = probe_video(carphone_path())
    assert (info.width, info.height, info.num_frames, info.has_audio) == (176, 144, 120, False)
    assert info.fps == pytest.approx(30000 / 1001)
    frames = list(iter_video_frames(carphone_path()))
    assert len(frames) == 120
    assert all(f.shape == (144, 176, 3) and f.dtype == np.uint8 for f in frames)
    assert len(list(iter_video_frames(carphone_path(), max_frames=7))) == 7


def test_written_video_round_trips_size_fps_and_audio(tmp_path):
    rng = np.random.default_rng(0)
    frames = np.repeat(rng.integers(0, 255, (5, 1, 64, 3), dtype=np.uint8), 48, axis=1)
    path = write_video(tmp_path / "clip.mp4", frames, fps=24, audio_seconds=0.5)
    info = probe_video(path)
    assert (info.width, info.height, info.fps, info.has_audio) == (64, 48, 24.0, True)
    assert len(list(iter_video_frames(path))) == 5


def test_official_driving_video(shared_dir):
    info = probe_video(shared_dir / "fixtures" / "temple_video.mp4")
    assert (info.width, info.height, info.fps, info.num_frames, info.has_audio) == (512, 512, 30.0, 97, True)


def test_missing_and_unreadable_files_are_clear(tmp_path):
    with pytest.raises(InputImageError, match="not found"):
        probe_video(tmp_path / "nope.mp4")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputImageError, match="Cannot read video"):
        list(iter_video_frames(junk))
    with pytest.raises(InputImageError, match="Cannot read image"):
        read_image(junk)


@pytest.mark.parametrize(("mode", "colour", "rgb"), [
    ("RGBA", (10, 20, 30, 0), (10, 20, 30)), ("L", 128, 128), ("I;16", 128 * 257, 128), ("P", 0, 0),
])
def test_images_of_any_mode_become_rgb_uint8(tmp_path, mode, colour, rgb):
    Image.new(mode, (40, 30), colour).save(tmp_path / "x.png")  # 16-bit grey is scaled (images.to_rgb_uint8)
    image = read_image(tmp_path / "x.png")
    assert image.shape == (30, 40, 3) and image.dtype == np.uint8 and (image == rgb).all()
