"""Which face: face boxes and their overlap, following one face from frame to frame, a driving clip with two faces,
and a portrait whose face is too small for the model size."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from PIL import Image

from emoji_model import framing
from emoji_model.errors import InputImageError
from emoji_model.landmarks.extract import extract_landmarks
from emoji_model.landmarks.faces import MIN_OVERLAP, FaceBox, FaceFollower, choose_face
from emoji_model.video import iter_video_frames

W, H = 1000, 500  # the image the unit tests' faces are found in


def _face(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    """Normalised landmarks (478, 3) of a face whose landmark box is (x0, y0)–(x1, y1) px of a W×H image."""
    t = np.linspace(0, 1, 478)
    xs, ys = x0 + (x1 - x0) * t, y0 + (y1 - y0) * np.roll(t, 200)  # the box's corners are among the points
    return np.stack([xs / W, ys / H, np.zeros_like(t)], axis=1)


# ---- FaceBox.iou --------------------------------------------------------------------------------------------------


def test_iou_of_boxes():
    a = FaceBox(0, 0, 2, 1)
    assert a.iou(a) == 1
    assert a.iou(FaceBox(1, 0, 3, 1)) == pytest.approx(1 / 3)  # half of each: 1 / (2 + 2 - 1)
    assert FaceBox(1, 0, 3, 1).iou(a) == pytest.approx(1 / 3)  # symmetric
    assert a.iou(FaceBox(2, 0, 4, 1)) == 0  # touching
    assert a.iou(FaceBox(5, 5, 6, 6)) == 0  # apart
    assert FaceBox(0, 0, 4, 4).iou(FaceBox(1, 1, 3, 3)) == pytest.approx(4 / 16)  # one inside the other
    assert FaceBox(1, 1, 1, 1).iou(FaceBox(1, 1, 1, 1)) == 0  # no area: no union, no overlap


def test_a_box_of_points_is_in_pixels():
    box = FaceBox.of_points(_face(100, 50, 300, 250), W, H)
    assert (box.x0, box.y0, box.x1, box.y1) == pytest.approx((100, 50, 300, 250))
    assert (box.width, box.height, *box.centre) == pytest.approx((200, 200, 200, 150))


# ---- FaceFollower ----------------------------------------------------------------------------------------------------

SMALL_LEFT = _face(100, 100, 200, 220)  # 100×120 px
BIG_RIGHT = _face(600, 50, 900, 400)  # 300×350 px


@pytest.mark.parametrize(
    ("index", "order", "expected"),
    [(0, "largest", "big"), (1, "largest", "small"), (0, "left_to_right", "small"), (1, "left_to_right", "big"),
     (0, "centre", "big"), (1, "centre", "small")],  # the centres lie 251 and 361 px from the middle (500, 250)
)
def test_the_first_choice_is_by_index_and_order(index, order, expected):
    faces = {"small": SMALL_LEFT, "big": BIG_RIGHT}
    for listed in (["small", "big"], ["big", "small"]):  # MediaPipe's own order does not matter
        follower = FaceFollower(index, order)
        assert listed[follower.pick([faces[name] for name in listed], W, H)] == expected


def test_the_face_is_then_followed_by_overlap_even_when_the_sizes_swap():
    follower = FaceFollower(0, "largest")
    assert follower.pick([SMALL_LEFT, BIG_RIGHT], W, H) == 1  # the big face on the right
    # It shrinks step by step while the left one grows past it; it stays the followed one, wherever it is listed.
    for step in range(1, 6):
        right = _face(600 + 20 * step, 50 + 25 * step, 900 - 20 * step, 400 - 25 * step)
        left = _face(100 - 10 * step, 100 - 15 * step, 200 + 40 * step, 220 + 40 * step)
        faces = [right, left] if step % 2 else [left, right]
        assert faces[follower.pick(faces, W, H)] is right, step
    assert FaceBox.of_points(left, W, H).width > 2 * FaceBox.of_points(right, W, H).width  # "largest" is now left
    assert follower.pick([left], W, H) is None  # the followed face left the frame: not replaced by the other one


def test_a_face_that_overlaps_less_than_min_overlap_is_lost():
    follower = FaceFollower(0, "largest")
    follower.pick([_face(0, 0, 100, 100)], W, H)
    # Shifted by d px a 100² box keeps IoU (100 - d) / (100 + d): 0.105 at d = 81, 0.094 at d = 83 (MIN_OVERLAP 0.1).
    assert MIN_OVERLAP == 0.1
    assert follower.pick([_face(83, 0, 183, 100)], W, H) is None
    last = follower.last  # a lost frame does not move the face's last box
    assert (last.x0, last.y0, last.x1, last.y1) == pytest.approx((0, 0, 100, 100))
    assert follower.pick([], W, H) is None
    assert follower.pick([_face(500, 300, 600, 400), _face(81, 0, 181, 100)], W, H) == 1  # back, beside someone
    assert follower.last.x0 == pytest.approx(81)


def test_an_index_beyond_the_faces_waits_for_a_frame_with_enough_faces():
    follower = FaceFollower(1, "left_to_right")
    assert follower.pick([], W, H) is None
    assert follower.pick([BIG_RIGHT], W, H) is None  # one face: there is no second one yet
    assert follower.last is None
    assert follower.pick([BIG_RIGHT, SMALL_LEFT], W, H) == 0  # the second from the left
    assert follower.pick([BIG_RIGHT], W, H) == 0  # then followed, even alone


def test_bad_follower_options_and_an_out_of_range_choice_are_refused():
    with pytest.raises(ValueError, match="Unknown face order"):
        FaceFollower(0, "random")
    with pytest.raises(ValueError, match="face_index must be 0 or more"):
        FaceFollower(-1)
    boxes = [FaceBox.of_points(SMALL_LEFT, W, H), FaceBox.of_points(BIG_RIGHT, W, H)]
    with pytest.raises(InputImageError, match="face_index 2 asks for face 3 .* 2 faces were found"):
        choose_face(boxes, 2, "largest", W, H)


# ---- a driving clip with two faces -------------------------------------------------------------------------------

N = 24  # frames of each clip
PAD_Y = 40  # carphone ×3 is 528×432: padded to 512 high, 40 px black above and below
LEFT, RIGHT = (0, 0, 512, 512), (512, PAD_Y, 528, 432)  # (x, y, width, height) of each clip in the composite
COMPOSITE = (1040, 512)  # width, height


@pytest.fixture(scope="module")
def two_clips(temple_video):
    """(left clip, right clip, side-by-side composite) frame lists: 24 frames of the official driving video (512²,
    face box ~250×315 px) beside 24 frames of carphone upscaled ×3 (528×432, face box ~135×170 px)."""
    from media import carphone_path

    left = list(iter_video_frames(temple_video, N))
    right = [np.asarray(Image.fromarray(f).resize((528, 432), Image.BICUBIC))
             for f in iter_video_frames(carphone_path(), N)]
    composite = []
    for a, b in zip(left, right):
        frame = np.zeros((COMPOSITE[1], COMPOSITE[0], 3), np.uint8)
        frame[:512, :512] = a
        frame[PAD_Y:PAD_Y + 432, 512:] = b
        composite.append(frame)
    assert len(composite) == N
    return left, right, composite


@pytest.fixture(scope="module")
def alone(two_clips, landmarker_model):
    """Each clip's own landmarks in pixels of that clip, per mode: {(side, video): (N, 478, 2)}."""
    left, right, _ = two_clips
    out = {}
    for video in (False, True):
        for side, frames, (_, _, w, h) in (("left", left, LEFT), ("right", right, RIGHT)):
            face = extract_landmarks(frames, landmarker_model, video=video)
            assert face.found.all()
            out[side, video] = face.points[..., :2] * (w, h)
    return out


