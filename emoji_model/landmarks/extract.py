"""Face landmarks, blendshapes, pose and metric mesh from images and videos with MediaPipe's public Tasks API."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import math
import os
import time
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputImageError, ModelFileError
from ..images import to_rgb_uint8
from .geometry import METADATA_MEMBER, GeometryMetadata, read_geometry_metadata, screen_to_metric
from .faces import FaceFollower
from .types import NUM_BLENDSHAPES, NUM_POINTS, FaceLandmarks

logger = logging.getLogger(__name__)

MIN_SIDE = 64  # px: below this on the shorter side there is no face left to find
_GEOMETRY_BATCH = 64  # frames per vectorised geometry call: bounds its temporaries on long videos
_BUNDLE_MEMBERS = (
    "face_detector.tflite",
    "face_landmarks_detector.tflite",
    "face_blendshapes.tflite",
    METADATA_MEMBER,
)

# One frame's raw result: points (478, 3), pose (4, 4), blendshapes (52,), all float64.
_Raw = tuple[np.ndarray, np.ndarray, np.ndarray]


def _rgb_frame(image) -> np.ndarray:
    """``images.to_rgb_uint8(image)``, refused when its shorter side is below MIN_SIDE px."""
    rgb = to_rgb_uint8(image)
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        raise InputImageError(
            f"the image is {width}×{height} px; face landmarks need at least {MIN_SIDE} px on the shorter side"
        )
    return rgb


def _read_bundle(model_path: str | os.PathLike) -> bytes:
    """The bytes of a face landmarker ``.task`` file, checked to be a complete bundle."""
    path = Path(model_path)
    if not path.is_file():
        raise ModelFileError(f"MediaPipe face landmarker model not found: {path}")
    data = path.read_bytes()
    invalid = f"{path} is not a valid MediaPipe face landmarker bundle (face_landmarker_v2_with_blendshapes.task)"
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            missing = sorted(set(_BUNDLE_MEMBERS) - set(archive.namelist()))
            corrupt = archive.testzip()
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{invalid}: {error}") from error
    if missing or corrupt:
        raise ModelFileError(f"{invalid}: " + (f"missing {', '.join(missing)}" if missing else f"corrupt {corrupt}"))
    return data


class FaceLandmarker:
    """One MediaPipe FaceLandmarker (``num_faces`` faces, blendshapes and pose on, CPU), in VIDEO (tracking) or IMAGE
    mode. Use it as a context manager so that MediaPipe's graph is closed (mediapipe 1.x needs that).
    """

    def __init__(self, model_path: str | os.PathLike, *, video: bool, fps: float = 30.0, num_faces: int = 1):
        if not (math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps}")
        bundle = _read_bundle(model_path)
        self.geometry: GeometryMetadata = read_geometry_metadata(bundle)
        self.video, self.num_faces = video, num_faces
        self._ms_per_frame = 1000.0 / fps
        self._last_ms = -1  # VIDEO mode timestamps: integer ms, strictly increasing even above 1000 fps
        self._frames = 0
        self._mp, self._task = _create_task(bundle, video, Path(model_path), num_faces)

    def __enter__(self) -> FaceLandmarker:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Release MediaPipe's graph (idempotent)."""
        if self._task is not None:
            self._task.close()
            self._task = None

    def detect(self, image: np.ndarray) -> FaceLandmarks:
        """The landmarks of one image (or of the next video frame) as a one-frame record."""
        rgb = _rgb_frame(image)
        collector = _Collector(1)
        collector.add(self._detect_raw(rgb))
        return collector.result(rgb.shape[1], rgb.shape[0], self.geometry)

    def _detect_raw(self, rgb: np.ndarray) -> _Raw | None:
        """Points (478, 3), MediaPipe's pose (4, 4), blendshapes (52,) of a (H, W, 3) uint8 frame's first face, None
        if there is none."""
        faces = self.detect_all(rgb)
        return faces[0] if faces else None

    def skip_frame(self) -> None:
        """Count a frame that could not be read (VIDEO mode keeps the timing of those after it)."""
        self._frames += 1

    def detect_all(self, rgb: np.ndarray) -> list[_Raw]:
        """``_detect_raw``'s arrays for every face found (at most ``num_faces``) in a (H, W, 3) uint8 frame."""
        if self._task is None:
            raise ValueError("the face landmarker is closed")
        mp_image = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=rgb)
        if self.video:
            self._last_ms = max(round(self._frames * self._ms_per_frame), self._last_ms + 1)
            result = self._task.detect_for_video(mp_image, self._last_ms)
        else:
            result = self._task.detect(mp_image)
        self._frames += 1
        return _unpack(result)


