"""Check Motion: the official driving video against its own retargeted motion, shifted copies, a faceless stretch,
pasted-back frames, the chart, the command line and the node."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from PIL import Image

from emoji_model import check, pipeline
from emoji_model.framing import PortraitCrop
from emoji_model.landmarks.align import align
from emoji_model.video import iter_video_frames

SHIFT = 8  # px


@pytest.fixture(scope="module")
def temple(temple_video, landmarker_model):
    """(frames (97, 512, 512, 3), driving landmarks, the driving retargeted onto its own first frame)."""
    frames = np.stack(list(iter_video_frames(temple_video)))
    driving, _ = pipeline.video_landmarks(temple_video, landmarker_model)
    motion = align(driving.select(0), driving, neutral_frame=0, pose_mode="absolute")  # its own face and pose
    return frames, driving, motion


@pytest.fixture(scope="module")
def own(temple, landmarker_model):
    frames, driving, motion = temple
    return check.check_frames(iter(frames), motion, landmarker_model, driving=driving)


def shifted(frames: np.ndarray, dx: int, dy: int = 0) -> np.ndarray:
    """The frames moved right by dx and down by dy, black where they leave."""
    out = np.zeros_like(frames)
    out[:, dy:, dx:] = frames[:, : frames.shape[1] - dy, : frames.shape[2] - dx]
    return out


def test_the_driving_video_against_its_own_motion_is_near_zero(own):
    s = own.summary()
    assert s["frames"] == 97 and s["faceless_frames"] == 0 and own.found.all()
    assert s["nme"] < 1e-3 and s["pupil_nme"] < 1e-3 and s["error_px"] < 0.1  # measured 0.01 px
    assert s["expression"] < 1e-6 and s["pose"] < 0.05  # the same detection: the same blendshapes
    assert abs(s["jitter"] - s["target_jitter"]) < 1e-3  # as steady as the motion


@pytest.mark.parametrize(("dx", "dy"), [(SHIFT, 0), (0, SHIFT), (6, 6)])
def test_a_shifted_copy_is_off_by_the_shift(temple, own, landmarker_model, dx, dy):
    frames, driving, motion = temple
    result = check.check_frames(iter(shifted(frames, dx, dy)), motion, landmarker_model, driving=driving)
    s, k = result.summary(), np.hypot(dx, dy)
    assert result.found.all()
    assert abs(s["error_px"] - k) < 0.1 * k  # measured 8.01 px for 8
    eye_distance = np.linalg.norm(motion.points[:, 33] - motion.points[:, 263], axis=-1)
    assert abs(s["nme"] - np.mean(k / eye_distance)) < 0.1 * s["nme"]
    assert abs(s["pupil_nme"] - s["nme"]) < 0.2 * s["nme"]
    assert s["pose"] < 1.0 and s["expression"] < 0.02  # moved, not turned, not another expression


def test_a_faceless_stretch_is_reported(temple, landmarker_model, tmp_path):
    frames, driving, motion = temple
    blanked = frames.copy()
    blanked[20:30] = 128
    result = check.check_frames(iter(blanked), motion, landmarker_model, driving=driving)
    assert result.missing == list(range(20, 30))
    s = result.summary()
    assert (s["faceless_frames"], s["faceless"]) == (10, "20–29")
    assert np.isnan(result.nme[20:30]).all() and np.isfinite(result.nme[:20]).all() and s["nme"] < 0.01
    assert np.isnan(result.jitter[19:31]).all()  # no second difference across a faceless frame
    assert "no face found in 10 (frames 20–29)" in result.report()
    saved = json.loads(result.to_json())
    assert saved["summary"]["faceless"] == "20–29" and saved["frames"]["nme"][25] is None
    chart = check.plot_check(result, title="faceless 20–29")
    path = tmp_path / "check.png"
    Image.fromarray(chart).save(path)
    with Image.open(path) as image:
        assert image.size == (1000, 800) and image.mode == "RGB"
    assert_a_readable_chart(chart)
    shaded = np.all(np.abs(chart.astype(int) - [255, 217, 217]) <= 12, axis=-1)  # the faceless span, light red
    columns = np.flatnonzero(shaded.sum(axis=0) > 200)
    assert 60 < len(columns) < 110  # ten frames' width of the four panels' x axis (~8.5 px a frame)


def assert_a_readable_chart(chart: np.ndarray) -> None:
    """Not blank: several colours, lines and text over a white ground."""
    assert chart.shape == (800, 1000, 3) and chart.dtype == np.uint8
    white = np.all(chart >= 250, axis=-1).mean()
    assert 0.5 < white < 0.97
    colours = {tuple(c) for c in chart[::4, ::4].reshape(-1, 3)}
    assert len(colours) > 50
    blue = np.all(np.abs(chart.astype(int) - [31, 119, 180]) <= 30, axis=-1)  # tab:blue, the landmark error line
    assert blue.sum() > 300


def test_pasted_back_frames_are_compared_in_the_photo(temple, landmarker_model):
    frames, driving, motion = temple
    crop = PortraitCrop("crop", (640, 600), (512, 512), (0, 0, 512, 512), (64, 40, 512, 512))  # 1:1 into a larger photo
    photos = np.zeros((len(frames), 600, 640, 3), dtype=np.uint8)
    photos[:, 40:552, 64:576] = frames
    result = check.check_frames(iter(photos), motion, landmarker_model, driving=driving, crop=crop)
    assert result.found.all() and result.summary()["error_px"] < 1.0
    photo_sized = dataclasses.replace(driving, width=640, height=600)  # as if detected on the photos
    with pytest.raises(ValueError, match="the output frames are 640×600, but the motion's frames are 512×512$"):
        check.check_motion(photo_sized, motion)


def test_too_few_output_frames_is_a_clear_error(temple, landmarker_model):
    frames, driving, motion = temple
    with pytest.raises(ValueError, match="the output has 12 frames but the motion has 97"):
        check.check_frames(iter(frames[:12]), motion, landmarker_model)


def test_check_command(temple_video, temple, landmarker_model, tmp_path, capsys):
    """``check`` with the driving video as the animation of its own first frame: near zero, files written."""
    from emoji_model.__main__ import main

    frames, _, _ = temple
    portrait = tmp_path / "frame0.png"
    Image.fromarray(frames[0]).save(portrait)
    out = tmp_path / "report"
    assert main(["check", str(temple_video), "--reference", str(portrait), "--driving", str(temple_video),
                 "--model", str(landmarker_model), "--framing", "none", "--pose-mode", "absolute",
                 "--neutral-frame", "0", "--frames", "48", "--out-dir", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Check Motion: 48 frames, no face found in 0" in printed and "check.png written" in printed
    summary = json.loads((out / "check.json").read_text())["summary"]
    assert summary["frames"] == 48 and summary["nme"] < 0.01  # the portrait's own detection: a little apart
    with Image.open(out / "check.png") as image:
        assert image.size == (1000, 800)
        assert_a_readable_chart(np.asarray(image.convert("RGB")))
    small = tmp_path / "small.png"
    Image.fromarray(frames[0]).resize((400, 400)).save(small)
    assert main(["check", str(temple_video), "--reference", str(small), "--driving", str(temple_video),
                 "--model", str(landmarker_model), "--framing", "none", "--frames", "4", "--out-dir", str(out)]) == 2
    assert "error: the output frames are 512×512, but the motion's frames are 400×400" in capsys.readouterr().err


def test_check_motion_node(temple, landmarker_model, monkeypatch):
    import torch
    from test_edit import load_motion_nodes

    frames, driving, motion = temple
    nodes = load_motion_nodes(monkeypatch, landmarker_model)
    node = nodes.FYE_CheckMotion
    spec = node.INPUT_TYPES()
    assert all(entry[1].get("tooltip") for group in spec.values() for entry in group.values())
    images = torch.from_numpy(frames[:24]).float() / 255
    plot, report, error = node().check(images, subset(motion, 24), "face_landmarker_v2_with_blendshapes.task", True,
                                       False, driving=driving)
    assert tuple(plot.shape) == (1, 800, 1000, 3) and 0 <= error < 1e-3
    assert report.startswith("Check Motion: 24 frames, no face found in 0")


def subset(motion, count):
    rig = dataclasses.replace(motion.rig, expression=motion.rig.expression[:count], pose=motion.rig.pose[:count],
                              irises=motion.rig.irises[:count])
    return dataclasses.replace(motion, points=motion.points[:count], source_frames=motion.source_frames[:count],
                               rig=rig)
