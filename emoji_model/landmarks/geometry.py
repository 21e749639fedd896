"""MediaPipe's face-geometry pipeline (screen landmarks → metric mesh and pose), on the public API only.

MediaPipe's C++ ``geometry_pipeline.cc`` computes the 468-vertex metric face mesh and the facial transformation
matrix; its Python Tasks API returns only the matrix. This module re-implements the computation in NumPy, vectorised
over frames, from the canonical mesh and Procrustes weights stored in the ``.task`` bundle.
"""

from __future__ import annotations

import io
import logging
import math
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ..errors import ModelFileError
from .types import NUM_MESH_POINTS

logger = logging.getLogger(__name__)

METADATA_MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"
_VERTEX_PT = 0  # Mesh3d.VertexType: x, y, z, u, v per vertex
_TRIANGLE = 0  # Mesh3d.PrimitiveType
_LANDMARK_SOURCES = (0, 1)  # InputSource DEFAULT and FACE_LANDMARK_PIPELINE (2 = face detection, 6 points)
_EPS = 1e-9  # procrustes_solver.cc kAbsoluteErrorEps
_TOO_COMPACT = 1e-3  # geometry_pipeline.cc: faces whose points all lie this close to their mean are skipped


@dataclass(frozen=True, eq=False)
class GeometryMetadata:
    """The canonical face of MediaPipe's geometry pipeline."""

    vertices: np.ndarray  # (468, 3) float64: canonical metric mesh, cm, right-handed
    uv: np.ndarray  # (468, 2) float64 texture coordinates
    triangles: np.ndarray  # (898, 3) int64 vertex indices
    weights: np.ndarray  # (468,) float64 Procrustes landmark weights, 0 outside the 33-point basis


