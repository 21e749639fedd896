"""Face-geometry pipeline: metadata decoding, Procrustes, screen → metric vs MediaPipe and the official goldens."""

from __future__ import annotations

import struct
import zipfile

import numpy as np
import pytest

from emoji_model.errors import ModelFileError
from emoji_model.landmarks.geometry import (
    DEFAULT_CAMERA,
    METADATA_MEMBER,
    GeometryMetadata,
    parse_geometry_metadata,
    read_geometry_metadata,
    screen_to_metric,
    weighted_procrustes,
)


@pytest.fixture(scope="module")
def metadata_bytes(landmarker_model) -> bytes:
    with zipfile.ZipFile(landmarker_model) as archive:
        return archive.read(METADATA_MEMBER)


@pytest.fixture(scope="module")
def meta(landmarker_model) -> GeometryMetadata:
    return read_geometry_metadata(landmarker_model.read_bytes())


# ---- a minimal protobuf encoder, to build variants of the metadata ----------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _tag(number: int, wire: int) -> bytes:
    return _varint(number << 3 | wire)


def _delimited(number: int, payload: bytes) -> bytes:
    return _tag(number, 2) + _varint(len(payload)) + payload


def _encode(meta: GeometryMetadata, *, packed: bool) -> bytes:
    """GeometryPipelineMetadata in the field order of MediaPipe's file; repeated scalars packed or not."""
    floats = np.concatenate([meta.vertices, meta.uv], axis=1).astype("<f4").ravel()
    indices = meta.triangles.ravel().tolist()
    mesh = _tag(1, 0) + _varint(0) + _tag(2, 0) + _varint(0)
    if packed:
        mesh += _delimited(3, floats.tobytes()) + _delimited(4, b"".join(map(_varint, indices)))
    else:
        mesh += b"".join(_tag(3, 5) + struct.pack("<f", v) for v in floats)
        mesh += b"".join(_tag(4, 0) + _varint(i) for i in indices)
    basis = b"".join(
        _delimited(2, _tag(1, 0) + _varint(int(i)) + _tag(2, 5) + struct.pack("<f", meta.weights[i]))
        for i in np.flatnonzero(meta.weights)
    )
    return _delimited(1, mesh) + basis + _tag(3, 0) + _varint(1)


# ---- metadata ----------------------------------------------------------------------------------------------------


def test_metadata_has_the_canonical_face(meta):
    assert meta.vertices.shape == (468, 3) and meta.uv.shape == (468, 2) and meta.triangles.shape == (898, 3)
    assert np.count_nonzero(meta.weights) == 33 and meta.weights.shape == (468,)
    assert meta.weights.sum() == pytest.approx(1.055, abs=1e-6)
    assert np.unique(meta.triangles).size == 468  # every vertex is in some triangle
    assert ((meta.uv >= 0) & (meta.uv <= 1)).all()
    extent = meta.vertices.max(0) - meta.vertices.min(0)  # a head about 15 × 17 × 10 cm
    assert 10 < extent[0] < 20 and 10 < extent[1] < 20 and 5 < extent[2] < 15


def test_triangles_match_the_official_faces(meta, golden_landmarks):
    np.testing.assert_array_equal(meta.triangles + 1, golden_landmarks["faces_tris_plus1"])


def test_decoding_is_lossless(meta, metadata_bytes):
    # Re-encoding what was decoded gives MediaPipe's file back byte for byte (floats and ids are exact).
    assert _encode(meta, packed=False) == metadata_bytes


def test_packed_encoding_decodes_the_same(meta):
    packed = parse_geometry_metadata(_encode(meta, packed=True))
    for name in ("vertices", "uv", "triangles", "weights"):
        np.testing.assert_array_equal(getattr(packed, name), getattr(meta, name))


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no mesh
        b"\x0a\xff\xff",  # length runs past the end
        b"\x0b\x00",  # wire type 3 (groups) is not used by this message
        bytes(range(256)) * 4,
    ],
)
def test_bad_metadata_raises_model_file_error(data):
    with pytest.raises(ModelFileError, match="invalid face-geometry metadata"):
        parse_geometry_metadata(data)


def test_metadata_from_a_detection_pipeline_is_rejected(meta):
    data = _encode(meta, packed=True)[:-2] + _tag(3, 0) + _varint(2)
    with pytest.raises(ModelFileError, match="not the face landmark pipeline"):
        parse_geometry_metadata(data)


def test_bundle_without_metadata_raises():
    with pytest.raises(ModelFileError, match=METADATA_MEMBER):
        read_geometry_metadata(b"not a zip")


# ---- Procrustes --------------------------------------------------------------------------------------------------


def _random_rotations(n: int, rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(n, 3, 3)))
    q *= np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    q[np.linalg.det(q) < 0, :, 0] *= -1
    return q  # (n, 3, 3), det +1


def test_procrustes_recovers_a_similarity_exactly(meta):
    rng = np.random.default_rng(0)
    rotation = _random_rotations(5, rng)
    scale = rng.uniform(0.5, 3.0, 5)
    translation = rng.normal(scale=20.0, size=(5, 3))
    targets = scale[:, None, None] * meta.vertices @ rotation.transpose(0, 2, 1) + translation[:, None]
    targets[:, meta.weights == 0] += rng.normal(size=(5, int((meta.weights == 0).sum()), 3))  # ignored points
    got_scale, got_rotation, got_translation = weighted_procrustes(meta.vertices, targets, meta.weights)
    np.testing.assert_allclose(got_scale, scale, rtol=1e-12)
    np.testing.assert_allclose(got_rotation, rotation, atol=1e-12)
    np.testing.assert_allclose(got_translation, translation, atol=1e-10)