# Measured (mediapipe 0.10.x, CPU), the gap per point between the followed face in the composite and the same clip
# alone, px of the clip (max / median over 24 frames × 478 points):
#   IMAGE mode: left (250-px face) 9.05 / 1.12, right (135-px face) 4.96 / 0.69
#   VIDEO mode: left 7.54 / 0.98, right 3.12 / 0.88
# The detector sees the composite at its own scale, so the face's region of interest, and with it the landmarks,
# differ by a few px (3.6 % of the left face's width at most). Bounds: about 2× measured.
GAP_BOUNDS = {("left", False): (18, 2.3), ("right", False): (10, 1.4),
              ("left", True): (15, 2.0), ("right", True): (6.5, 1.8)}


@pytest.mark.parametrize("video", [False, True], ids=["image_mode", "video_mode"])
@pytest.mark.parametrize(("order", "index", "side"),
                         [("left_to_right", 0, "left"), ("left_to_right", 1, "right"),
                          ("largest", 0, "left"), ("largest", 1, "right")])  # the left face is 3.4× the area
def test_the_chosen_face_of_two_is_followed_through_every_frame(two_clips, alone, landmarker_model, video, order,
                                                                index, side):
    """A driving clip with two faces: the chosen face is followed through every frame (checked against the
    landmarks of that face's clip alone)."""
    _, _, composite = two_clips
    face = extract_landmarks(composite, landmarker_model, video=video, face_index=index, face_order=order)
    assert (face.width, face.height) == COMPOSITE
    assert face.found.all(), np.flatnonzero(~face.found)
    xy = face.points[..., :2] * COMPOSITE  # px of the composite
    if side == "left":  # never the other face: every point of every frame on the chosen clip's half
        assert xy[..., 0].max() < 512
    else:
        assert xy[..., 0].min() > 512
    x, y, _, _ = LEFT if side == "left" else RIGHT
    gap = np.linalg.norm(xy - (x, y) - alone[side, video], axis=-1)  # px of the clip alone
    worst, typical = GAP_BOUNDS[side, video]
    assert gap.max() < worst and np.median(gap) < typical, (gap.max(), np.median(gap))


