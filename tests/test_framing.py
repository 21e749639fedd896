"""Portrait framing without a detector: the crop's geometry, paste-back, the mask, face order, the preview."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from emoji_model import framing
from emoji_model.errors import InputImageError
from emoji_model.framing import FaceBox, TRAINED_FRAMING


def _box_in_crop(points_px: np.ndarray, crop: framing.PortraitCrop) -> tuple[np.ndarray, np.ndarray]:
    """(width, height) and centre of a portrait-pixel point set's box, as fractions of the crop."""
    x, y, side, _ = crop.source
    local = (points_px - (x, y)) / side
    lo, hi = local.min(axis=0), local.max(axis=0)
    return hi - lo, (lo + hi) / 2


def test_the_crop_frames_the_golden_astronaut_as_the_training_video(astronaut_rgb, golden_reference):
    points = golden_reference.points[0, :, :2] * 512
    face = FaceBox.of_points(golden_reference.points[0], 512, 512)
    image, crop = framing.crop_portrait(astronaut_rgb, face, 512)
    assert image.shape == (512, 512, 3) and crop.size == (512, 512)
    size, centre = _box_in_crop(points, crop)
    assert abs(size[0] / TRAINED_FRAMING["width"] - 1) < 0.1 and abs(size[1] / TRAINED_FRAMING["height"] - 1) < 0.1
    assert abs(centre[0] - TRAINED_FRAMING["centre_x"]) < 0.02 and abs(centre[1] - TRAINED_FRAMING["centre_y"]) < 0.02


def _large_portrait(astronaut: np.ndarray, scale: float, canvas=(1200, 1700)) -> tuple[np.ndarray, float, int]:
    """The astronaut enlarged by ``scale`` at the top right of a flat canvas (an off-centre face, ≥ 1500 px)."""
    side = round(512 * scale)
    big = np.full((*canvas, 3), (40, 90, 140), dtype=np.uint8)
    enlarged = np.asarray(Image.fromarray(astronaut).resize((side, side), Image.BICUBIC))
    left = canvas[1] - side
    big[: min(side, canvas[0]), left:] = enlarged[: canvas[0]]
    return big, side / 512, left


@pytest.mark.parametrize(("scale", "size", "p999", "mean"), [(1.6, 512, 1, 0.2), (2.3, 512, 1, 0.2), (2.3, 256, 4, 0.6), (0.9, 512, 12, 1.2)])
def test_pasting_back_the_unchanged_crop_gives_the_portrait(astronaut_rgb, golden_reference, scale, size, p999, mean):
    """Outside the mask the portrait exactly. Inside, a crop enlarged to the model size comes back within 1 level
    (99.9 % of values; measured max 2, mean 0.06–0.09); a crop larger than the model size loses its finest detail
    on the way down (398 px → 256: 99.9 % within 3, mean 0.30), and one enlarged more than twice is averaged on
    the way back (156 px → 512 → 156: 99.9 % within 9, mean 0.81)."""
    portrait, k, left = _large_portrait(astronaut_rgb, scale)
    face = FaceBox.of_points(golden_reference.points[0], 512, 512)
    face = FaceBox(face.x0 * k + left, face.y0 * k, face.x1 * k + left, face.y1 * k)
    image, crop = framing.crop_portrait(portrait, face, size)
    pasted = list(framing.paste_back([image, image[None]], portrait, crop, feather=0.1))
    assert len(pasted) == 2 and pasted[0].shape == portrait.shape
    mask = framing.paste_mask(crop, 0.1)
    diff = np.abs(pasted[0].astype(int) - portrait)
    assert (diff[mask == 0] == 0).all()
    assert np.percentile(diff[mask > 0], 99.9) <= p999 and diff[mask > 0].mean() < mean
    np.testing.assert_array_equal(pasted[0], pasted[1])


def test_outside_the_mask_every_frame_is_the_portrait(astronaut_rgb):
    portrait = np.ascontiguousarray(np.concatenate([astronaut_rgb, astronaut_rgb[:, ::-1]], axis=1))  # 1024×512
    crop = framing.crop_portrait(portrait, FaceBox(600, 100, 700, 220), 64)[1]
    noise = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    mask = framing.paste_mask(crop, 0.2)
    for frame in framing.paste_back(noise, portrait, crop, feather=0.2):
        assert (frame[mask == 0] == portrait[mask == 0]).all()
        assert (frame[mask == 1] != portrait[mask == 1]).any()


