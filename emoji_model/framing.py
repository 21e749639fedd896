"""Portrait framing: find the faces of a photo, choose one, crop it as the model was trained, and paste back.

The model was trained on face-filling crops. In the official driving video the face's landmark box is 50 % of the
frame's width and 63 % of its height, centred at (0.49, 0.58): ``TRAINED_FRAMING``. A photo's face is cropped to a
square that frames it the same way, resized to the model size, animated, and the frames are pasted back into the
photo at its own resolution through the inverse of that one transform (``PortraitCrop``), so pasting adds no jitter.

Framings: ``crop`` (default), ``fit`` (the whole photo fitted into the model size and padded black: the official
``ValDataset``), ``none`` (the photo at its own size, its right and bottom edges trimmed to a multiple of 8).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .errors import InputImageError
from .images import to_rgb_levels, to_rgb_uint8
from .landmarks.faces import FACE_ORDERS, FaceBox, choose_face, order_faces  # noqa: F401 (framing's API)

logger = logging.getLogger(__name__)

FRAMINGS = ("crop", "fit", "none")
TRAINED_FRAMING = {"width": 0.50, "height": 0.63, "centre_x": 0.49, "centre_y": 0.58}  # face box / crop side
SIZE_STEP = 8  # the VAE's downscale factor: prepared sizes are multiples of it


@dataclass(frozen=True)
class PortraitCrop:
    """How a prepared image relates to the portrait it came from: ``region`` (x, y, w, h) of the prepared image shows
    ``source`` (x, y, w, h) of the portrait, integer pixels; ``source`` may reach outside the portrait (padded black
    in the prepared image, never pasted back)."""

    framing: str
    portrait_size: tuple[int, int]  # (width, height) of the original portrait
    size: tuple[int, int]  # (width, height) of the prepared image
    region: tuple[int, int, int, int]
    source: tuple[int, int, int, int]
    face: FaceBox | None = None  # the chosen face, in portrait pixels (crop framing)


# ---- the crop -----------------------------------------------------------------------------------------------------


def crop_square(face: FaceBox, crop_scale: float = 1.0, crop_offset_y: float = 0.0) -> tuple[int, int, int]:
    """(x0, y0, side) of the square that frames ``face`` as ``TRAINED_FRAMING``; ``crop_scale`` > 1 shows more around
    the face, ``crop_offset_y`` > 0 moves the face down in the crop (a fraction of the side)."""
    if not crop_scale > 0:
        raise ValueError(f"crop_scale must be positive, got {crop_scale}")
    framing = TRAINED_FRAMING
    side = crop_scale * math.sqrt(face.width / framing["width"] * face.height / framing["height"])
    cx, cy = face.centre
    side = max(1, round(side))
    x0 = round(cx - framing["centre_x"] * side)
    y0 = round(cy - (framing["centre_y"] + crop_offset_y) * side)
    return x0, y0, side


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize``: area averaging to shrink by 2× or more (no aliasing), Lanczos otherwise (sharp, and nearly
    its own inverse, so a crop pasted back unchanged gives the portrait again)."""
    if image.shape[1] == width and image.shape[0] == height:
        return image.copy()
    halved = width * 2 <= image.shape[1] and height * 2 <= image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if halved else cv2.INTER_LANCZOS4)


def _padded_window(image: np.ndarray, x: int, y: int, w: int, h: int) -> np.ndarray:
    """``image[y:y+h, x:x+w]`` with black where the window leaves the image."""
    height, width = image.shape[:2]
    out = np.zeros((h, w) + image.shape[2:], dtype=image.dtype)
    sx0, sy0, sx1, sy1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y:sy1 - y, sx0 - x:sx1 - x] = image[sy0:sy1, sx0:sx1]
    return out


def render(portrait, crop: PortraitCrop, scale: int = 1) -> np.ndarray:
    """The prepared image ``crop`` describes, at ``scale`` × its size (the face detector wants ≥ 512 px)."""
    rgb = to_rgb_uint8(portrait)
    width, height = crop.size[0] * scale, crop.size[1] * scale
    if crop.framing == "fit":
        from .reference import fit_and_pad

        return fit_and_pad(rgb, width, height)
    return _resize(_padded_window(rgb, *crop.source), width, height)


def crop_portrait(portrait, face: FaceBox, size: int = 512, *, crop_scale: float = 1.0,
                  crop_offset_y: float = 0.0) -> tuple[np.ndarray, PortraitCrop]:
    """The size×size crop framing ``face`` (padded black where it leaves the portrait) and its record."""
    rgb = to_rgb_uint8(portrait)
    check_size(size, size)
    x0, y0, side = crop_square(face, crop_scale, crop_offset_y)
    height, width = rgb.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + side > width or y0 + side > height:
        logger.info("the crop reaches outside the portrait: padded black there (never pasted back)")
    if side < size:
        logger.warning("the face's crop is %d px, smaller than the model size %d: it is upscaled (soft result)",
                       side, size)
    crop = PortraitCrop("crop", (width, height), (size, size), (0, 0, size, size), (x0, y0, side, side), face)
    return render(rgb, crop), crop