@dataclass(frozen=True)
class PerspectiveCamera:
    """The virtual camera of MediaPipe's face-geometry environment (defaults: the Tasks FaceLandmarker's, which the
    official FaceMeshAlign projects with too)."""

    vertical_fov_degrees: float = 63.0
    near: float = 1.0
    far: float = 10000.0  # only for ``projection``: the geometry itself does not use it

    def frustum(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(left, right, bottom, top) of the near plane for a frame of this pixel size."""
        if width <= 0 or height <= 0:
            raise ValueError(f"frame size must be positive, got {width}×{height}")
        height_at_near = 2.0 * self.near * math.tan(0.5 * math.radians(self.vertical_fov_degrees))
        width_at_near = width * height_at_near / height
        return -0.5 * width_at_near, 0.5 * width_at_near, -0.5 * height_at_near, 0.5 * height_at_near

    def projection(self, aspect: float) -> np.ndarray:
        """The official FaceMeshAlign projection (4, 4), float32, for row vectors (``[x y z 1] @ P``), y flipped."""
        f = 1.0 / np.tan(np.pi / 180.0 * self.vertical_fov_degrees / 2.0)
        denom = 1.0 / (self.near - self.far)
        p = np.zeros((4, 4), dtype=np.float32)  # entries rounded to float32 as in the official
        p[0, 0] = f / aspect
        p[1, 1] = -f
        p[2, 2] = (self.near + self.far) * denom
        p[3, 2] = -1.0
        p[2, 3] = self.far * self.near * denom  # sic: the official's transposed layout: w = z·far·near/(near − far)
        return p


DEFAULT_CAMERA = PerspectiveCamera()


# --- protobuf wire format ---------------------------------------------------------------------------------------


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _fields(data: bytes) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of one message: varints as int, the rest as bytes."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            value, pos = data[pos : pos + size], pos + size
        elif wire == 2:
            size, pos = _read_varint(data, pos)
            value, pos = data[pos : pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire} in field {number}")
        if pos > len(data):
            raise ValueError(f"field {number} runs past the end of the message")
        yield number, wire, value


def _floats(wire: int, value: int | bytes) -> list[float]:
    """The floats of one occurrence of a repeated float field, packed (wire 2) or not (wire 5)."""
    if wire == 5:
        return [struct.unpack("<f", value)[0]]
    if wire == 2 and len(value) % 4 == 0:
        return np.frombuffer(value, dtype="<f4").tolist()
    raise ValueError(f"expected a float, got wire type {wire}")


def _uints(wire: int, value: int | bytes) -> list[int]:
    """The integers of one occurrence of a repeated varint field, packed (wire 2) or not (wire 0)."""
    if wire == 0:
        return [value]
    if wire == 2:
        out, pos = [], 0
        while pos < len(value):
            item, pos = _read_varint(value, pos)
            out.append(item)
        return out
    raise ValueError(f"expected a varint, got wire type {wire}")


def _parse_mesh(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Mesh3d → vertex buffer (V, 5) and index buffer (T, 3)."""
    vertex_type = primitive_type = 0
    vertex_buffer: list[float] = []
    index_buffer: list[int] = []
    for number, wire, value in _fields(data):
        if number == 1 and wire == 0:
            vertex_type = value
        elif number == 2 and wire == 0:
            primitive_type = value
        elif number == 3:
            vertex_buffer += _floats(wire, value)
        elif number == 4:
            index_buffer += _uints(wire, value)
    if vertex_type != _VERTEX_PT or primitive_type != _TRIANGLE:
        raise ValueError(f"unsupported mesh layout (vertex type {vertex_type}, primitive type {primitive_type})")
    if len(vertex_buffer) % 5 or len(index_buffer) % 3:
        raise ValueError(f"buffer sizes {len(vertex_buffer)}, {len(index_buffer)} are not multiples of 5 and 3")
    return np.array(vertex_buffer).reshape(-1, 5), np.array(index_buffer, dtype=np.int64).reshape(-1, 3)


def _parse_weight(data: bytes) -> tuple[int, float]:
    """WeightedLandmarkRef → (landmark id, weight)."""
    landmark_id, weight = 0, 0.0
    for number, wire, value in _fields(data):
        if number == 1 and wire == 0:
            landmark_id = value
        elif number == 2 and wire == 5:
            weight = struct.unpack("<f", value)[0]
    return landmark_id, weight


def _parse_metadata(data: bytes) -> GeometryMetadata:
    """GeometryPipelineMetadata → GeometryMetadata, raising ValueError for anything unexpected."""
    mesh = None
    basis: list[tuple[int, float]] = []
    input_source = 0
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            mesh = _parse_mesh(value)
        elif number == 2 and wire == 2:
            basis.append(_parse_weight(value))
        elif number == 3 and wire == 0:
            input_source = value
    if mesh is None:
        raise ValueError("no canonical mesh")
    if input_source not in _LANDMARK_SOURCES:
        raise ValueError(f"input source {input_source} is not the face landmark pipeline")
    vertices, triangles = mesh  # (V, 5), (T, 3)
    if len(vertices) != NUM_MESH_POINTS:
        raise ValueError(f"canonical mesh has {len(vertices)} vertices, expected {NUM_MESH_POINTS}")
    if triangles.size and triangles.max() >= len(vertices):
        raise ValueError("triangle index out of range")
    weights = np.zeros(len(vertices))
    for landmark_id, weight in basis:
        if landmark_id >= len(vertices) or not weight >= 0.0:
            raise ValueError(f"bad Procrustes weight {weight} for landmark {landmark_id}")
        weights[landmark_id] = weight
    if weights.sum() <= _EPS:
        raise ValueError("Procrustes weights sum to zero")
    return GeometryMetadata(vertices=vertices[:, :3], uv=vertices[:, 3:], triangles=triangles, weights=weights)


def parse_geometry_metadata(data: bytes) -> GeometryMetadata:
    """Decode the bytes of ``geometry_pipeline_metadata_landmarks.binarypb``."""
    try:
        return _parse_metadata(data)
    except ValueError as error:
        raise ModelFileError(f"invalid face-geometry metadata ({METADATA_MEMBER}): {error}") from error


def read_geometry_metadata(bundle: bytes) -> GeometryMetadata:
    """The geometry metadata inside the bytes of a face landmarker ``.task`` bundle (a zip)."""
    try:
        with zipfile.ZipFile(io.BytesIO(bundle)) as archive:
            data = archive.read(METADATA_MEMBER)
    except (zipfile.BadZipFile, KeyError) as error:
        raise ModelFileError(f"the face landmarker bundle has no readable {METADATA_MEMBER}: {error}") from error
    return parse_geometry_metadata(data)


# --- weighted orthogonal Procrustes (procrustes_solver.cc) -------------------------------------------------------


def weighted_procrustes(
    sources: np.ndarray, targets: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per frame, the scale s, rotation R and translation t minimising Σ w‖s·R·source + t − target‖².

    sources (P, 3), targets (N, P, 3), weights (P,) → scale (N,), rotation (N, 3, 3), translation (N, 3).
    A degenerate frame (zero design matrix or non-positive scale) gets NaN.
    """
    sqrt_w = np.sqrt(weights)  # (P,)
    total = weights.sum()
    weighted_sources = sources * sqrt_w[:, None]  # (P, 3)
    weighted_targets = targets * sqrt_w[:, None]  # (N, P, 3)
    centre = (weighted_sources * sqrt_w[:, None]).sum(0) / total  # (3,)
    centred = weighted_sources - centre * sqrt_w[:, None]  # (P, 3)

    design = weighted_targets.transpose(0, 2, 1) @ centred  # (N, 3, 3)
    finite = np.isfinite(design).all(axis=(1, 2))
    design = np.where(finite[:, None, None], design, 0.0)  # LAPACK's SVD fails on NaN
    u, _, vt = np.linalg.svd(design)
    reflect = np.linalg.det(u) * np.linalg.det(vt) < 0  # (N,)
    u[reflect, :, 2] *= -1.0
    rotation = u @ vt  # (N, 3, 3)

    rotated_centred = centred @ rotation.transpose(0, 2, 1)  # (N, P, 3)
    scale = (rotated_centred * weighted_targets).sum(axis=(1, 2)) / (centred * weighted_sources).sum()  # (N,)
    bad = ~finite | (np.linalg.norm(design, axis=(1, 2)) <= _EPS) | ~(scale > _EPS)
    scale = np.where(bad, np.nan, scale)

    rotated = weighted_sources @ rotation.transpose(0, 2, 1) * scale[:, None, None]  # (N, P, 3)
    translation = ((weighted_targets - rotated) * sqrt_w[:, None]).sum(1) / total  # (N, 3)
    return scale, rotation, translation


def _transform(scale: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """(N,) scale, (N, 3, 3) rotation, (N, 3) translation → (N, 4, 4) homogeneous matrices."""
    matrix = np.zeros((len(scale), 4, 4))
    matrix[:, :3, :3] = scale[:, None, None] * rotation
    matrix[:, :3, 3] = translation
    matrix[:, 3, 3] = 1.0
    return matrix


# --- screen → metric space (geometry_pipeline.cc ScreenToMetricSpaceConverter) ------------------------------------


def _project_xy(points: np.ndarray, frustum: tuple[float, float, float, float]) -> np.ndarray:
    """Normalised screen points (N, P, 3), origin top left → near-plane coordinates (y up, z scaled like x)."""
    left, right, bottom, top = frustum
    x_scale, y_scale = right - left, top - bottom
    x = points[..., 0] * x_scale + left
    y = (1.0 - points[..., 1]) * y_scale + bottom
    z = points[..., 2] * x_scale
    return np.stack([x, y, z], axis=-1)


def _unproject(projected: np.ndarray, depth_offset: np.ndarray, scale: np.ndarray, near: float) -> np.ndarray:
    """MoveAndRescaleZ, UnprojectXY and ChangeHandedness: (N, P, 3) near-plane points → metric points."""
    z = (projected[..., 2] - depth_offset[:, None] + near) / scale[:, None]  # (N, P)
    return np.stack([projected[..., 0] * z / near, projected[..., 1] * z / near, -z], axis=-1)


def _too_compact(points: np.ndarray) -> np.ndarray:
    """(N, P, 3) normalised points → (N,) True where every point is within 1e-3 of the mean in x, y."""
    xy = points[..., :2]
    spread = np.linalg.norm(xy - xy.mean(axis=1, keepdims=True), axis=-1).max(axis=1)
    return spread <= _TOO_COMPACT


def _convert(
    points: np.ndarray, frustum: tuple[float, float, float, float], meta: GeometryMetadata, near: float
) -> tuple[np.ndarray, np.ndarray]:
    """Valid normalised points (N, 468, 3) → metric mesh in canonical pose (N, 468, 3), pose (N, 4, 4)."""
    canonical, weights = meta.vertices, meta.weights
    projected = _project_xy(points, frustum)  # (N, P, 3)
    depth_offset = projected[..., 2].mean(axis=1)  # (N,)

    first = projected * np.array([1.0, 1.0, -1.0])  # XY not unprojected: z is only relative here
    first_scale, _, _ = weighted_procrustes(canonical, first, weights)
    second = _unproject(projected, depth_offset, first_scale, near)
    second_scale, _, _ = weighted_procrustes(canonical, second, weights)

    metric = _unproject(projected, depth_offset, first_scale * second_scale, near)  # (N, P, 3)
    pose = _transform(*weighted_procrustes(canonical, metric, weights))  # canonical → camera
    homogeneous = np.concatenate([metric, np.ones_like(metric[..., :1])], axis=-1)  # (N, P, 4)
    mesh = (homogeneous @ np.linalg.inv(pose).transpose(0, 2, 1))[..., :3]
    return mesh, pose


def screen_to_metric(
    points: np.ndarray,
    width: int,
    height: int,
    meta: GeometryMetadata,
    camera: PerspectiveCamera = DEFAULT_CAMERA,
) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe landmarks (N, ≥468, 3), normalised to a width × height frame → mesh (N, 468, 3), pose (N, 4, 4).

    The mesh is the metric face (cm) with the head pose removed; ``pose`` maps the canonical face into camera space.
    Only the first 468 points are used (not the irises). Frames with non-finite or degenerate points get NaN.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] < NUM_MESH_POINTS or points.shape[2] != 3:
        raise ValueError(f"points must have shape (N, >={NUM_MESH_POINTS}, 3), got {points.shape}")
    points = points[:, :NUM_MESH_POINTS]
    frustum = camera.frustum(width, height)

    mesh = np.full(points.shape, np.nan)
    pose = np.full((len(points), 4, 4), np.nan)
    valid = np.isfinite(points).all(axis=(1, 2))
    valid[valid] = ~_too_compact(points[valid])
    if valid.any():
        mesh[valid], pose[valid] = _convert(points[valid], frustum, meta, camera.near)
    undefined = int(np.isnan(pose).any(axis=(1, 2)).sum())
    if undefined:
        logger.debug("face geometry undefined for %d of %d frames", undefined, len(points))
    return mesh, pose
