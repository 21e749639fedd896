"""Retargeting: parity with the official FaceMeshAlign and what each extra option does."""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest

from emoji_model.errors import NoFaceError
from emoji_model.landmarks import align as align_module
from emoji_model.landmarks.align import (
    POSE_MODES,
    align,
    fill_missing_frames,
    matrix_to_pose,
    moving_average,
    neutral_frame_index,
    pose_parameters,
    pose_to_matrix,
    project,
)
from emoji_model.landmarks.connections import NOSE_TIP
from emoji_model.landmarks.draw import draw_motion, normalised_to_pixels
from emoji_model.landmarks.types import FaceLandmarks

PARITY_PX = 1e-6
OFFICIAL_NEUTRAL = 3  # landmarks_meta.json: min_bs_idx


def _without_faces(landmarks: FaceLandmarks, frames) -> FaceLandmarks:
    """``landmarks`` with ``frames`` turned into faceless frames (NaN rows, found False)."""
    arrays = {name: getattr(landmarks, name).copy() for name in ("points", "mesh", "pose", "blendshapes")}
    for values in arrays.values():
        values[frames] = np.nan
    found = landmarks.found.copy()
    found[frames] = False
    return dataclasses.replace(landmarks, found=found, **arrays)


def _jitter(points: np.ndarray) -> float:
    """Mean squared second difference over frames of (N, P, 2) points."""
    return float((np.diff(points, n=2, axis=0) ** 2).mean())


# ---- parity with the official code ----------------------------------------------------------------------------


def test_official_parity_without_first_frame(golden_reference, golden_driving, golden_landmarks):
    motion = align(golden_reference, golden_driving, keep_first_frame=False)
    expected = golden_landmarks["align_drawn_keypoints"][1:]
    assert motion.points.shape == expected.shape == (31, 478, 2)
    assert np.abs(motion.points - expected).max() < PARITY_PX
    assert motion.source_frames.tolist() == list(range(1, 32))
    assert (motion.width, motion.height) == (512, 512)


def test_first_frame_kept_by_default(golden_reference, golden_driving, golden_landmarks):
    motion = align(golden_reference, golden_driving)
    assert len(motion) == 32 and motion.source_frames.tolist() == list(range(32))
    assert np.array_equal(motion.points[1:], align(golden_reference, golden_driving, keep_first_frame=False).points)
    assert np.abs(motion.points - golden_landmarks["align_drawn_keypoints"]).max() < PARITY_PX


def test_official_intermediates(golden_reference, golden_driving, golden_landmarks):
    params = pose_parameters(golden_driving.pose, golden_reference.pose[0], "relative")
    assert np.abs(params - golden_landmarks["align_pose_arr"]).max() < 1e-9
    matrices = pose_to_matrix(params)
    assert np.abs(matrices - golden_landmarks["align_pose_mat_smooth"]).max() < 1e-12
    verts = golden_driving.mesh - golden_driving.mesh[OFFICIAL_NEUTRAL] + golden_reference.mesh[0]
    assert np.abs(verts - golden_landmarks["align_retargeted_verts3d"]).max() < 1e-12
    projected = project(verts, matrices, 512, 512)
    assert np.abs(projected - golden_landmarks["align_projected_vertices"]).max() < PARITY_PX


def test_aligned_points_draw_the_official_pngs(golden_reference, golden_driving, golden_png):
    motion = align(golden_reference, golden_driving, keep_first_frame=False)
    drawings = draw_motion(motion.points, motion.width, motion.height)
    assert np.array_equal(drawings, np.stack([golden_png(f"aligned_lmk_{i:03d}.png") for i in range(31)]))


# ---- neutral frame ---------------------------------------------------------------------------------------------


def test_neutral_frame_auto_is_argmin_without_the_neutral_column(golden_driving, golden_landmarks):
    assert neutral_frame_index(golden_driving) == OFFICIAL_NEUTRAL == np.argmin(golden_landmarks["drv_bs"].sum(1))
    blendshapes = golden_driving.blendshapes.copy()
    blendshapes[OFFICIAL_NEUTRAL, 0] = 100.0  # a huge `_neutral` score must not matter
    assert neutral_frame_index(dataclasses.replace(golden_driving, blendshapes=blendshapes)) == OFFICIAL_NEUTRAL
    blendshapes[OFFICIAL_NEUTRAL, 1:] += 1.0  # but the other 51 do
    assert neutral_frame_index(dataclasses.replace(golden_driving, blendshapes=blendshapes)) != OFFICIAL_NEUTRAL


