"""Retargeting of driving motion onto the reference face: the official FaceMeshAlign, vectorised, plus options.

``align`` with its defaults and ``keep_first_frame=False`` reproduces the official ``FaceMeshAlign`` keypoints:

1. expression: ``mesh_i = drv_mesh_i − drv_mesh_k + ref_mesh``, k the most neutral driving frame;
2. pose: the driving rotation as xyz Euler angles (scipy, degrees), translation ``t_drv_i − t_drv_0 + t_ref``;
3. perspective projection (63° vertical fov, the official's float32 matrix) into the reference image;
4. irises placed at their relative position inside the projected eye-contour boxes.

Beyond the official: frame 0 is kept by default; ``pose_mode`` "absolute" (the driving's own rotation and
translation) and "none" (the reference's head pose for every frame, only the expression moves); ``smoothing``
(centred moving average over the pose parameters, the expression and the iris positions); ``expression_scale``;
faceless driving frames filled from their neighbours. The motion keeps what it was projected from (``MotionRig``)
for ``landmarks.edit``. A reference without a face falls back, inside ``align``, to the official behaviour
(``unaligned_motion``: the driving landmarks unaligned, scaled to the reference size), with a warning.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy.spatial.transform import Rotation

from ..errors import NoFaceError
from .connections import LEFT_EYE_CONTOUR, LEFT_IRIS, RIGHT_EYE_CONTOUR, RIGHT_IRIS
from .draw import normalised_to_pixels
from .geometry import DEFAULT_CAMERA
from .types import FaceLandmarks, Motion, MotionRig

logger = logging.getLogger(__name__)

POSE_MODES = ("relative", "absolute", "none")

_IRISES = np.array([RIGHT_IRIS, LEFT_IRIS])  # (2, 5)
_EYES = np.array([RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR])  # (2, 16)


def project(vertices: np.ndarray, poses: np.ndarray, width: int, height: int) -> np.ndarray:
    """Canonical-space vertices (N, V, 3) under poses (N, 4, 4) → pixels (N, V, 2) of a width×height image."""
    homogeneous = np.concatenate([vertices, np.ones(vertices.shape[:-1] + (1,))], axis=-1)  # (N, V, 4)
    clip = homogeneous @ poses.transpose(0, 2, 1) @ DEFAULT_CAMERA.projection(width / height)  # (N, V, 4)
    ndc = clip[..., :2] / clip[..., 3:]  # [-1, 1]
    return (ndc + 1) * 0.5 * np.array([width, height], dtype=np.float64)


def matrix_to_pose(matrices: np.ndarray) -> np.ndarray:
    """Rigid transforms (N, 4, 4) → pose parameters (N, 6): xyz Euler angles in degrees, translation."""
    euler = Rotation.from_matrix(matrices[:, :3, :3]).as_euler("xyz", degrees=True)
    return np.concatenate([euler, matrices[:, :3, 3]], axis=1)


def pose_to_matrix(params: np.ndarray) -> np.ndarray:
    """Pose parameters (N, 6) → rigid transforms (N, 4, 4)."""
    matrices = np.tile(np.eye(4), (len(params), 1, 1))
    matrices[:, :3, :3] = Rotation.from_euler("xyz", params[:, :3], degrees=True).as_matrix()
    matrices[:, :3, 3] = params[:, 3:]
    return matrices


def pose_parameters(driving_poses: np.ndarray, reference_pose: np.ndarray, mode: str) -> np.ndarray:
    """Per-frame head pose parameters (N, 6) for ``mode`` (see ``POSE_MODES``)."""
    params = matrix_to_pose(driving_poses)
    reference = matrix_to_pose(reference_pose[None])[0]
    if mode == "relative":  # official: driving rotation, driving motion added to the reference position
        params[:, 3:] = params[:, 3:] - params[0, 3:] + reference[3:]
    elif mode == "none":
        params = np.repeat(reference[None], len(params), axis=0)
    return params


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over ``window`` frames along axis 0, the window shrunk at the ends; window 1 returns ``values``."""
    if window == 1:
        return values
    n, half = len(values), window // 2
    sums = np.concatenate([np.zeros((1,) + values.shape[1:]), np.cumsum(values, axis=0)])  # (N + 1, ...)
    frames = np.arange(n)
    start, stop = np.maximum(frames - half, 0), np.minimum(frames + half + 1, n)
    counts = (stop - start).reshape((n,) + (1,) * (values.ndim - 1))
    return (sums[stop] - sums[start]) / counts