def fit_portrait(portrait, width: int = 512, height: int = 512) -> tuple[np.ndarray, PortraitCrop]:
    """The whole portrait fitted into width×height and padded black, as the official ``ValDataset``."""
    rgb = to_rgb_uint8(portrait)
    check_size(width, height)
    h0, w0 = rgb.shape[:2]
    scale = min(width / w0, height / h0)
    w, h = int(w0 * scale), int(h0 * scale)
    region = (width // 2 - w // 2, height // 2 - h // 2, w, h)
    crop = PortraitCrop("fit", (w0, h0), (width, height), region, (0, 0, w0, h0))
    return render(rgb, crop), crop


def whole_portrait(portrait) -> tuple[np.ndarray, PortraitCrop]:
    """The portrait at its own size, its right and bottom edges trimmed to a multiple of 8."""
    rgb = to_rgb_uint8(portrait)
    h0, w0 = rgb.shape[:2]
    w, h = w0 - w0 % SIZE_STEP, h0 - h0 % SIZE_STEP
    check_size(w, h)
    if (w, h) != (w0, h0):
        logger.info("framing none: %d×%d trimmed to %d×%d (a multiple of %d)", w0, h0, w, h, SIZE_STEP)
    crop = PortraitCrop("none", (w0, h0), (w, h), (0, 0, w, h), (0, 0, w, h))
    return render(rgb, crop), crop


def to_portrait(points: np.ndarray, crop: PortraitCrop) -> np.ndarray:
    """Pixel points (..., 2) of the prepared image → pixels of the portrait (the inverse of the crop's transform)."""
    rx, ry, rw, rh = crop.region
    x, y, w, h = crop.source
    return (np.asarray(points, dtype=np.float64)[..., :2] - (rx, ry)) * (w / rw, h / rh) + (x, y)


def check_size(width: int, height: int) -> None:
    if width < SIZE_STEP or height < SIZE_STEP or width % SIZE_STEP or height % SIZE_STEP:
        raise InputImageError(f"the model size must be a positive multiple of {SIZE_STEP}, got {width}×{height}")


# ---- finding the faces -------------------------------------------------------------------------------------------

MIN_TILE = 192  # px: tiles are not made smaller than this


def _views(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """The whole image, then overlapping square tiles (half the short side, then a quarter, … ≥ MIN_TILE), each
    overlapping its neighbours by half: MediaPipe's detector sees the whole view at 128 px, so a face under ~1/10
    of the image is found only in a tile (measured: a 90-px face beside a 184-px one in 1100×640)."""
    views = [(0, 0, width, height)]
    side = min(width, height) // 2
    while side >= MIN_TILE and len(views) < 200:
        stride = side // 2
        xs = sorted({*range(0, width - side, stride), width - side})
        ys = sorted({*range(0, height - side, stride), height - side})
        views += [(x, y, side, side) for y in ys for x in xs]
        side //= 2
    return views


def detect_faces(image, model_path, *, max_faces: int = 8) -> list[FaceBox]:
    """Every face of ``image`` (small ones too) as landmark boxes in its pixels, by detection on the whole image and
    on overlapping tiles; a face seen in several views counts once (the first, widest view's box)."""
    from .landmarks.extract import FaceLandmarker

    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    faces: list[FaceBox] = []
    with FaceLandmarker(model_path, video=False, num_faces=max_faces) as landmarker:
        for x, y, w, h in _views(width, height):
            for points, _, _ in landmarker.detect_all(np.ascontiguousarray(rgb[y:y + h, x:x + w])):
                box = FaceBox.of_points(points, w, h)
                cut = (w, h) != (width, height) and (box.x0 < 1 or box.y0 < 1 or box.x1 > w - 1 or box.y1 > h - 1)
                box = FaceBox(box.x0 + x, box.y0 + y, box.x1 + x, box.y1 + y)
                if not cut and not any(box.iou(other) > 0.3 or _inside(box, other) for other in faces):
                    faces.append(box)
    return faces


def _inside(box: FaceBox, other: FaceBox) -> bool:
    cx, cy = box.centre
    return other.x0 <= cx <= other.x1 and other.y0 <= cy <= other.y1


# ---- one call: a portrait, prepared -------------------------------------------------------------------------------


@dataclass(frozen=True)
class FramingOptions:
    """How a portrait is prepared for the model (see the module docstring)."""

    framing: str = "crop"  # "crop" | "fit" | "none"
    size: int = 512  # crop: the square's side; fit: the canvas' width and height; none: unused
    face_index: int = 0  # which face, in face_order
    face_order: str = "largest"  # "largest" | "left_to_right" | "centre"
    crop_scale: float = 1.0  # > 1: more around the face
    crop_offset_y: float = 0.0  # > 0: the face lower in the crop (a fraction of its side)


def check_framing(options: FramingOptions) -> None:
    """``ValueError`` naming the bad option."""
    if options.framing not in FRAMINGS:
        raise ValueError(f"Unknown framing {options.framing!r}; choose one of {', '.join(FRAMINGS)}")
    if options.face_order not in FACE_ORDERS:
        raise ValueError(f"Unknown face order {options.face_order!r}; choose one of {', '.join(FACE_ORDERS)}")
    if options.face_index < 0:
        raise ValueError(f"face_index must be 0 or more, got {options.face_index}")
    if not options.crop_scale > 0:
        raise ValueError(f"crop_scale must be positive, got {options.crop_scale}")


def frame_portrait(portrait, model_path, options: FramingOptions = FramingOptions()) -> tuple[np.ndarray, PortraitCrop]:
    """The prepared image (uint8, a multiple of 8 on each side) and its ``PortraitCrop``; ``crop`` finds the faces on
    the portrait itself and refuses a portrait without one, naming the framings that need none."""
    check_framing(options)
    rgb = to_rgb_uint8(portrait)
    if options.framing == "fit":
        return fit_portrait(rgb, options.size, options.size)
    if options.framing == "none":
        return whole_portrait(rgb)
    faces = detect_faces(rgb, model_path)
    if not faces:
        raise InputImageError("No face was found in the portrait, so it cannot be cropped around one. Use framing "
                              "'fit' (the whole portrait, the model then follows the driving face as drawn) or "
                              "'none' (the portrait at its own size).")
    face = choose_face(faces, options.face_index, options.face_order, rgb.shape[1], rgb.shape[0])
    return crop_portrait(rgb, face, options.size, crop_scale=options.crop_scale, crop_offset_y=options.crop_offset_y)


DETECTION_SIZE = 512  # the portrait's face is detected at least this big (the official detects at 512²)


@dataclass(frozen=True, eq=False)
class PreparedPortrait:
    """A portrait made ready for the model: the image it sees, how it maps back, and its face's landmarks."""

    image: np.ndarray  # (h, w, 3) uint8, the model's input size
    crop: PortraitCrop
    landmarks: object  # landmarks.types.FaceLandmarks, one frame, normalised to the prepared image


def prepare_portrait(portrait, model_path, options: FramingOptions = FramingOptions()) -> PreparedPortrait:
    """``frame_portrait``, then the face's landmarks on the prepared image, detected at an integer multiple of its
    size of at least ``DETECTION_SIZE`` (a 64² test image is too small for the detector) and expressed at its size.
    In ``crop`` the face nearest the crop's centre is the chosen one; otherwise ``face_index`` in ``face_order``."""
    import dataclasses

    from .landmarks.extract import extract_landmarks

    rgb = to_rgb_uint8(portrait)
    image, crop = frame_portrait(rgb, model_path, options)
    width, height = crop.size
    scale = max(1, math.ceil(DETECTION_SIZE / min(width, height)))
    index, order = (0, "centre") if crop.framing == "crop" else (options.face_index, options.face_order)
    found = extract_landmarks([render(rgb, crop, scale)], model_path, video=False, face_index=index, face_order=order)
    return PreparedPortrait(image, crop, dataclasses.replace(found, width=width, height=height))


# ---- paste-back ---------------------------------------------------------------------------------------------------


def paste_mask(crop: PortraitCrop, feather: float = 0.1) -> np.ndarray:
    """(H, W) float32 in [0, 1] over the portrait: 1 where generated pixels replace it, ramping (smoothstep) to 0
    over ``feather`` × the crop's smaller side inside the crop's edges; 0 outside the crop."""
    if not 0 <= feather <= 0.5:
        raise ValueError(f"feather must be from 0 to 0.5 (a fraction of the crop's size), got {feather}")
    width, height = crop.portrait_size
    x, y, w, h = crop.source
    ramp = feather * min(w, h)
    if ramp > 0:
        def edge(n: int) -> np.ndarray:
            d = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / ramp  # distance to the nearer edge
            t = np.clip(d, 0, 1)
            return (t * t * (3 - 2 * t)).astype(np.float32)

        local = np.outer(edge(h), edge(w))
    else:
        local = np.ones((h, w), dtype=np.float32)
    mask = np.zeros((height, width), dtype=np.float32)
    sx0, sy0, sx1, sy1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if sx1 > sx0 and sy1 > sy0:
        mask[sy0:sy1, sx0:sx1] = local[sy0 - y:sy1 - y, sx0 - x:sx1 - x]
    return mask


def _colour_matched(frame: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``frame`` with each channel's mean and spread moved to ``target``'s (both (h, w, 3); float32 out)."""
    f, t = frame.astype(np.float32), target.astype(np.float32)
    mean_f, std_f = f.mean(axis=(0, 1)), f.std(axis=(0, 1)) + 1e-6
    mean_t, std_t = t.mean(axis=(0, 1)), t.std(axis=(0, 1))
    return (f - mean_f) * (std_t / std_f) + mean_t


def paste_back(frames: Iterable[np.ndarray], portrait, crop: PortraitCrop, *, feather: float = 0.1,
               colour_match: bool = False) -> Iterator[np.ndarray]:
    """Each generated (h, w, 3) frame (or (n, h, w, 3) chunk; any ``images.to_rgb_uint8`` input, e.g. ComfyUI IMAGE
    floats) mapped back into the portrait at its own resolution,
    blended through ``paste_mask``: (H, W, 3) uint8 per frame. Outside the mask the portrait's pixels are kept
    exactly. ``colour_match`` moves each frame's colours to those of the portrait under the crop first."""
    rgb = to_rgb_uint8(portrait)
    if (rgb.shape[1], rgb.shape[0]) != crop.portrait_size:
        raise InputImageError(f"the portrait is {rgb.shape[1]}×{rgb.shape[0]} but the crop was made from a "
                              f"{crop.portrait_size[0]}×{crop.portrait_size[1]} one")
    mask = paste_mask(crop, feather)
    x, y, w, h = crop.source
    width, height = crop.portrait_size
    sx0, sy0, sx1, sy1 = max(x, 0), max(y, 0), min(x + w, width), min(y + h, height)
    if sx1 <= sx0 or sy1 <= sy0:
        raise InputImageError("the crop lies outside the portrait: nothing to paste back")
    inside = (slice(sy0, sy1), slice(sx0, sx1))
    weight = mask[inside][..., None]
    base = rgb[inside].astype(np.float32)
    original_crop = _padded_window(rgb, x, y, w, h)
    rx, ry, rw, rh = crop.region
    for item in frames:
        chunk = item if item.ndim == 4 else item[None]
        for frame in (to_rgb_levels(f) for f in chunk):  # float32 levels: rounded once, after resizing and blending
            if (frame.shape[1], frame.shape[0]) != crop.size:
                raise InputImageError(f"a generated frame is {frame.shape[1]}×{frame.shape[0]}, the crop "
                                      f"{crop.size[0]}×{crop.size[1]}")
            shown = _resize(np.ascontiguousarray(frame[ry:ry + rh, rx:rx + rw]), w, h)
            if colour_match:
                shown = _colour_matched(shown, original_crop)
            generated = shown[sy0 - y:sy1 - y, sx0 - x:sx1 - x]
            out = rgb.copy()
            out[inside] = np.clip(np.rint(base + weight * (generated - base)), 0, 255).astype(np.uint8)
            yield out


# ---- preview ------------------------------------------------------------------------------------------------------


def preview(portrait, prepared: PreparedPortrait) -> np.ndarray:
    """The portrait with the crop box and the prepared face's landmarks drawn over it (``draw_framing``)."""
    points = None
    if prepared.landmarks.found[0]:
        size = np.array([prepared.landmarks.width, prepared.landmarks.height])
        points = to_portrait(prepared.landmarks.points[0, :, :2] * size, prepared.crop)
    return draw_framing(portrait, prepared.crop, points)


def draw_framing(portrait, crop: PortraitCrop, points: np.ndarray | None = None) -> np.ndarray:
    """The portrait with the crop box and the face's landmarks (portrait pixels, ``to_portrait``) drawn over it,
    lines thick enough to read at thumbnail size: (H, W, 3) uint8."""
    out = to_rgb_uint8(portrait).copy()
    height, width = out.shape[:2]
    thick = max(2, round(max(width, height) / 200))
    x, y, w, h = crop.source
    cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (255, 200, 0), thick, cv2.LINE_AA)
    if points is not None and np.isfinite(points).all():
        from .landmarks.connections import FEATURES, PUPILS

        xy = np.rint(np.asarray(points)[:, :2]).astype(np.int32)
        line = max(2, round(thick * min(w, h) / 400))  # the features' lines scale with the face
        for feature in FEATURES:  # the drawing the model follows, in its colours, thick enough for a thumbnail
            cv2.polylines(out, [xy[list(edge)] for edge in feature.edges], False, feature.colour, line, cv2.LINE_AA)
        for pupil in PUPILS:
            cv2.circle(out, tuple(int(v) for v in xy[pupil]), line + 1, (255, 0, 0), -1, cv2.LINE_AA)
    return out
