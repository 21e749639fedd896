"""Which face: boxes of detected faces, their orders, and following one face from frame to frame."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import InputImageError

FACE_ORDERS = ("largest", "left_to_right", "centre")
MIN_OVERLAP = 0.1  # IoU with the face's last box below which a frame's faces are someone else's


@dataclass(frozen=True)
class FaceBox:
    """A face's landmark box in pixels of the image it was found in."""

    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def width(self) -> float:
        return self.x1 - self.x0

    @property
    def height(self) -> float:
        return self.y1 - self.y0

    @property
    def centre(self) -> tuple[float, float]:
        return (self.x0 + self.x1) / 2, (self.y0 + self.y1) / 2

    def iou(self, other: FaceBox) -> float:
        """Intersection over union with ``other`` (0 when apart)."""
        w = max(0.0, min(self.x1, other.x1) - max(self.x0, other.x0))
        h = max(0.0, min(self.y1, other.y1) - max(self.y0, other.y0))
        inter = w * h
        union = self.width * self.height + other.width * other.height - inter
        return inter / union if union > 0 else 0.0

    @staticmethod
    def of_points(points: np.ndarray, width: int, height: int) -> FaceBox:
        """The box of normalised landmarks (478, 2|3) in pixels of a width×height image."""
        xy = np.asarray(points)[:, :2] * (width, height)
        (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
        return FaceBox(float(x0), float(y0), float(x1), float(y1))


# ---- choosing a face ----------------------------------------------------------------------------------------------


def order_faces(faces: Sequence[FaceBox], order: str, width: int, height: int) -> list[FaceBox]:
    """``faces`` sorted by ``order``: largest first, left to right, or nearest the image centre first."""
    if order not in FACE_ORDERS:
        raise ValueError(f"Unknown face order {order!r}; choose one of {', '.join(FACE_ORDERS)}")
    keys = {
        "largest": lambda f: -f.width * f.height,
        "left_to_right": lambda f: f.centre[0],
        "centre": lambda f: math.hypot(f.centre[0] - width / 2, f.centre[1] - height / 2),
    }
    return sorted(faces, key=keys[order])


def choose_face(faces: Sequence[FaceBox], index: int, order: str, width: int, height: int) -> FaceBox:
    """Face ``index`` of ``faces`` in ``order``; ``InputImageError`` naming how many there are when out of range."""
    ordered = order_faces(faces, order, width, height)
    if not 0 <= index < len(ordered):
        found = f"{len(ordered)} face{'s' * (len(ordered) != 1)} were found" if ordered else "no face was found"
        raise InputImageError(f"face_index {index} asks for face {index + 1} ({order} first) but {found}; "
                              f"use a face_index from 0 to {max(len(ordered) - 1, 0)}")
    return ordered[index]



class FaceFollower:
    """Chooses face ``index`` (in ``order``) in the first frame that has faces, then, in every later frame, the face
    that overlaps its last box most — never re-chosen by order, so two faces that swap sizes are not swapped."""

    def __init__(self, index: int = 0, order: str = "largest"):
        if order not in FACE_ORDERS:
            raise ValueError(f"Unknown face order {order!r}; choose one of {', '.join(FACE_ORDERS)}")
        if index < 0:
            raise ValueError(f"face_index must be 0 or more, got {index}")
        self.index, self.order = index, order
        self.last: FaceBox | None = None

    def pick(self, faces: Sequence[np.ndarray], width: int, height: int) -> int | None:
        """The position in ``faces`` (normalised points, each (478, 2|3)) of the followed face, None if absent."""
        if not faces:
            return None
        boxes = [FaceBox.of_points(points, width, height) for points in faces]
        if self.last is None:
            if self.index >= len(boxes):
                return None  # not there yet: wait for a frame that shows enough faces
            chosen = choose_face(boxes, self.index, self.order, width, height)
            best = boxes.index(chosen)
        else:
            overlaps = [self.last.iou(box) for box in boxes]
            best = int(np.argmax(overlaps))
            if overlaps[best] < MIN_OVERLAP:
                return None  # lost: the frame is flagged and filled later
        self.last = boxes[best]
        return best