def iris_in_eye_boxes(points: np.ndarray) -> np.ndarray:
    """Iris points (N, 10, 2) as fractions of their eye-contour bounding box, from landmarks (N, 478, 2)."""
    eyes = points[:, _EYES]  # (N, 2, 16, 2)
    low, high = eyes.min(axis=2, keepdims=True), eyes.max(axis=2, keepdims=True)  # (N, 2, 1, 2)
    with np.errstate(divide="ignore", invalid="ignore"):  # a flat eye box gives non-finite points, not drawn
        fractions = (points[:, _IRISES] - low) / (high - low)  # (N, 2, 5, 2)
    return fractions.reshape(len(points), -1, 2)


def place_irises(fractions: np.ndarray, mesh: np.ndarray) -> np.ndarray:
    """Irises (N, 10, 2) at ``fractions`` (N, 10, 2) of the eye-contour boxes of the projected mesh (N, 468, 2)."""
    eyes = mesh[:, _EYES]  # (N, 2, 16, 2)
    low, high = eyes.min(axis=2, keepdims=True), eyes.max(axis=2, keepdims=True)
    return (fractions.reshape(len(mesh), 2, -1, 2) * (high - low) + low).reshape(len(mesh), -1, 2)


def neutral_frame_index(driving: FaceLandmarks) -> int:
    """The found frame with the smallest blendshape sum, ``_neutral`` (column 0) excluded as in the official."""
    scores = np.where(driving.found, driving.blendshapes[:, 1:].sum(axis=1), np.inf)
    return int(np.argmin(scores))


def fill_missing_frames(landmarks: FaceLandmarks) -> FaceLandmarks:
    """Faceless frames filled by linear interpolation between the nearest found frames, copied at the ends.

    The result has ``found`` all True. Rotations are blended entry-wise; ``matrix_to_pose`` maps the blend back
    to the nearest rotation. Raises NoFaceError when no frame has a face.
    """
    found = np.flatnonzero(landmarks.found)
    if len(found) == 0:
        raise NoFaceError(f"No face was found in any of the {len(landmarks)} driving frames.")
    missing = np.flatnonzero(~landmarks.found)
    if len(missing) == 0:
        return landmarks
    after = np.searchsorted(found, missing)  # index into found of the next found frame
    low = found[np.maximum(after - 1, 0)]
    high = found[np.minimum(after, len(found) - 1)]
    weight = np.where(high > low, (missing - low) / np.maximum(high - low, 1), 0.0)  # (M,)

    def fill(values: np.ndarray) -> np.ndarray:
        w = weight.reshape((-1,) + (1,) * (values.ndim - 1))
        out = values.copy()
        out[missing] = (1 - w) * values[low] + w * values[high]
        return out

    logger.info("filled %d faceless driving frame(s) from their neighbours", len(missing))
    return FaceLandmarks(
        points=fill(landmarks.points),
        mesh=fill(landmarks.mesh),
        pose=fill(landmarks.pose),
        blendshapes=fill(landmarks.blendshapes),
        found=np.ones(len(landmarks), dtype=bool),
        width=landmarks.width,
        height=landmarks.height,
    )


def _first_frame(keep_first_frame: bool, num_frames: int) -> int:
    """Index of the first output frame; ValueError if nothing would be left."""
    first = 0 if keep_first_frame else 1
    if num_frames <= first:
        needed = f"at least {first + 1} driving frame(s)"
        raise ValueError(f"keep_first_frame={keep_first_frame} needs {needed}, got {num_frames}")
    return first


def unaligned_motion(
    driving: FaceLandmarks, width: int, height: int, *, smoothing: int = 1, keep_first_frame: bool = True
) -> Motion:
    """The official no-reference-face fallback: driving landmarks unaligned, scaled to width×height (float32-rounded).

    Drawn with ``draw_motion`` this equals the official ``normed=True`` drawing. The official keeps frame 0 here (and
    passes the size as (height, width)); ``keep_first_frame`` and ``smoothing`` apply as in ``align``.
    """
    _check_smoothing(smoothing)
    first = _first_frame(keep_first_frame, len(driving))
    filled = fill_missing_frames(driving)
    points = moving_average(normalised_to_pixels(filled.points, width, height), smoothing)  # (N, 478, 2)
    return Motion(points=points[first:], width=width, height=height, source_frames=np.arange(first, len(driving)))


def _check_smoothing(smoothing: int) -> None:
    """ValueError unless ``smoothing`` is an odd positive int."""
    is_int = isinstance(smoothing, (int, np.integer)) and not isinstance(smoothing, bool)
    if not is_int or smoothing < 1 or smoothing % 2 == 0:
        raise ValueError(f"smoothing must be an odd window length ≥ 1 (1 = off), got {smoothing!r}")