def test_neutral_frame_option(golden_reference, golden_driving):
    auto = align(golden_reference, golden_driving).points
    assert np.array_equal(align(golden_reference, golden_driving, neutral_frame=OFFICIAL_NEUTRAL).points, auto)
    assert np.abs(align(golden_reference, golden_driving, neutral_frame=0).points - auto).max() > 0.1


def test_neutral_frame_is_chosen_among_found_frames(golden_driving, golden_landmarks):
    faceless = _without_faces(golden_driving, [OFFICIAL_NEUTRAL])
    scores = golden_landmarks["drv_bs"].sum(1)
    scores[OFFICIAL_NEUTRAL] = np.inf
    assert neutral_frame_index(faceless) == np.argmin(scores) != OFFICIAL_NEUTRAL


# ---- pose modes ------------------------------------------------------------------------------------------------


def test_pose_none_holds_the_reference_head_pose(golden_reference, golden_driving):
    still_face = dataclasses.replace(golden_driving, mesh=np.repeat(golden_driving.mesh[:1], 32, axis=0))
    held = align(golden_reference, still_face, pose_mode="none").points[:, NOSE_TIP]  # (32, 2)
    reference_nose = project(golden_reference.mesh, golden_reference.pose, 512, 512)[0, NOSE_TIP]
    assert np.ptp(held, axis=0).max() == 0.0
    # 1e-6 px: the Euler round trip re-orthonormalises MediaPipe's float32 rotation
    assert np.abs(held - reference_nose).max() < 1e-5
    # the reference's own pose puts the projected mesh on its detected landmarks (MediaPipe's geometry fit)
    assert np.abs(reference_nose - golden_reference.points[0, NOSE_TIP, :2] * 512).max() < 3.0
    moving = align(golden_reference, still_face, pose_mode="relative").points[:, NOSE_TIP]
    assert np.ptp(moving, axis=0).max() > 1.0


def test_pose_absolute_is_the_driving_pose(golden_driving):
    neutral_reference = golden_driving.select(OFFICIAL_NEUTRAL)
    absolute = align(neutral_reference, golden_driving, pose_mode="absolute").points[:, :468]
    poses = pose_to_matrix(matrix_to_pose(golden_driving.pose))  # orthonormalised through Euler angles
    assert np.abs(absolute - project(golden_driving.mesh, poses, 512, 512)).max() < 1e-9
    assert np.abs(absolute - project(golden_driving.mesh, golden_driving.pose, 512, 512)).max() < 1e-3
    assert np.abs(absolute - golden_driving.points[:, :468, :2] * 512).max() < 5.0  # on the driving's own face


def test_pose_absolute_equals_relative_when_the_reference_sits_where_driving_starts(golden_driving):
    first = golden_driving.select(0)
    absolute = align(first, golden_driving, pose_mode="absolute").points
    relative = align(first, golden_driving, pose_mode="relative").points
    assert np.abs(absolute - relative).max() < 1e-9


def test_aspect_ratio_of_the_reference(golden_reference, golden_driving):
    square = align(golden_reference, golden_driving).points
    wide = align(dataclasses.replace(golden_reference, width=1024), golden_driving).points
    assert np.abs((wide - [512, 256]) - (square - [256, 256])).max() < 1e-9


# ---- expression, smoothing -------------------------------------------------------------------------------------


def test_expression_scale_zero_gives_the_neutral_face_throughout(golden_reference, golden_driving):
    neutral_face = align(golden_reference, golden_driving, pose_mode="none").points[OFFICIAL_NEUTRAL]
    frozen = align(golden_reference, golden_driving, pose_mode="none", expression_scale=0.0).points
    assert np.abs(frozen - neutral_face).max() < 1e-9


def test_expression_scale_multiplies_the_change_from_neutral(golden_reference, golden_driving):
    def change(scale):
        points = align(golden_reference, golden_driving, pose_mode="none", expression_scale=scale).points
        return points - points[OFFICIAL_NEUTRAL]

    one, two = change(1.0)[:, :468], change(2.0)[:, :468]  # mesh: nearly linear (irises follow the eye box)
    big = np.abs(one) > 1.0
    assert big.sum() > 100
    assert np.allclose(two[big] / one[big], 2.0, rtol=0.05)


