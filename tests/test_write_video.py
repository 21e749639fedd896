"""``video.write_video``: H.264 MP4s with the exact frame count and rate, odd sizes, and the driving video's audio
cut to the video's length."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest
from media import write_video as write_source

from emoji_model.video import iter_video_frames, probe_video, write_video

NTSC = Fraction(30000, 1001)
AAC_SLACK = 0.05  # s: one AAC frame (1024 samples) of encoder padding, plus its priming


def audio_seconds(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def gradient_frames(n: int, height: int, width: int) -> np.ndarray:
    """Smooth frames (H.264 keeps them within a few levels), different from frame to frame."""
    y, x = np.mgrid[0:height, 0:width]
    frames = [np.stack([(x * 255 // width + 9 * i) % 256, y * 255 // height, np.full_like(x, 40 + i)], -1)
              for i in range(n)]
    return np.asarray(frames, dtype=np.uint8)


def test_chunks_keep_count_rate_and_pixels(tmp_path):
    frames = gradient_frames(20, 48, 64)
    count = write_video(tmp_path / "out.mp4", (frames[i:i + 6] for i in range(0, 20, 6)), NTSC)
    info = probe_video(tmp_path / "out.mp4")
    assert count == 20 and (info.num_frames, info.rate, info.width, info.height) == (20, NTSC, 64, 48)
    assert not info.has_audio
    back = np.stack(list(iter_video_frames(tmp_path / "out.mp4")))
    assert back.shape == frames.shape and np.abs(back.astype(int) - frames).mean() < 3


def test_single_frames_and_a_float_rate(tmp_path):
    frames = gradient_frames(7, 32, 32)
    write_video(tmp_path / "out.mp4", iter(frames), 29.97002997002997)
    info = probe_video(tmp_path / "out.mp4")
    assert (info.num_frames, info.rate) == (7, NTSC)
    write_video(tmp_path / "24.mp4", frames, 24)
    assert probe_video(tmp_path / "24.mp4").rate == 24


def test_odd_sizes_are_padded_to_even(tmp_path):
    write_video(tmp_path / "odd.mp4", [gradient_frames(3, 33, 45)], 25)
    info = probe_video(tmp_path / "odd.mp4")
    assert (info.width, info.height, info.num_frames) == (46, 34, 3)


def test_audio_is_copied_and_cut_to_the_video(tmp_path):
    source = write_source(tmp_path / "src.mp4", gradient_frames(10, 32, 32), fps=25, audio_seconds=3.0)
    write_video(tmp_path / "out.mp4", [gradient_frames(20, 32, 32)], NTSC, audio_from=source)
    info = probe_video(tmp_path / "out.mp4")
    assert info.has_audio and info.num_frames == 20
    video_seconds = 20 / NTSC
    assert video_seconds <= audio_seconds(tmp_path / "out.mp4") <= video_seconds + AAC_SLACK


def test_shorter_audio_is_kept_whole(tmp_path):
    source = write_source(tmp_path / "src.mp4", gradient_frames(5, 32, 32), fps=25, audio_seconds=0.2)
    write_video(tmp_path / "out.mp4", [gradient_frames(50, 32, 32)], 25, audio_from=source)
    assert 0.2 <= audio_seconds(tmp_path / "out.mp4") <= 0.2 + 2 * AAC_SLACK  # the source's padding too


def test_a_source_without_audio_gives_a_silent_video(tmp_path):
    source = write_source(tmp_path / "silent.mp4", gradient_frames(5, 32, 32), fps=25)
    write_video(tmp_path / "out.mp4", [gradient_frames(5, 32, 32)], 25, audio_from=source)
    assert not probe_video(tmp_path / "out.mp4").has_audio


def test_bad_frames_are_refused(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "a.mp4", [], 25)
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "b.mp4", [np.zeros((2, 8, 8, 3), np.float32)], 25)
    with pytest.raises(ValueError, match="the first was 8×8"):
        write_video(tmp_path / "c.mp4", [np.zeros((2, 8, 8, 3), np.uint8), np.zeros((1, 16, 8, 3), np.uint8)], 25)
    with pytest.raises(ValueError, match="fps must be positive"):
        write_video(tmp_path / "d.mp4", [np.zeros((2, 8, 8, 3), np.uint8)], 0)