def _check_options(driving: FaceLandmarks, neutral_frame, pose_mode: str, smoothing: int, scale: float) -> None:
    """ValueError with a clear message for any invalid ``align`` option."""
    if pose_mode not in POSE_MODES:
        raise ValueError(f"unknown pose_mode {pose_mode!r}; choose one of {', '.join(map(repr, POSE_MODES))}")
    _check_smoothing(smoothing)
    is_number = isinstance(scale, (int, float, np.integer, np.floating)) and not isinstance(scale, bool)
    if not is_number or not math.isfinite(scale):
        raise ValueError(f"expression_scale must be a finite number, got {scale!r}")
    if neutral_frame is None:
        return
    if isinstance(neutral_frame, bool) or not isinstance(neutral_frame, (int, np.integer)):
        raise ValueError(f"neutral_frame must be a frame index or None (automatic), got {neutral_frame!r}")
    if not 0 <= neutral_frame < len(driving):
        raise ValueError(f"neutral_frame {neutral_frame} is out of range: the driving has {len(driving)} frames")
    if not driving.found[neutral_frame]:
        raise ValueError(f"neutral_frame {neutral_frame} has no face; choose a frame with a face or None")


def align(
    reference: FaceLandmarks,
    driving: FaceLandmarks,
    *,
    neutral_frame: int | None = None,
    pose_mode: str = "relative",
    smoothing: int = 1,
    expression_scale: float = 1.0,
    keep_first_frame: bool = True,
) -> Motion:
    """Retarget the driving motion onto the one-frame ``reference``: pixel landmarks (N, 478, 2) in its image.

    neutral_frame: the driving frame whose expression maps onto the reference's (None: least blendshape sum).
    pose_mode: "relative" (official), "absolute" (driving rotation and translation), "none" (reference pose held).
    smoothing: odd moving-average window over pose parameters, expression and iris positions (1 = off).
    expression_scale: multiplies the expression change from the neutral frame (0 = the neutral face throughout).
    keep_first_frame: False drops frame 0 like the official.
    """
    if len(reference) != 1:
        raise ValueError(f"the reference must be a single frame, got {len(reference)}")
    _check_options(driving, neutral_frame, pose_mode, smoothing, expression_scale)
    first = _first_frame(keep_first_frame, len(driving))
    if driving.num_found == 0:
        raise NoFaceError(f"No face was found in any of the {len(driving)} driving frames.")
    if not reference.found[0]:
        logger.warning("no face in the reference image: using the driving landmarks unaligned (official fallback)")
        return unaligned_motion(
            driving, reference.width, reference.height, smoothing=smoothing, keep_first_frame=keep_first_frame
        )
    neutral = neutral_frame_index(driving) if neutral_frame is None else int(neutral_frame)
    driving = fill_missing_frames(driving)
    width, height = reference.width, reference.height

    params = pose_parameters(driving.pose, reference.pose[0], pose_mode)  # (N, 6)
    if smoothing > 1:
        params[:, :3] = np.unwrap(params[:, :3], period=360.0, axis=0)  # no ±180° jumps inside the average
        params = moving_average(params, smoothing)
    expression = moving_average(driving.mesh - driving.mesh[neutral], smoothing)  # (N, 468, 3)
    irises = moving_average(iris_in_eye_boxes(driving.points[..., :2]), smoothing)  # (N, 10, 2)
    if expression_scale != 1.0:
        expression = expression * expression_scale
        irises = irises[neutral] + expression_scale * (irises - irises[neutral])

    mesh = project(expression + reference.mesh[0], pose_to_matrix(params), width, height)  # (N, 468, 2)
    points = np.concatenate([mesh, place_irises(irises, mesh)], axis=1)  # (N, 478, 2)
    rig = MotionRig(expression=expression[first:], face=reference.mesh[0].copy(), pose=params[first:],
                    face_pose=matrix_to_pose(reference.pose[:1])[0], irises=irises[first:],
                    neutral_irises=irises[neutral].copy())
    return Motion(points=points[first:], width=width, height=height, source_frames=np.arange(first, len(driving)),
                  rig=rig)


def rig_points(rig: MotionRig, width: int, height: int) -> np.ndarray:
    """The pixel landmarks (N, 478, 2) a rig projects to: ``align``'s last step, for edited rigs."""
    mesh = project(rig.expression + rig.face, pose_to_matrix(rig.pose), width, height)  # (N, 468, 2)
    return np.concatenate([mesh, place_irises(rig.irises, mesh)], axis=1)
