"""Landmark drawings in the official Follow-Your-Emoji style, vectorised over frames and lines.

The output is pixel-identical to the official ``FaceMeshVisualizer.draw_landmarks`` (MediaPipe's
``drawing_utils.draw_landmarks`` + ``cv2.line``, thickness 1, LINE_8), which reduces to:

* each point is stored as ``x / W`` in a float32 protobuf field; it is drawable iff both coordinates are in [0, 1]
  (``math.isclose(1, v)`` adds nothing for float32 values) and lands on ``min(floor(v · W), W − 1)``;
* every edge of ``connections.FEATURES`` whose two ends are drawable is a Bresenham line (OpenCV's LineIterator,
  walked left to right), later lines overwriting earlier ones;
* pupils: 6×6 red squares ``[y−3, y+3) × [x−3, x+3)`` at ``int()``-truncated points 473 then 468, not subject
  to the [0, 1] test. Here they are clipped at the image border (NaN points skipped). The official slices with the
  raw indices instead: a pupil with −3 ≤ x < 3 (or y) vanishes, one with x ≤ −4 wraps to the opposite side;
  at the bottom and right edges both agree.

All the lines of all frames are rasterised in one numpy pass (closed-form Bresenham), then scattered.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from .connections import FEATURES, PUPIL_COLOUR, PUPIL_HALF_WIDTH, PUPILS
from .types import NUM_POINTS, Motion

logger = logging.getLogger(__name__)


def _edge_table() -> tuple[np.ndarray, np.ndarray]:
    """All drawn edges in draw order (E, 2) and their RGB colours (E, 3)."""
    edges = [edge for feature in FEATURES for edge in feature.edges]
    colours = [feature.colour for feature in FEATURES for _ in feature.edges]
    return np.array(edges, dtype=np.int64), np.array(colours, dtype=np.uint8)


_EDGES, _EDGE_COLOURS = _edge_table()


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


def line_pixels(x0, y0, x1, y1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels of S thickness-1 ``cv2.line`` segments at once: (segment index, x, y), each (P,) int64, segment-major.

    OpenCV's 8-connected LineIterator swaps the ends so that x grows, steps the major axis every pixel and the minor
    axis when its error term is negative. Pixel k then has taken m_k minor steps, m_k being the least m ≥ 0 with
    2·a·m ≥ 2·b·k − a (a, b the major and minor extents), which is evaluated here in closed form.
    """
    x0, y0, x1, y1 = (np.asarray(v, dtype=np.int64).ravel() for v in (x0, y0, x1, y1))
    swap = x1 < x0  # left to right
    x0, x1 = np.where(swap, x1, x0), np.where(swap, x0, x1)
    y0, y1 = np.where(swap, y1, y0), np.where(swap, y0, y1)
    dx, dy = x1 - x0, y1 - y0  # dx ≥ 0
    steep = np.abs(dy) > dx
    major, minor = np.maximum(dx, np.abs(dy)), np.minimum(dx, np.abs(dy))
    counts = major + 1  # (S,)
    segment = np.repeat(np.arange(len(counts)), counts)  # (P,)
    k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)  # step along the major axis
    a, b = major[segment], minor[segment]
    m = np.maximum(0, -((a - 2 * b * k) // np.maximum(2 * a, 1)))  # ceil((2bk − a) / 2a), at least 0
    along_x = np.where(steep[segment], m, k)
    along_y = np.where(steep[segment], k, m) * np.where(dy < 0, -1, 1)[segment]
    return segment, x0[segment] + along_x, y0[segment] + along_y


def paint_segments(canvas: np.ndarray, frame, x0, y0, x1, y1, colours) -> None:
    """Draw segments onto ``canvas`` (N, H, W, 3) in place; a later segment wins a shared pixel, as sequential cv2.line.

    ``frame``, ``x0`` … ``y1`` are (S,) ints with every end inside the image (no clipping); ``colours`` is (S, 3).
    """
    n, height, width, _ = canvas.shape
    frame = np.asarray(frame, dtype=np.int64).ravel()
    ends = np.stack([np.asarray(v, dtype=np.int64).ravel() for v in (x0, y0, x1, y1)])  # (4, S)
    limits = np.array([width, height, width, height])[:, None]
    if ends.shape[1] != len(frame):
        raise ValueError(f"got {len(frame)} frame indices for {ends.shape[1]} segments")
    if ((ends < 0) | (ends >= limits)).any() or ((frame < 0) | (frame >= n)).any():
        raise ValueError("segment ends and frames must lie inside the canvas")
    segment, x, y = line_pixels(*ends)
    owner = frame[segment]
    flat = (owner * height + y) * width + x  # (P,)
    _, last_from_end = np.unique(flat[::-1], return_index=True)  # the last write to each pixel wins
    last = len(flat) - 1 - last_from_end
    canvas[owner[last], y[last], x[last]] = np.asarray(colours, dtype=np.uint8)[segment[last]]


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
    start, end = _EDGES[:, 0], _EDGES[:, 1]
    frame, edge = np.nonzero(visible[:, start] & visible[:, end])  # frame-major, then draw order
    a, b = pixels[frame, start[edge]], pixels[frame, end[edge]]  # (S, 2)
    paint_segments(canvas, frame, a[:, 0], a[:, 1], b[:, 0], b[:, 1], _EDGE_COLOURS[edge])
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