def _create_task(bundle: bytes, video: bool, path: Path, num_faces: int = 1) -> tuple[Any, Any]:
    """(the mediapipe module, a FaceLandmarker task) loaded from the bundle's bytes."""
    import mediapipe as mp  # deferred: importing it takes a second and loads native code
    from mediapipe.tasks.python import vision
    from mediapipe.tasks.python.core.base_options import BaseOptions

    options = vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_buffer=bundle, delegate=BaseOptions.Delegate.CPU),
        running_mode=vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE,
        num_faces=num_faces,
        output_face_blendshapes=True,
        output_facial_transformation_matrixes=True,
    )
    try:
        return mp, vision.FaceLandmarker.create_from_options(options)
    except (RuntimeError, ValueError) as error:
        raise ModelFileError(f"{path} is not a valid MediaPipe face landmarker bundle: {error}") from error


def _unpack(result: Any) -> list[_Raw]:
    """A FaceLandmarkerResult → each face's arrays (faces without a pose left out)."""
    faces = []
    for i, landmarks in enumerate(result.face_landmarks):
        if i >= len(result.facial_transformation_matrixes):
            break
        points = np.array([(p.x, p.y, p.z) for p in landmarks], dtype=np.float64)  # (478, 3)
        pose = np.asarray(result.facial_transformation_matrixes[i], dtype=np.float64).reshape(4, 4)
        blendshapes = np.full(NUM_BLENDSHAPES, np.nan)
        for category in result.face_blendshapes[i] if i < len(result.face_blendshapes) else ():
            blendshapes[category.index] = category.score  # by index: column 0 is "_neutral"
        if points.shape != (NUM_POINTS, 3):
            raise ModelFileError(f"the face landmarker model gives {len(points)} landmarks, expected {NUM_POINTS}")
        faces.append((points, pose, blendshapes))
    return faces


class _Collector:
    """Each frame's arrays written straight into the record's arrays as it comes (nothing per frame is kept besides):
    sized for ``capacity`` frames (the container's count, when known), doubled when more come."""

    def __init__(self, capacity: int | None):
        self.count, self._record = 0, FaceLandmarks.empty(max(1, capacity or 256), 0, 0)

    def add(self, raw: _Raw | None) -> None:
        if self.count == len(self._record):
            grown = FaceLandmarks.empty(2 * self.count, 0, 0)
            for name in ("points", "mesh", "pose", "blendshapes", "found"):
                getattr(grown, name)[: self.count] = getattr(self._record, name)
            self._record = grown
        if raw is not None:
            r = self._record
            r.points[self.count], r.pose[self.count], r.blendshapes[self.count] = raw
            r.found[self.count] = True
        self.count += 1

    def result(self, width: int, height: int, geometry: GeometryMetadata) -> FaceLandmarks:
        """The record of the frames added, the mesh computed in batches (a degenerate face counts as not found)."""
        r = self._record
        if self.count < len(r):
            r = r.select(slice(0, self.count))
            r = FaceLandmarks(*(a.copy() for a in (r.points, r.mesh, r.pose, r.blendshapes, r.found)), 0, 0)
        out = dataclasses.replace(r, width=width, height=height)
        self._record = None
        rows = np.flatnonzero(out.found)
        for start in range(0, len(rows), _GEOMETRY_BATCH):
            batch = rows[start : start + _GEOMETRY_BATCH]
            out.mesh[batch], _ = screen_to_metric(out.points[batch], width, height, geometry)
        undefined = out.found & np.isnan(out.mesh).any(axis=(1, 2))  # degenerate: MediaPipe gives no pose either
        for array in (out.points, out.pose, out.blendshapes):
            array[undefined] = np.nan
        out.found[undefined] = False
        return out