def test_a_face_at_the_border_is_padded_and_the_padding_never_shows(astronaut_rgb):
    face = FaceBox(-20, 300, 80, 420)  # leaves the portrait on the left
    image, crop = framing.crop_portrait(astronaut_rgb, face, 128)
    x, y, side, _ = crop.source
    assert x < 0  # the crop reaches outside the portrait
    assert (image[:, : round(-x * 128 / side) - 1] == 0).all()  # the padding in the crop is black
    white = np.full_like(image, 255)
    pasted = next(framing.paste_back([white], astronaut_rgb, crop, feather=0.0))
    mask = framing.paste_mask(crop, 0.0)
    assert pasted.shape == astronaut_rgb.shape
    assert (pasted[mask == 1] == 255).all() and (pasted[mask == 0] == astronaut_rgb[mask == 0]).all()


def test_the_mask_feathers_inwards_from_the_crop_edges():
    crop = framing.PortraitCrop("crop", (300, 200), (64, 64), (0, 0, 64, 64), (50, 40, 100, 100))
    mask = framing.paste_mask(crop, 0.2)
    assert mask.shape == (200, 300) and mask.dtype == np.float32
    assert mask[:40].max() == 0 and mask[:, :50].max() == 0 and mask[140:].max() == 0
    assert mask[90, 100] == 1 and 0 < mask[41, 100] < 0.05 and 0 < mask[50, 100] < 1
    np.testing.assert_allclose(mask[40:140, 50:150], mask[40:140, 50:150].T)  # square crop: symmetric
    assert (framing.paste_mask(crop, 0.0)[40:140, 50:150] == 1).all()
    with pytest.raises(ValueError, match="feather"):
        framing.paste_mask(crop, 0.7)


def test_fit_framing_is_todays_fit_and_pad_and_pastes_back():
    from emoji_model.reference import fit_and_pad

    portrait = np.random.default_rng(1).integers(0, 256, (300, 200, 3), dtype=np.uint8)
    image, crop = framing.fit_portrait(portrait, 128, 128)
    np.testing.assert_array_equal(image, fit_and_pad(portrait, 128, 128))
    assert crop.region == (22, 0, 85, 128) and crop.source == (0, 0, 200, 300)
    pasted = next(framing.paste_back([image], portrait, crop, feather=0.0))
    assert pasted.shape == portrait.shape and np.abs(pasted.astype(int) - portrait).mean() < 60  # a 2.3× down-up


def test_none_framing_trims_to_a_multiple_of_8():
    portrait = np.zeros((203, 130, 3), dtype=np.uint8)
    image, crop = framing.whole_portrait(portrait)
    assert image.shape == (200, 128, 3) and crop.size == (128, 200) and crop.portrait_size == (130, 203)


def test_face_orders_and_choice():
    faces = [FaceBox(10, 10, 50, 60), FaceBox(300, 100, 400, 220), FaceBox(180, 90, 220, 130)]
    size = (400, 300)
    assert framing.choose_face(faces, 0, "largest", *size) == faces[1]
    assert framing.choose_face(faces, 1, "largest", *size) == faces[0]
    assert framing.choose_face(faces, 0, "left_to_right", *size) == faces[0]
    assert framing.choose_face(faces, 2, "left_to_right", *size) == faces[1]
    assert framing.choose_face(faces, 0, "centre", *size) == faces[2]
    with pytest.raises(InputImageError, match="face_index 3 .* 3 faces were found.* 0 to 2"):
        framing.choose_face(faces, 3, "largest", *size)
    with pytest.raises(InputImageError, match="no face was found"):
        framing.choose_face([], 0, "largest", *size)
    with pytest.raises(ValueError, match="Unknown face order"):
        framing.order_faces(faces, "random", *size)


def test_points_map_back_to_the_portrait(astronaut_rgb):
    crop = framing.crop_portrait(astronaut_rgb, FaceBox(200, 100, 260, 170), 64)[1]
    x, y, side, _ = crop.source
    np.testing.assert_allclose(framing.to_portrait(np.array([[0.0, 0.0], [64.0, 32.0]]), crop),
                               [[x, y], [x + side, y + side / 2]])