# ---- a portrait smaller than the model size --------------------------------------------------------------------


def test_a_small_crop_is_upscaled_to_the_model_size_and_says_so(astronaut_rgb, caplog):
    face = FaceBox(40, 40, 90, 103)  # 50×63 px: the crop's side is 100 px
    with caplog.at_level(logging.WARNING, logger="emoji_model.framing"):
        image, crop = framing.crop_portrait(astronaut_rgb, face, 256)
    assert image.shape == (256, 256, 3) and crop.size == (256, 256) and crop.source[2:] == (100, 100)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == ["the face's crop is 100 px, smaller than the model size 256: it is upscaled (soft result)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="emoji_model.framing"):
        framing.crop_portrait(astronaut_rgb, face, 96)  # 100 px ≥ 96: downscaled, nothing to say
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_small_portrait_is_prepared_at_the_model_size_and_says_so(astronaut_rgb, landmarker_model, caplog):
    """The astronaut at 256²: its face (~45 px) gives an ~86-px crop, upscaled to 512 with a warning."""
    small = np.asarray(Image.fromarray(astronaut_rgb).resize((256, 256), Image.BICUBIC))
    with caplog.at_level(logging.WARNING, logger="emoji_model.framing"):
        prepared = framing.prepare_portrait(small, landmarker_model, framing.FramingOptions(size=512))
    assert prepared.image.shape == (512, 512, 3) and prepared.crop.size == (512, 512)
    side = prepared.crop.source[2]
    assert 60 < side < 120, side
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"the face's crop is {side} px, smaller than the model size 512: it is upscaled (soft result)"]
    assert prepared.landmarks.found.all()  # detected on the crop at ≥ 512 px
