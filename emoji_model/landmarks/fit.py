"""A face from a few points: MediaPipe's canonical face mesh fitted to five points given on a portrait where
MediaPipe finds no face (a cat, a statue, a drawing), so that a driving motion can be retargeted onto it.

The points, in portrait pixels and in this order (``FIT_POINTS``): the eye on the image's left, the eye on the
image's right, the nose tip, the mouth corner on the image's left, the one on the image's right. Text is read as
the JSON of the ComfyUI point editors (KJNodes' Points Editor: ``[{"x": 120, "y": 200}, …]``), a JSON list of
``[x, y]`` pairs, or ``"x,y; x,y; …"``.

The model: the canonical mesh (``geometry.GeometryMetadata.vertices``, cm; its eye spacing sets the face's size)
under five shape parameters (``SHAPE``: the lower face's width, length, tilt and sideways shift, blended in between
the eye line and the mouth, and the nose tip's height), posed by a rotation and a translation and projected with
``align``'s camera (MediaPipe's 63° one): eleven unknowns from ten coordinates, solved by least squares (scipy) with
weak priors towards the canonical shape and no yaw, and a firm one towards ``FRONTAL_PITCH`` — five points cannot
tell a tilted head from a long nose, so the pitch is assumed and the nose height absorbs the rest. The result is a
one-frame ``FaceLandmarks`` whose mesh and pose ``align`` uses as it uses a detected face's.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from ..errors import InputImageError
from .align import matrix_to_pose, project
from .connections import LEFT_EYE_CONTOUR, NOSE_TIP, RIGHT_EYE_CONTOUR, RIGHT_IRIS
from .geometry import DEFAULT_CAMERA, GeometryMetadata, read_geometry_metadata
from .types import NUM_BLENDSHAPES, FaceLandmarks

logger = logging.getLogger(__name__)

FIT_POINTS = ("eye on the image's left", "eye on the image's right", "nose tip",
              "mouth corner on the image's left", "mouth corner on the image's right")
MOUTH_CORNERS = (61, 291)  # subject's right (image left in a frontal view), subject's left
SHAPE_PRIOR = 0.03  # weight of a shape parameter of 1 (e^1 ≈ 2.7× wider; 1 cm) against a miss of one eye distance
FRONTAL_PITCH = 10.0  # degrees: MediaPipe's pitch of a face looking into the camera
PITCH_PRIOR = 1.0  # weight of 1 radian of pitch away from FRONTAL_PITCH: five points cannot tell pitch from shape
YAW_PRIOR = 0.03  # weight of 1 radian of yaw
SHAPE = ("lower face width", "lower face length", "mouth tilt", "lower face shift", "nose drop")
NOSE_RADIUS = 1.2  # cm: the nose-drop shape parameter moves the mesh within about this of the nose tip
IRIS_RADIUS = 0.23  # an iris' radius, a fraction of its eye's corner-to-corner width (MediaPipe, measured)
MIN_SPREAD = 0.1  # the points' thinner extent over their longer one below which they lie on a line


@dataclass(frozen=True, eq=False)
class FaceFit:
    """The fitted face and how well it fits."""

    landmarks: FaceLandmarks  # one frame, normalised to the width × height the points were given in
    residuals: np.ndarray  # (5,) px: distance from each given point to the fitted face's
    shape: np.ndarray  # (5,) the ``SHAPE`` parameters (0: the canonical face)
    angles: np.ndarray  # (3,) head rotation, xyz Euler degrees as ``align`` reads the pose


def parse_points(points) -> np.ndarray:
    """(K, 2) float64 pixel points from the text formats of the module docstring, or from an array-like."""
    if isinstance(points, str):
        text = points.strip()
        try:
            points = json.loads(text)
        except json.JSONDecodeError:
            pairs = [pair for pair in re.split(r"[;\n]", text) if pair.strip()]
            try:
                points = [[float(v) for v in pair.replace(",", " ").split()] for pair in pairs]
            except ValueError:
                raise InputImageError(f"cannot read the face points {text[:80]!r}: write them as 'x,y; x,y; …' or "
                                      'as JSON [{"x": 120, "y": 200}, …]') from None
    if isinstance(points, dict):
        points = [points]
    try:
        rows = [(p["x"], p["y"]) if isinstance(p, dict) else tuple(p) for p in points]
        array = np.array(rows, dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        raise InputImageError(f"cannot read the face points {points!r}: each needs an x and a y") from None
    if array.ndim != 2 or array.shape[1] != 2 or not np.isfinite(array).all():
        raise InputImageError(f"the face points must be x, y pairs of finite numbers, got {points!r}")
    return array


def check_points(points: np.ndarray) -> np.ndarray:
    """``points`` (K, 2) if they can make a face: five, apart, not on one line, not mirrored; else InputImageError."""
    names = "; ".join(f"{i + 1}. {name}" for i, name in enumerate(FIT_POINTS))
    if len(points) != len(FIT_POINTS):
        raise InputImageError(f"the face needs {len(FIT_POINTS)} points, got {len(points)}: {names}")
    spread = np.linalg.svd(points - points.mean(axis=0), compute_uv=False)  # (2,)
    if spread[0] <= 1e-9 or spread[1] < MIN_SPREAD * spread[0]:
        raise InputImageError(f"the {len(points)} face points lie on one line, so they cannot place a face; "
                              f"give them in this order: {names}")
    distance = np.linalg.norm(points[:, None] - points[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    i, j = np.unravel_index(np.argmin(distance), distance.shape)
    if distance[i, j] < 1e-3 * spread[0]:
        raise InputImageError(f"face points {min(i, j) + 1} and {max(i, j) + 1} are at the same place")
    across = points[1] - points[0]  # eye to eye
    down = (points[3] + points[4]) / 2 - (points[0] + points[1]) / 2  # eyes to mouth
    if across[0] * down[1] - across[1] * down[0] <= 0:
        raise InputImageError(f"the face points are mirrored (or in another order): give them as {names}")
    return points


def load_geometry(model_path: str | os.PathLike) -> GeometryMetadata:
    """The canonical face of a face landmarker ``.task`` bundle."""
    return read_geometry_metadata(Path(model_path).read_bytes())


def shaped_mesh(vertices: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """The canonical mesh (V, 3) under the shape parameters (``SHAPE``, 5,): the lower face (blended in from the eye
    line to the mouth) scaled across (log), stretched down (log), sheared (the mouth line's slope) and shifted
    across (cm); the nose tip's surroundings moved down (cm)."""
    width, length, tilt, shift, nose = shape
    eye_y, mouth_y = _landmark_heights(vertices)
    x, y = vertices[:, 0], vertices[:, 1]
    below = np.clip((eye_y - y) / (eye_y - mouth_y), 0.0, 1.0)  # 0 at the eyes, 1 at the mouth and under it
    out = vertices.copy()
    out[:, 0] = x * np.exp(width * below) + shift * below
    out[:, 1] = np.where(y < eye_y, eye_y + (y - eye_y) * np.exp(length), y) + tilt * x * below
    out[:, 1] -= nose * np.exp(-((vertices[:, :2] - vertices[NOSE_TIP, :2]) ** 2).sum(axis=1) / (2 * NOSE_RADIUS**2))
    return out


def _landmark_heights(vertices: np.ndarray) -> tuple[float, float]:
    eyes = vertices[list(RIGHT_EYE_CONTOUR + LEFT_EYE_CONTOUR), 1].mean()
    return float(eyes), float(vertices[list(MOUTH_CORNERS), 1].mean())


def keypoints(mesh: np.ndarray) -> np.ndarray:
    """The five ``FIT_POINTS`` (5, 3) of a mesh (468, 3): the eyes' centres (between their corners across, their
    lids' middles up and down: where a straight-looking pupil is), the nose tip, the mouth corners."""
    eyes = [(mesh[corners].mean(axis=0) * (1, 0, 0) + mesh[lids].mean(axis=0) * (0, 1, 1)) for corners, lids in
            (([33, 133], [159, 145]), ([263, 362], [386, 374]))]
    return np.stack(eyes + [mesh[NOSE_TIP], mesh[MOUTH_CORNERS[0]], mesh[MOUTH_CORNERS[1]]])


def _pose(params: np.ndarray) -> np.ndarray:
    """(xyz Euler angles in radians, translation) (6,) → (1, 4, 4) canonical → camera transform."""
    matrix = np.eye(4)
    matrix[:3, :3] = Rotation.from_euler("xyz", params[:3]).as_matrix()
    matrix[:3, 3] = params[3:6]
    return matrix[None]


def _initial(points: np.ndarray, model: np.ndarray, width: int, height: int, yaw: float) -> np.ndarray:
    """A start facing the camera (turned by ``yaw`` rad) whose eye distance and centre match the points."""
    focal = 0.5 * height / math.tan(math.radians(DEFAULT_CAMERA.vertical_fov_degrees) / 2)  # px
    across = points[1] - points[0]
    depth = focal * np.linalg.norm(model[1] - model[0]) / max(np.linalg.norm(across), 1e-9)
    cx, cy = points.mean(axis=0)
    angles = np.array([math.radians(FRONTAL_PITCH), yaw, -math.atan2(across[1], across[0])])  # image y runs down
    rotation = Rotation.from_euler("xyz", angles)
    translation = np.array([(cx - width / 2) / focal * depth, -(cy - height / 2) / focal * depth, -depth])
    return np.concatenate([angles, translation - rotation.apply(model.mean(axis=0)), np.zeros(len(SHAPE))])


def fit_face(points, width: int, height: int, geometry: GeometryMetadata) -> FaceFit:
    """The canonical face fitted to five points (``FIT_POINTS``, pixels of a width × height image)."""
    points = check_points(parse_points(points))
    scale = float(np.linalg.norm(points[1] - points[0]))  # residuals in eye distances: any image size fits alike
    vertices = geometry.vertices
    pitch = math.radians(FRONTAL_PITCH)

    def residuals(x: np.ndarray) -> np.ndarray:
        model = keypoints(shaped_mesh(vertices, x[6:]))
        projected = project(model[None], _pose(x), width, height)[0]  # (5, 2)
        misses = ((projected - points) / scale).ravel()
        priors = [PITCH_PRIOR * (x[0] - pitch), YAW_PRIOR * x[1]]
        return np.concatenate([misses, SHAPE_PRIOR * x[6:], priors])

    model = keypoints(vertices)
    best = None
    for yaw in (0.0, -0.4, 0.4):  # a strongly turned head can sit nearer another minimum
        solution = least_squares(residuals, _initial(points, model, width, height, yaw), method="lm", x_scale="jac")
        if best is None or solution.cost < best.cost:
            best = solution
    x = best.x
    mesh = shaped_mesh(vertices, x[6:])
    pose = _pose(x)
    projected = project(keypoints(mesh)[None], pose, width, height)[0]
    miss = np.linalg.norm(projected - points, axis=1)
    if miss.max() > 0.2 * scale:
        logger.warning("the fitted face misses a given point by %.0f px (%.0f%% of the eye distance): check the "
                       "points' order (%s)", miss.max(), 100 * miss.max() / scale, "; ".join(FIT_POINTS))
    logger.info("face fitted to %d points: mean miss %.2f px, shape %s", len(points), miss.mean(), np.round(x[6:], 3))
    landmarks = fitted_landmarks(mesh, pose, width, height)
    return FaceFit(landmarks, miss, x[6:].copy(), matrix_to_pose(pose)[0, :3])


def fitted_landmarks(mesh: np.ndarray, pose: np.ndarray, width: int, height: int) -> FaceLandmarks:
    """A one-frame ``FaceLandmarks`` of a mesh (468, 3) under a pose (1, 4, 4): its projection normalised as
    MediaPipe's points (z relative to the face's mean depth, in units of the image width), irises in the eyes."""
    pixels = project(mesh[None], pose, width, height)[0]  # (468, 2)
    camera = mesh @ pose[0, :3, :3].T + pose[0, :3, 3]  # (468, 3), the face in front of the camera: z < 0
    focal = 0.5 * height / math.tan(math.radians(DEFAULT_CAMERA.vertical_fov_degrees) / 2)
    depth = -camera[:, 2].mean()
    z = -(camera[:, 2] - camera[:, 2].mean()) * focal / depth / width
    centres = project(keypoints(mesh)[None, :2], pose, width, height)[0]  # the eyes' centres (2, 2)
    irises = []
    for contour, centre in zip((RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR), centres):  # RIGHT_IRIS, then LEFT_IRIS:
        eye = pixels[list(contour)]  # centre, +x, −y, −x, +y
        radius = IRIS_RADIUS * (eye[:, 0].max() - eye[:, 0].min())
        irises += [centre + offset for offset in ((0, 0), (radius, 0), (0, -radius), (-radius, 0), (0, radius))]
    xy = np.concatenate([pixels, np.array(irises)]) / (width, height)  # (478, 2)
    eye_depths = [z[list(contour)].mean() for contour in (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR)]
    depths = np.concatenate([z, np.repeat(eye_depths, len(RIGHT_IRIS))])  # (478,)
    blendshapes = np.zeros((1, NUM_BLENDSHAPES))
    blendshapes[0, 0] = 1.0  # "_neutral"
    return FaceLandmarks(points=np.concatenate([xy, depths[:, None]], axis=1)[None],
                         mesh=mesh[None].copy(), pose=pose.copy(), blendshapes=blendshapes,
                         found=np.ones(1, dtype=bool), width=width, height=height)