def test_procrustes_never_reflects(meta):
    mirrored = (meta.vertices * [-1.0, 1.0, 1.0])[None]
    _, rotation, _ = weighted_procrustes(meta.vertices, mirrored, meta.weights)
    assert np.linalg.det(rotation[0]) == pytest.approx(1.0)
    np.testing.assert_allclose(rotation[0] @ rotation[0].T, np.eye(3), atol=1e-12)


def test_procrustes_degenerate_frames_are_nan(meta):
    targets = np.stack([meta.vertices, np.zeros_like(meta.vertices), np.full_like(meta.vertices, np.nan)])
    scale, _, translation = weighted_procrustes(meta.vertices, targets, meta.weights)
    assert scale[0] == pytest.approx(1.0) and np.isnan(scale[1:]).all()
    assert np.isfinite(translation[0]).all()


# ---- screen → metric ---------------------------------------------------------------------------------------------


def test_frustum_follows_the_aspect_ratio():
    left, right, bottom, top = DEFAULT_CAMERA.frustum(1024, 512)
    assert top - bottom == pytest.approx(2 * np.tan(np.deg2rad(31.5)))
    assert (right - left) == pytest.approx(2 * (top - bottom)) and left == -right and bottom == -top
    with pytest.raises(ValueError):
        DEFAULT_CAMERA.frustum(0, 512)


def test_mesh_and_pose_match_the_official_goldens(meta, golden_landmarks):
    # Measured: mesh max |Δ| 2.4e-5 cm = 2.7e-6 of the mesh size (MediaPipe computes in float32, we in float64);
    # pose max |Δ| 1.2e-4 (translation, ~70 cm), rotation ~1e-6.
    for side in ("ref", "drv"):
        mesh, pose = screen_to_metric(golden_landmarks[f"{side}_lmks"], 512, 512, meta)
        golden_mesh, golden_pose = golden_landmarks[f"{side}_lmks3d"], golden_landmarks[f"{side}_trans_mat"]
        size = np.abs(golden_mesh).max()
        assert np.abs(mesh - golden_mesh).max() <= 2e-5 * size  # acceptance: 1e-3 relative
        np.testing.assert_allclose(pose[:, :3, :3], golden_pose[:, :3, :3], atol=2e-5)
        np.testing.assert_allclose(pose[:, :3, 3], golden_pose[:, :3, 3], rtol=2e-5, atol=1e-3)
        np.testing.assert_array_equal(pose[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (len(pose), 1)))


def test_pose_matches_mediapipe_on_non_square_frames(meta, landmarker_model, astronaut_rgb):
    # The goldens are all 512²; this checks the frustum's aspect ratio against MediaPipe's own matrix.
    from emoji_model.landmarks.extract import FaceLandmarker

    wide = np.pad(astronaut_rgb, ((0, 0), (300, 0), (0, 0)))
    frames = [astronaut_rgb[:, 64:448], astronaut_rgb[:400, ::-1], wide]
    with FaceLandmarker(landmarker_model, video=False) as landmarker:
        for frame in frames:
            face = landmarker.detect(frame)
            assert face.found[0], frame.shape
            _, pose = screen_to_metric(face.points, face.width, face.height, meta)
            np.testing.assert_allclose(pose[0, :3, :3], face.pose[0, :3, :3], atol=1e-4)
            np.testing.assert_allclose(pose[0, :3, 3], face.pose[0, :3, 3], rtol=1e-4, atol=1e-3)


def test_batched_equals_one_frame_at_a_time(meta, golden_landmarks):
    points = golden_landmarks["drv_lmks"][:6]
    mesh, pose = screen_to_metric(points, 512, 512, meta)
    for i in range(len(points)):
        one_mesh, one_pose = screen_to_metric(points[i : i + 1], 512, 512, meta)
        np.testing.assert_allclose(one_mesh[0], mesh[i], rtol=0, atol=1e-12)
        np.testing.assert_allclose(one_pose[0], pose[i], rtol=0, atol=1e-12)


def test_iris_points_are_ignored(meta, golden_landmarks):
    points = golden_landmarks["drv_lmks"][:2]
    moved = points.copy()
    moved[:, 468:] += 0.1
    mesh, _ = screen_to_metric(points, 512, 512, meta)
    np.testing.assert_array_equal(screen_to_metric(moved, 512, 512, meta)[0], mesh)
    np.testing.assert_array_equal(screen_to_metric(points[:, :468], 512, 512, meta)[0], mesh)


def test_invalid_frames_get_nan_and_leave_the_others_alone(meta, golden_landmarks):
    points = golden_landmarks["drv_lmks"][:4].copy()
    clean_mesh, _ = screen_to_metric(points, 512, 512, meta)
    points[1, 17, 0] = np.nan
    points[2] = 0.5 + 1e-4 * (points[2] - 0.5)  # a face 0.05 px wide: MediaPipe skips such "too compact" faces
    mesh, pose = screen_to_metric(points, 512, 512, meta)
    assert np.isnan(mesh[1:3]).all() and np.isnan(pose[1:3]).all()
    np.testing.assert_array_equal(mesh[[0, 3]], clean_mesh[[0, 3]])


@pytest.mark.parametrize("shape", [(468, 3), (1, 467, 3), (1, 478, 2)])
def test_wrong_point_shapes_raise(meta, shape):
    with pytest.raises(ValueError, match="points must have shape"):
        screen_to_metric(np.zeros(shape), 512, 512, meta)
