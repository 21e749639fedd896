"""The library's jobs, composed from its parts: used by the ComfyUI nodes and the command line alike."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .landmarks import align, draw, extract
from .landmarks.types import FaceLandmarks, Motion
from .video import iter_video_frames, probe_video, read_image

logger = logging.getLogger(__name__)


def extract_landmarks(
    frames: Iterable[np.ndarray],
    model_path: str | os.PathLike,
    *,
    video: bool,
    fps: float = 30.0,
    on_frame: Callable[[int], None] | None = None,
) -> FaceLandmarks:
    """Face landmarks of each frame; ``video`` tracks across frames (MediaPipe VIDEO mode), else IMAGE mode."""
    return extract.extract_landmarks(frames, model_path, video=video, fps=fps, on_frame=on_frame)


def retarget(reference: FaceLandmarks, driving: FaceLandmarks, **options) -> Motion:
    """The driving motion on the reference face (options: see :func:`landmarks.align.align`)."""
    return align.align(reference.select(0), driving, **options)


def draw_motion(motion: Motion) -> np.ndarray:
    """(N, H, W, 3) uint8 expression-aware landmark drawings of a motion."""
    return draw.draw_motion(motion.points, motion.width, motion.height)


def draw_landmarks(landmarks: FaceLandmarks) -> np.ndarray:
    """(N, H, W, 3) uint8 drawings of the detected landmarks as they are; black where no face was found."""
    return draw.draw_normalised(landmarks.points[..., :2], landmarks.width, landmarks.height)


@dataclass(frozen=True)
class LandmarksResult:
    """What the headless landmarks job produced."""

    reference: FaceLandmarks
    driving: FaceLandmarks
    motion: Motion
    out_dir: Path
    fps: float


def run_landmarks(
    reference_image: str | os.PathLike,
    driving_video: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    *,
    tracking: bool = True,
    on_frame: Callable[[int], None] | None = None,
    **align_options,
) -> LandmarksResult:
    """Portrait + driving video → ``aligned_NNNN.png`` per driving frame and ``landmarks.npz`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe_video(driving_video)
    reference = extract_landmarks([read_image(reference_image)], model_path, video=False)
    driving = extract_landmarks(iter_video_frames(driving_video), model_path, video=tracking, fps=info.fps, on_frame=on_frame)
    motion = retarget(reference, driving, **align_options)
    drawings = (image for chunk in draw.iter_drawings(motion) for image in chunk)
    for index, image in zip(motion.source_frames, drawings):
        _write_png(out_dir / f"aligned_{index:04d}.png", image)
    save_landmarks(out_dir / "landmarks.npz", reference, driving, motion)
    logger.info("%d of %d driving frames had a face; wrote %d drawings to %s",
                driving.num_found, len(driving), len(motion), out_dir)
    return LandmarksResult(reference, driving, motion, out_dir, info.fps)


def save_landmarks(path: str | os.PathLike, reference: FaceLandmarks, driving: FaceLandmarks, motion: Motion) -> None:
    """Raw (reference, driving) and aligned arrays in one ``.npz``."""
    arrays = {"aligned_points": motion.points, "aligned_source_frames": motion.source_frames,
              "aligned_size": np.array([motion.width, motion.height])}
    for prefix, lm in (("reference", reference), ("driving", driving)):
        arrays.update({
            f"{prefix}_points": lm.points, f"{prefix}_mesh": lm.mesh, f"{prefix}_pose": lm.pose,
            f"{prefix}_blendshapes": lm.blendshapes, f"{prefix}_found": lm.found,
            f"{prefix}_size": np.array([lm.width, lm.height]),
        })
    np.savez_compressed(path, **arrays)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)
