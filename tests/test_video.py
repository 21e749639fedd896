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


# ---- damaged files ------------------------------------------------------------------------------------------------


def _damaged_copy(source, target, start: float, length: int) -> None:
    """``source`` with ``length`` bytes zeroed from ``start`` (a fraction of the file) on."""
    data = bytearray(source.read_bytes())
    at = int(len(data) * start)
    data[at:at + length] = bytes(length)
    target.write_bytes(bytes(data))


def test_damaged_packets_are_skipped_and_their_frames_kept_as_gaps(temple_video, tmp_path, caplog):
    """The official clip with 200 kB zeroed a third of the way in: PyAV refuses its packets (avcodec_send_packet)."""
    broken = tmp_path / "broken.mp4"
    _damaged_copy(temple_video, broken, 1 / 3, 200_000)
    good = list(iter_video_frames(temple_video))
    frames = list(iter_video_frames(broken))
    assert len(frames) == len(good) == 97  # one item per frame: the timestamps show where the gap is
    missing = [i for i, frame in enumerate(frames) if frame is None]
    assert missing and missing == list(range(missing[0], missing[-1] + 1))  # one contiguous gap
    for i, frame in enumerate(frames[: missing[0]]):
        np.testing.assert_array_equal(frame, good[i])  # the frames before the damage are untouched
    warnings = [r for r in caplog.records if r.levelname == "WARNING" and "damaged packet" in r.message]
    assert len(warnings) == 1 and f"{missing[0]}–{missing[-1]}" in warnings[0].message


def test_a_damaged_tail_is_padded_to_the_frame_count(temple_video, tmp_path):
    data = temple_video.read_bytes()
    mdat = data.find(b"mdat")
    end = mdat - 4 + int.from_bytes(data[mdat - 4:mdat], "big")
    tail = tmp_path / "tail.mp4"
    tail.write_bytes(data[: end - 300_000] + bytes(300_000) + data[end:])
    frames = list(iter_video_frames(tail))
    assert len(frames) == 97 and frames[-1] is None and frames[0] is not None


def test_a_video_without_one_decodable_frame_is_one_clear_error(temple_video, tmp_path):
    data = temple_video.read_bytes()
    mdat = data.find(b"mdat")
    end = mdat - 4 + int.from_bytes(data[mdat - 4:mdat], "big")
    hollow = tmp_path / "hollow.mp4"
    hollow.write_bytes(data[: mdat + 1000] + bytes(end - mdat - 1000) + data[end:])  # the container intact
    with pytest.raises(InputImageError, match="no frame of its video could be decoded"):
        list(iter_video_frames(hollow))


@pytest.mark.parametrize("name", ["garbage.mp4", "garbage.png", "garbage.mov"])
def test_garbage_named_like_media_is_a_clear_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    with pytest.raises(InputImageError, match=str(path.name)):
        list(iter_video_frames(path))
