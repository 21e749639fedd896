"""The two arrays-only records that flow through the landmark half of the pipeline."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_POINTS = 478  # MediaPipe FaceLandmarker: 468 mesh points + 2 × 5 iris points
NUM_MESH_POINTS = 468
NUM_BLENDSHAPES = 52  # index 0 is "_neutral"


@dataclass(frozen=True, eq=False)
class FaceLandmarks:
    """MediaPipe face results for the N frames of one image (N = 1) or video.

    A frame without a face has ``found[i] == False`` and NaN in every array row,
    so that using it by mistake shows up instead of silently drawing a face at 0.
    """

    points: np.ndarray  # (N, 478, 3) float64: x / width, y / height, MediaPipe's relative z
    mesh: np.ndarray  # (N, 468, 3) float64: metric mesh (cm) in the canonical face pose
    pose: np.ndarray  # (N, 4, 4) float64: facial transformation matrix, canonical → camera space
    blendshapes: np.ndarray  # (N, 52) float64: blendshape scores, column 0 is "_neutral"
    found: np.ndarray  # (N,) bool
    width: int  # pixel size of the frames the points are normalised to
    height: int

    def __len__(self) -> int:
        return len(self.found)

    @property
    def num_found(self) -> int:
        return int(self.found.sum())

    def select(self, index) -> FaceLandmarks:
        """The frames at ``index`` (an int, slice or index array) as a new record."""
        if isinstance(index, (int, np.integer)):
            index = slice(int(index), int(index) + 1)
        return FaceLandmarks(
            points=self.points[index],
            mesh=self.mesh[index],
            pose=self.pose[index],
            blendshapes=self.blendshapes[index],
            found=self.found[index],
            width=self.width,
            height=self.height,
        )

    @staticmethod
    def empty(num_frames: int, width: int, height: int) -> FaceLandmarks:
        """N frames with no face found (NaN everywhere)."""
        nan = np.nan
        return FaceLandmarks(
            points=np.full((num_frames, NUM_POINTS, 3), nan),
            mesh=np.full((num_frames, NUM_MESH_POINTS, 3), nan),
            pose=np.full((num_frames, 4, 4), nan),
            blendshapes=np.full((num_frames, NUM_BLENDSHAPES), nan),
            found=np.zeros(num_frames, dtype=bool),
            width=width,
            height=height,
        )


@dataclass(frozen=True, eq=False)
class MotionRig:
    """What ``align`` projects a motion's points from, kept so that the motion can be edited in 3-D and projected
    again (``landmarks.edit``): points = project(face + expression, pose), irises placed in the projected eyes."""

    expression: np.ndarray  # (N, 468, 3) float64: expression change from the driving's neutral frame, canonical cm
    face: np.ndarray  # (468, 3) float64: the portrait's mesh the expression is added to
    pose: np.ndarray  # (N, 6) float64: head pose per frame, xyz Euler angles (degrees) and translation
    face_pose: np.ndarray  # (6,) float64: the portrait's own head pose
    irises: np.ndarray  # (N, 10, 2) float64: iris points as fractions of their eye-contour boxes
    neutral_irises: np.ndarray  # (10, 2) float64: the irises of the driving's neutral frame


@dataclass(frozen=True, eq=False)
class Motion:
    """Driving motion retargeted onto the reference face: the 2-D points the drawings are made from."""

    points: np.ndarray  # (N, 478, 2) float64 pixel coordinates in the reference image (x right, y down)
    width: int  # the reference image size the points live in
    height: int
    source_frames: np.ndarray  # (N,) int: the driving frame each motion frame comes from
    rig: MotionRig | None = None  # what ``points`` were projected from (None: unaligned, not editable in 3-D)

    def __len__(self) -> int:
        return len(self.points)