def extract_landmarks(
    frames: Iterable[np.ndarray | None],
    model_path: str | os.PathLike,
    *,
    video: bool = True,
    fps: float = 30.0,
    on_frame: Callable[[int], None] | None = None,
    face_index: int = 0,
    face_order: str = "largest",
    num_frames: int | None = None,
) -> FaceLandmarks:
    """Landmarks of every frame, streamed one frame at a time; ``on_frame(i)`` runs after frame i (it may raise).
    ``num_frames``: how many frames to expect (a container's count), so the record is allocated once.

    ``video=True`` tracks the face across frames (MediaPipe VIDEO mode); ``video=False`` detects it anew in each.
    Frames without a face, and ``None`` frames (unreadable ones), get ``found=False`` and NaN rows.
    With several faces in view, face ``face_index`` in ``face_order`` (``faces.FACE_ORDERS``) on the first frame
    that shows it is followed by its overlap from frame to frame (``faces.FaceFollower``). Whether to look for
    several is decided on the first frame: one face there (the usual case) runs MediaPipe for one face exactly as
    before, since asking it for more changes how it tracks.
    """
    follower = FaceFollower(face_index, face_order)
    raws = _Collector(num_frames)
    size: tuple[int, int] | None = None
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        landmarker: FaceLandmarker | None = None
        index = -1
        for frame in frames:  # not enumerate(): it would keep the last frame alive
            index += 1
            if frame is None:
                raws.add(None)
                if landmarker is not None:
                    landmarker.skip_frame()
                if on_frame is not None:
                    on_frame(index)
                continue
            rgb = _rgb_frame(frame)
            del frame  # hold no caller's frame while MediaPipe and the callback run
            if landmarker is None:
                size, num_faces = (rgb.shape[1], rgb.shape[0]), _faces_to_look_for(rgb, model_path, face_index)
                landmarker = stack.enter_context(FaceLandmarker(model_path, video=video, fps=fps, num_faces=num_faces))
                for _ in range(raws.count):
                    landmarker.skip_frame()
            if (rgb.shape[1], rgb.shape[0]) != size:
                raise InputImageError(f"all frames must have one size: frame {index} is {rgb.shape[1]}×{rgb.shape[0]} "
                                      f"px, the first {size[0]}×{size[1]}")
            faces = landmarker.detect_all(rgb)
            del rgb
            chosen = follower.pick([f[0] for f in faces], *size) if landmarker.num_faces > 1 else (0 if faces else None)
            raws.add(None if chosen is None else faces[chosen])
            del faces
            if on_frame is not None:
                on_frame(index)
    if size is None:
        raise InputImageError(f"none of the {raws.count} frames could be read" if raws.count else
                              "no frames to extract landmarks from")
    result = raws.result(*size, landmarker.geometry)
    ms_per_frame = 1e3 * (time.perf_counter() - start) / len(result)
    logger.info("face found in %d of %d frames (%.1f ms/frame)", result.num_found, len(result), ms_per_frame)
    return result


MAX_FACES = 8  # faces MediaPipe is asked for when a frame shows several


def _faces_to_look_for(rgb: np.ndarray, model_path, face_index: int) -> int:
    """1 when the first frame shows at most one face and face 0 is wanted, else enough for every face in it."""
    with FaceLandmarker(model_path, video=False, num_faces=MAX_FACES) as probe:
        count = len(probe.detect_all(rgb))
    if count <= 1 and face_index == 0:
        return 1
    return min(MAX_FACES, max(count, face_index + 1))
