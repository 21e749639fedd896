"""The headless main job: ``python -m emoji_model landmarks``."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from emoji_model.__main__ import main
from emoji_model.video import iter_video_frames
from media import REPO, astronaut_path, carphone_path, write_video


@pytest.fixture
def short_clip(tmp_path):
    """Eight real talking-head frames with two faceless (gray) frames in the middle."""
    frames = np.stack(list(iter_video_frames(carphone_path(), max_frames=8)))
    frames[3:5] = 128
    return write_video(tmp_path / "drive.mp4", frames, fps=25)


def test_writes_one_drawing_per_driving_frame_and_the_arrays(tmp_path, short_clip, landmarker_model):
    out = tmp_path / "out"
    assert main(["landmarks", str(astronaut_path()), str(short_clip), str(out), "--model", str(landmarker_model)]) == 0
    names = sorted(p.name for p in out.glob("aligned_*.png"))
    assert names == [f"aligned_{i:04d}.png" for i in range(8)]
    drawing = np.asarray(Image.open(out / "aligned_0003.png"))  # a faceless frame, filled from its neighbours
    assert drawing.shape == (512, 512, 3)
    assert 0.0005 < (drawing.max(axis=2) > 0).mean() < 0.02
    assert ((drawing == [255, 0, 0]).all(axis=2)).sum() >= 2 * 30  # both pupils drawn
    arrays = np.load(out / "landmarks.npz")
    assert arrays["driving_found"].tolist() == [True] * 3 + [False] * 2 + [True] * 3
    assert arrays["driving_points"].shape == (8, 478, 3)
    assert arrays["reference_mesh"].shape == (1, 468, 3)
    assert arrays["aligned_points"].shape == (8, 478, 2)
    assert np.isfinite(arrays["aligned_points"]).all()
    assert arrays["aligned_source_frames"].tolist() == list(range(8))


def test_drop_first_frame_matches_the_official_count(tmp_path, short_clip, landmarker_model):
    out = tmp_path / "out"
    main(
        [
            "landmarks",
            str(astronaut_path()),
            str(short_clip),
            str(out),
            "--model",
            str(landmarker_model),
            "--drop-first-frame",
            "--no-tracking",
        ]
    )
    assert sorted(p.name for p in out.glob("aligned_*.png"))[0] == "aligned_0001.png"
    assert len(list(out.glob("aligned_*.png"))) == 7


def test_user_errors_are_one_line_not_a_traceback(tmp_path, short_clip, capsys):
    assert (
        main(["landmarks", str(astronaut_path()), str(short_clip), str(tmp_path), "--model", str(tmp_path / "x.task")])
        == 2
    )
    err = capsys.readouterr().err
    assert "error: Model file not found" in err and "Traceback" not in err
    assert main(["landmarks", str(astronaut_path())]) == 2
    assert "both REFERENCE_IMAGE and DRIVING_VIDEO" in capsys.readouterr().err


def test_a_driving_video_without_any_face_is_a_clear_error(tmp_path, landmarker_model, capsys):
    gray = write_video(tmp_path / "gray.mp4", np.full((3, 96, 96, 3), 128, np.uint8))
    assert (
        main(["landmarks", str(astronaut_path()), str(gray), str(tmp_path / "o"), "--model", str(landmarker_model)])
        == 2
    )
    assert "No face was found in any of the 3 driving frames" in capsys.readouterr().err


def test_default_inputs_run_as_a_module(tmp_path, landmarker_model):
    """The README's main job, with no arguments, in a fresh process."""
    env = {"PATH": "/usr/bin:/bin", "FYE_FACE_LANDMARKER": str(landmarker_model), "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-m", "emoji_model", "landmarks"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "output" / "landmarks").glob("aligned_*.png"))) == 120
    assert "120 drawings, framing.png and landmarks.npz written" in done.stdout


def test_main_job_without_weights_explains_where_they_go(tmp_path, monkeypatch, landmarker_model, capsys):
    """The README's main job on a fresh machine: default inputs, no weights yet → what to put where, not a traceback."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FYE_FACE_LANDMARKER", str(landmarker_model))
    assert main(["animate"]) == 2
    err = capsys.readouterr().err
    assert "pretrained_models" in err and "--download" in err and "Traceback" not in err
    assert not (tmp_path / "output" / "animation.mp4").exists()


# ---- damaged and unreadable driving videos ------------------------------------------------------------------------


def test_a_damaged_driving_video_still_gives_one_drawing_per_frame(tmp_path, temple_video, landmarker_model, caplog,
                                                                    capsys):
    """The official clip with 200 kB zeroed a third of the way in: the frames PyAV cannot decode are filled from
    their neighbours, and one warning names them (measured: 25 packets, frames 29–63)."""
    import logging
    import re

    data = bytearray(temple_video.read_bytes())
    at = len(data) // 3
    data[at:at + 200_000] = bytes(200_000)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(bytes(data))
    out = tmp_path / "out"
    with caplog.at_level(logging.INFO):
        code = main(["landmarks", str(astronaut_path()), str(broken), str(out), "--model", str(landmarker_model)])
    err = capsys.readouterr().err
    assert code == 0 and "Traceback" not in err and "error:" not in err
    assert sorted(p.name for p in out.glob("aligned_*.png")) == [f"aligned_{i:04d}.png" for i in range(97)]
    named = [r.getMessage() for r in caplog.records
             if r.levelno == logging.WARNING and re.search(r"frames \d+(–\d+)? could not be decoded", r.getMessage())]
    assert len(named) == 1, named
    first, last = (int(n) for n in re.search(r"frames (\d+)–(\d+)", named[0]).groups())
    assert str(broken) in named[0] and 0 < first < last < 96
    found = np.load(out / "landmarks.npz")["driving_found"]
    assert len(found) == 97 and np.flatnonzero(~found).tolist() == list(range(first, last + 1))


@pytest.mark.parametrize("name", ["driving.mp4", "driving.png"])
def test_a_driving_file_of_garbage_is_one_error_line(tmp_path, landmarker_model, capsys, name):
    driving = tmp_path / name
    driving.write_bytes(np.random.default_rng(5).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    code = main(["landmarks", str(astronaut_path()), str(driving), str(tmp_path / "out"), "--model",
                 str(landmarker_model)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(driving) in lines[0], err
    assert not list((tmp_path / "out").glob("aligned_*.png"))
