"""Landmark drawings in the official Follow-Your-Emoji style, pixel-identical to ``FaceMeshVisualizer.draw_landmarks``
(MediaPipe's ``drawing_utils.draw_landmarks`` + ``cv2.line``, thickness 1, LINE_8):

* each point is stored as ``x / W`` in a float32 protobuf field; it is drawable iff both coordinates are in [0, 1]
  (``math.isclose(1, v)`` adds nothing for float32 values) and lands on ``min(floor(v · W), W − 1)``;
* every edge of ``connections.FEATURES`` whose two ends are drawable is drawn with OpenCV, feature by feature in the
  official order, so a later line overwrites an earlier one (one ``cv2.polylines`` call per feature: its lines share
  one colour, so their order within the call cannot change a pixel);
* pupils: 6×6 red squares ``[y−3, y+3) × [x−3, x+3)`` at ``int()``-truncated points 473 then 468, not subject
  to the [0, 1] test. Here they are clipped at the image border (NaN points skipped). The official slices with the
  raw indices instead: a pupil with −3 ≤ x < 3 (or y) vanishes, one with x ≤ −4 wraps to the opposite side;
  at the bottom and right edges both agree.
"""

from __future__ import annotations

from collections.abc import Iterator

import cv2
import numpy as np

from .connections import FEATURES, PUPIL_COLOUR, PUPIL_HALF_WIDTH, PUPILS
from .types import NUM_POINTS, Motion


_EDGES = np.array([edge for feature in FEATURES for edge in feature.edges], dtype=np.int64)  # (E, 2), draw order
_FEATURE_BOUNDS = np.cumsum([0] + [len(feature.edges) for feature in FEATURES])  # feature i: edges [b_i, b_i+1)


def _check_size(width: int, height: int) -> None:
    """Raise ValueError unless width and height are positive ints."""
    for name, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_points(points: np.ndarray, dims: tuple[int, ...]) -> np.ndarray:
    """``points`` as float64 (N, 478, d), d in ``dims``; ValueError otherwise."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] != NUM_POINTS or points.shape[2] not in dims:
        raise ValueError(f"landmarks must have shape (frames, {NUM_POINTS}, {' or '.join(map(str, dims))}), "
                         f"got {points.shape}")
    return points


def normalised_to_pixels(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Normalised landmarks (N, 478, 2|3) → pixels (N, 478, 2), float32-rounded as the official ``normed=True`` path.

    Drawing the result with ``draw_motion`` gives exactly the official normed drawing, pupils included: the official
    multiplies the float32 value by the size in float64 (NumPy 1.x promotion), and ``x · W / W`` is exact.
    """
    points = _check_points(points, (2, 3))
    return points[..., :2].astype(np.float32).astype(np.float64) * np.array([width, height], dtype=np.float64)


def landmark_pixels(points: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe's pixel of every point (..., 2) int64 and whether it is drawn (...,) bool, from pixel coordinates."""
    size = np.array([width, height], dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        stored = (points / size).astype(np.float32).astype(np.float64)  # the protobuf float field, read back
        visible = ((stored >= 0) & (stored <= 1)).all(axis=-1)  # NaN fails both tests
    stored = np.where(visible[..., None], stored, 0.0)
    pixels = np.minimum(np.floor(stored * size), size - 1).astype(np.int64)
    return pixels, visible


def _paint_pupils(canvas: np.ndarray, points: np.ndarray) -> None:
    """6×6 pupil squares at ``int()``-truncated points 473 then 468, clipped at the border (see module docstring)."""
    n, height, width, _ = canvas.shape
    offsets = np.arange(-PUPIL_HALF_WIDTH, PUPIL_HALF_WIDTH)  # (6,)
    for index in PUPILS:  # sequential: the later pupil wins where the two overlap
        centre = points[:, index]  # (N, 2)
        frames = np.flatnonzero(np.isfinite(centre).all(axis=-1))
        margin = PUPIL_HALF_WIDTH + 1  # beyond this every square is fully outside; clip before the int cast
        centre = np.trunc(np.clip(centre[frames], -margin, [width + margin, height + margin])).astype(np.int64)
        rows = centre[:, 1, None, None] + offsets[None, :, None]  # (M, 6, 1)
        cols = centre[:, 0, None, None] + offsets[None, None, :]  # (M, 1, 6)
        rows, cols = np.broadcast_arrays(rows, cols)
        owner = np.broadcast_to(frames[:, None, None], rows.shape)
        inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
        canvas[owner[inside], rows[inside], cols[inside]] = PUPIL_COLOUR


def draw_motion(points: np.ndarray, width: int, height: int, *, pupils: bool = True) -> np.ndarray:
    """Official-style landmark drawings of pixel landmarks (N, 478, 2) → uint8 RGB (N, H, W, 3)."""
    _check_size(width, height)
    points = _check_points(points, (2,))
    canvas = np.zeros((len(points), height, width, 3), dtype=np.uint8)
    pixels, visible = landmark_pixels(points, width, height)  # (N, 478, 2), (N, 478)
    segments = pixels[:, _EDGES].astype(np.int32)  # (N, E, 2 ends, 2)
    drawn = visible[:, _EDGES].all(axis=-1)  # (N, E): both ends drawable
    for image, frame_segments, frame_drawn in zip(canvas, segments, drawn):
        for feature, lo, hi in zip(FEATURES, _FEATURE_BOUNDS[:-1], _FEATURE_BOUNDS[1:]):
            lines = frame_segments[lo:hi][frame_drawn[lo:hi]]
            if len(lines):
                cv2.polylines(image, lines, False, feature.colour, 1, cv2.LINE_8)
    if pupils:
        _paint_pupils(canvas, points)
    return canvas


def draw_normalised(points: np.ndarray, width: int, height: int, *, pupils: bool = True) -> np.ndarray:
    """Official ``normed=True`` drawings of normalised landmarks (N, 478, 2|3) at ``width``×``height``."""
    _check_size(width, height)
    return draw_motion(normalised_to_pixels(points, width, height), width, height, pupils=pupils)


def iter_drawings(motion: Motion, *, chunk: int = 32, pupils: bool = True) -> Iterator[np.ndarray]:
    """``draw_motion`` of ``motion`` in chunks of at most ``chunk`` frames, to bound memory on long sequences."""
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise ValueError(f"chunk must be a positive integer, got {chunk!r}")
    for start in range(0, len(motion), chunk):
        yield draw_motion(motion.points[start : start + chunk], motion.width, motion.height, pupils=pupils)


class Drawings:
    """The drawings of a motion as a lazy (N, H, W, 3) uint8 array: frames are drawn when indexed, never all at
    once, so a long video's drawings need no memory (``sampling.animate.sample`` reads one window at a time).

    ``drawings[i]`` → (H, W, 3); ``drawings[[i, j, …]]`` or a slice → (n, H, W, 3); ``np.asarray`` draws them all.
    """

    def __init__(self, motion: Motion, *, pupils: bool = True):
        _check_size(motion.width, motion.height)
        self.motion, self.pupils = motion, pupils
        self.shape = (len(motion), motion.height, motion.width, 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 4

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[[int(index)]][0]
        points = self.motion.points[index]  # numpy indexing: lists, slices, arrays; IndexError when out of range
        return draw_motion(points, self.motion.width, self.motion.height, pupils=self.pupils)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        frames = self[:]
        return frames if dtype is None else frames.astype(dtype)