def test_the_preview_draws_the_crop_box_over_the_portrait(astronaut_rgb):
    crop = framing.crop_portrait(astronaut_rgb, FaceBox(200, 100, 260, 170), 64)[1]
    preview = framing.draw_framing(astronaut_rgb, crop, np.array([[230.0, 130.0]] * 478))
    assert preview.shape == astronaut_rgb.shape
    changed = np.any(preview != astronaut_rgb, axis=-1)
    x, y, side, _ = crop.source
    assert changed[y, x + side // 2] and changed[y + side // 2, x] and changed[130, 230]
    assert not changed[y + side // 3, x + side // 3]  # inside the box, away from the points: untouched


def test_bad_sizes_are_refused(astronaut_rgb):
    with pytest.raises(InputImageError, match="multiple of 8"):
        framing.crop_portrait(astronaut_rgb, FaceBox(200, 100, 260, 170), 100)
    with pytest.raises(ValueError, match="crop_scale"):
        framing.crop_square(FaceBox(0, 0, 10, 10), crop_scale=0)


# ---- with the face detector -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_faces(astronaut_rgb) -> tuple[np.ndarray, list[FaceBox]]:
    """1100×640: the astronaut at 600² on the left (a 106-px face), at 300² nearer the centre (53 px: under 10 %)."""
    canvas = np.full((640, 1100, 3), 200, dtype=np.uint8)
    for (y, x), side in (((20, 0), 600), ((300, 620), 300)):
        canvas[y:y + side, x:x + side] = np.asarray(Image.fromarray(astronaut_rgb).resize((side, side), Image.BICUBIC))
    return canvas


def test_every_face_is_found_small_ones_too(two_faces, landmarker_model):
    faces = framing.detect_faces(two_faces, landmarker_model)
    assert len(faces) == 2
    widths = sorted(f.width for f in faces)
    assert widths[0] < 0.1 * 1100 and 45 < widths[0] < 60 and 95 < widths[1] < 115, widths


@pytest.mark.parametrize(("order", "first_is_big"), [("largest", True), ("left_to_right", True), ("centre", False)])
def test_face_index_picks_each_face_in_each_order(two_faces, landmarker_model, order, first_is_big):
    chosen = []
    for index in (0, 1):
        options = framing.FramingOptions(size=128, face_index=index, face_order=order)
        image, crop = framing.frame_portrait(two_faces, landmarker_model, options)
        assert image.shape == (128, 128, 3)
        chosen.append(crop.face.width > 80)
    assert chosen == [first_is_big, not first_is_big]
    with pytest.raises(InputImageError, match="face_index 2 .* 2 faces were found"):
        framing.frame_portrait(two_faces, landmarker_model, framing.FramingOptions(face_index=2, face_order=order))


def test_a_portrait_without_a_face_names_the_framings_that_need_none(landmarker_model):
    blank = np.full((300, 400, 3), 128, dtype=np.uint8)
    with pytest.raises(InputImageError, match="No face was found.*'fit'.*'none'"):
        framing.frame_portrait(blank, landmarker_model)
    image, crop = framing.frame_portrait(blank, landmarker_model, framing.FramingOptions(framing="fit", size=64))
    assert image.shape == (64, 64, 3) and crop.framing == "fit"


def test_bad_framing_options_are_refused():
    for options, message in ((framing.FramingOptions(framing="zoom"), "Unknown framing"),
                             (framing.FramingOptions(face_order="random"), "Unknown face order"),
                             (framing.FramingOptions(face_index=-1), "face_index"),
                             (framing.FramingOptions(crop_scale=0), "crop_scale")):
        with pytest.raises(ValueError, match=message):
            framing.check_framing(options)


def test_the_astronaut_in_crop_mode_is_framed_as_the_training_video(astronaut_rgb, landmarker_model):
    """Its face box is 17 % × 21 % of the photo; cropped, the box detected on the crop is within ±10 % of the
    official driving video's (50 % × 63 %, centred at (0.49, 0.58))."""
    prepared = framing.prepare_portrait(astronaut_rgb, landmarker_model, framing.FramingOptions(size=256))
    assert prepared.image.shape == (256, 256, 3) and prepared.landmarks.found.all()
    points = prepared.landmarks.points[0, :, :2]  # normalised to the crop
    lo, hi = points.min(axis=0), points.max(axis=0)
    (w, h), (cx, cy) = hi - lo, (lo + hi) / 2
    assert abs(w / TRAINED_FRAMING["width"] - 1) < 0.1 and abs(h / TRAINED_FRAMING["height"] - 1) < 0.1, (w, h)
    assert abs(cx / TRAINED_FRAMING["centre_x"] - 1) < 0.1 and abs(cy / TRAINED_FRAMING["centre_y"] - 1) < 0.1


def test_fit_mode_prepares_the_portrait_as_before(astronaut_rgb, landmarker_model):
    """fit = today's fit-and-pad and today's landmarks (detected on the canvas at ≥ 512 px)."""
    from emoji_model.landmarks.extract import extract_landmarks
    from emoji_model.reference import fit_and_pad

    portrait = astronaut_rgb[:, 60:460]  # 400×512: padded at the sides
    prepared = framing.prepare_portrait(portrait, landmarker_model, framing.FramingOptions(framing="fit", size=128))
    np.testing.assert_array_equal(prepared.image, fit_and_pad(portrait, 128, 128))
    before = extract_landmarks([fit_and_pad(portrait, 512, 512)], landmarker_model, video=False)
    np.testing.assert_array_equal(prepared.landmarks.points, before.points)
    assert (prepared.landmarks.width, prepared.landmarks.height) == (128, 128)