def test_smoothing_window_one_is_identity(golden_reference, golden_driving):
    default = align(golden_reference, golden_driving).points
    assert np.array_equal(align(golden_reference, golden_driving, smoothing=1).points, default)


def test_smoothing_reduces_jitter(golden_reference, golden_driving):
    raw = align(golden_reference, golden_driving).points
    smooth = align(golden_reference, golden_driving, smoothing=5).points
    assert _jitter(smooth) < 0.5 * _jitter(raw)
    assert np.abs(smooth - raw).max() < 20.0  # still the same motion


def test_moving_average_is_the_official_shrinking_window():
    values = np.random.default_rng(0).normal(size=(9, 4, 3))
    for window in (1, 3, 5, 11):
        half = window // 2
        expected = np.stack([values[max(0, i - half) : i + half + 1].mean(0) for i in range(len(values))])
        assert np.allclose(moving_average(values, window), expected, rtol=0, atol=1e-12)


# ---- faceless frames -------------------------------------------------------------------------------------------


def test_faceless_frames_are_interpolated_from_neighbours(golden_driving):
    filled = fill_missing_frames(_without_faces(golden_driving, [0, 5, 6, 31]))
    assert filled.found.all()
    for name in ("points", "mesh", "pose", "blendshapes"):
        values, original = getattr(filled, name), getattr(golden_driving, name)
        assert np.isfinite(values).all()
        assert np.allclose(values[5], (2 * original[4] + original[7]) / 3, rtol=0, atol=1e-12)
        assert np.allclose(values[6], (original[4] + 2 * original[7]) / 3, rtol=0, atol=1e-12)
        assert np.array_equal(values[0], original[1]) and np.array_equal(values[31], original[30])
        assert np.array_equal(values[10], original[10])


def test_align_fills_faceless_frames(golden_reference, golden_driving):
    motion = align(golden_reference, _without_faces(golden_driving, [0, 5, 6, 31]))
    assert len(motion) == 32 and np.isfinite(motion.points).all()
    assert np.abs(motion.points[5] - (2 * motion.points[4] + motion.points[7]) / 3).max() < 2.0


def test_driving_without_any_face_raises(golden_reference, golden_driving):
    with pytest.raises(NoFaceError, match="No face was found in any of the 32 driving frames"):
        align(golden_reference, FaceLandmarks.empty(32, 512, 512))


def test_reference_without_face_falls_back_to_unaligned_driving(golden_driving, golden_png, caplog):
    no_face = FaceLandmarks.empty(1, 512, 512)
    with caplog.at_level(logging.WARNING, logger=align_module.__name__):
        motion = align(no_face, golden_driving)
    assert "no face in the reference" in caplog.text
    assert np.array_equal(motion.points, normalised_to_pixels(golden_driving.points, 512, 512))
    expected = np.stack([golden_png(f"driving_raw_lmk_{i:03d}.png") for i in range(32)])
    assert np.array_equal(draw_motion(motion.points, 512, 512, pupils=False), expected)


# ---- argument checks -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pose_mode": "head"}, "'relative', 'absolute', 'none'"),
        ({"smoothing": 0}, "smoothing"),
        ({"smoothing": 4}, "odd"),
        ({"smoothing": True}, "smoothing"),
        ({"neutral_frame": 32}, "out of range"),
        ({"neutral_frame": -1}, "out of range"),
        ({"neutral_frame": 2.0}, "frame index"),
        ({"expression_scale": float("nan")}, "finite"),
    ],
)
def test_invalid_options_raise(golden_reference, golden_driving, options, message):
    with pytest.raises(ValueError, match=message):
        align(golden_reference, golden_driving, **options)


def test_invalid_inputs_raise(golden_reference, golden_driving):
    with pytest.raises(ValueError, match="has no face"):
        align(golden_reference, _without_faces(golden_driving, [4]), neutral_frame=4)
    with pytest.raises(ValueError, match="single frame"):
        align(golden_driving, golden_driving)
    with pytest.raises(ValueError, match="at least 2 driving frame"):
        align(golden_reference, golden_driving.select(0), keep_first_frame=False)
    assert POSE_MODES == ("relative", "absolute", "none")
