"""Landmark drawing: exact parity with the official renders; visibility, draw order, pupils, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from emoji_model.landmarks import connections
from emoji_model.landmarks.draw import (
    draw_motion,
    draw_normalised,
    iter_drawings,
    landmark_pixels,
    normalised_to_pixels,
)
from emoji_model.landmarks.types import NUM_POINTS, Motion

SIZE = 512


def test_official_dict_order_equals_features_order():
    """The official dict: oval first (black), then the feature sets; no edge is shared, so order = FEATURES order."""
    spec: dict = {}
    for edge in connections.CUSTOM_FACE_OVAL:
        spec[edge] = (0, 0, 0)
    for feature in connections.FEATURES:
        for edge in feature.edges:
            spec[edge] = feature.colour
    visible = [(edge, colour) for edge, colour in spec.items() if colour != (0, 0, 0)]
    assert visible == [(edge, f.colour) for f in connections.FEATURES for edge in f.edges]


def test_aligned_drawings_equal_official_pngs(golden_landmarks, golden_png):
    drawings = draw_motion(golden_landmarks["align_drawn_keypoints"][1:], SIZE, SIZE)  # the official drops frame 0
    expected = np.stack([golden_png(f"aligned_lmk_{i:03d}.png") for i in range(31)])
    equal = (drawings == expected).all(axis=-1)
    assert equal.sum() == equal.size, f"{equal.size - equal.sum()} of {equal.size} pixels differ"
    assert 0.001 < (expected.any(axis=-1)).mean() < 0.01  # about 0.3 % of the pixels are lit


def test_reference_drawing_equals_official_png(golden_landmarks, golden_png):
    drawing = draw_normalised(golden_landmarks["ref_lmks"], SIZE, SIZE, pupils=True)[0]
    assert np.array_equal(drawing, golden_png("ref_lmk_image.png"))


def test_raw_driving_drawings_equal_official_pngs(golden_landmarks, golden_png):
    drawings = draw_normalised(golden_landmarks["drv_lmks"], SIZE, SIZE, pupils=False)
    expected = np.stack([golden_png(f"driving_raw_lmk_{i:03d}.png") for i in range(32)])
    assert np.array_equal(drawings, expected)
    with_pupils = draw_normalised(golden_landmarks["drv_lmks"], SIZE, SIZE, pupils=True)
    assert not np.array_equal(with_pupils, expected)


def test_normalised_to_pixels_rounds_through_float32():
    points = np.full((1, NUM_POINTS, 3), 0.1)
    pixels = normalised_to_pixels(points, 300, 200)
    assert pixels.shape == (1, NUM_POINTS, 2)
    assert pixels[0, 0, 0] == float(np.float32(0.1)) * 300 != 0.1 * 300


def test_landmark_pixels_follow_mediapipe_rules():
    width, height = 100, 50
    points = np.array([[[0.0, 0.0], [100.0, 50.0], [99.99, 49.5], [-1e-3, 10.0], [100.01, 10.0],
                        [np.nan, 1.0], [1e300, 1.0], [100.000001, 10.0]]])  # fmt: skip
    pixels, visible = landmark_pixels(points, width, height)
    assert visible[0].tolist() == [True, True, True, False, False, False, False, True]  # last: float32 → 1.0
    assert pixels[0, :3].tolist() == [[0, 0], [99, 49], [99, 49]]


def _single_segment_points(a, b, pupil_right, pupil_left) -> np.ndarray:
    """Points with every landmark NaN except one eye edge's ends and the two pupils."""
    points = np.full((1, NUM_POINTS, 2), np.nan)
    (i, j) = connections.LEFT_EYE[0]
    points[0, i], points[0, j] = a, b
    points[0, 468], points[0, 473] = pupil_right, pupil_left
    return points


def test_points_outside_the_image_drop_their_lines_not_their_pupils():
    inside = draw_motion(_single_segment_points((10, 10), (30, 20), (50, 50), (60, 50)), 64, 64)
    outside = draw_motion(_single_segment_points((10, 10), (70, 20), (50, 50), (60, 50)), 64, 64)
    eye = np.array(connections.FEATURES[0].colour, np.uint8)
    assert (inside[0] == eye).all(-1).sum() == 21
    assert (outside[0] == eye).all(-1).sum() == 0
    assert (outside[0] == connections.PUPIL_COLOUR).all(-1).sum() == 72  # two 6×6 squares


def test_a_later_feature_overwrites_an_earlier_one_where_they_cross():
    points = np.full((1, NUM_POINTS, 2), np.nan)
    (i, j), (k, m) = connections.LEFT_EYE[0], connections.LEFT_EYEBROW[0]
    points[0, [i, j]] = (2.5, 10.5), (20.5, 10.5)  # a horizontal eye edge: pixels (2…20, 10)
    points[0, [k, m]] = (10.5, 2.5), (10.5, 20.5)  # a vertical eyebrow edge, drawn after the eye
    drawing = draw_motion(points, 24, 24)[0]
    eye, eyebrow = (np.array(feature.colour, np.uint8) for feature in connections.FEATURES[:2])
    assert (drawing[10, 10] == eyebrow).all()
    assert (drawing == eye).all(-1).sum() == 19 - 1 and (drawing == eyebrow).all(-1).sum() == 19


def test_pupils_are_clipped_at_the_border_without_wrapping():
    width, height = 32, 24
    drawing = draw_motion(_single_segment_points(np.nan, np.nan, (1.9, 0.5), (-10.0, -10.0)), width, height)[0]
    red = (drawing == connections.PUPIL_COLOUR).all(-1)
    assert red[:3, :4].all() and red.sum() == 3 * 4  # rows [-3, 3) ∩ image, cols [-2, 4): truncation of 1.9 → 1
    drawing = draw_motion(_single_segment_points(np.nan, np.nan, (31.5, 23.5), (np.nan, np.nan)), width, height)[0]
    red = (drawing == connections.PUPIL_COLOUR).all(-1)
    assert red[20:, 28:].all() and red.sum() == 4 * 4


def test_pupils_are_drawn_over_the_lines():
    drawing = draw_motion(_single_segment_points((5, 5), (25, 5), (15, 5), (16, 5)), 32, 32)[0]
    red = (drawing == connections.PUPIL_COLOUR).all(-1)
    assert red[2:8, 12:19].all() and red.sum() == 6 * 7
    eye = (drawing == connections.FEATURES[0].colour).all(-1)
    assert eye[5].sum() == 21 - 7 and not eye[5, 12:19].any()


def test_iter_drawings_chunks_match_one_batch(golden_landmarks):
    points = golden_landmarks["align_drawn_keypoints"]
    motion = Motion(points=points, width=SIZE, height=SIZE, source_frames=np.arange(len(points)))
    chunks = list(iter_drawings(motion, chunk=10))
    assert [len(c) for c in chunks] == [10, 10, 10, 2]
    assert np.array_equal(np.concatenate(chunks), draw_motion(points, SIZE, SIZE))


def test_empty_batch_and_bad_arguments():
    assert draw_motion(np.zeros((0, NUM_POINTS, 2)), 8, 6).shape == (0, 6, 8, 3)
    with pytest.raises(ValueError, match="shape"):
        draw_motion(np.zeros((2, 468, 2)), 8, 8)
    with pytest.raises(ValueError, match="width"):
        draw_motion(np.zeros((1, NUM_POINTS, 2)), 0, 8)
    with pytest.raises(ValueError, match="chunk"):
        next(iter_drawings(Motion(np.zeros((1, NUM_POINTS, 2)), 8, 8, np.arange(1)), chunk=0))
