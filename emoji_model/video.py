"""Reading images and videos into RGB uint8 frames, one frame at a time (PyAV)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageOps

from .errors import InputImageError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class VideoInfo:
    """What a video file says about itself before decoding."""

    width: int
    height: int
    fps: float
    num_frames: int | None  # None when the container does not say
    has_audio: bool


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Size, frame rate, frame count and audio presence of a video file."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        return VideoInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            fps=float(rate),
            num_frames=stream.frames or None,
            has_audio=bool(container.streams.audio),
        )


def iter_video_frames(path: str | os.PathLike, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Yield each frame of the first video stream as (H, W, 3) RGB uint8, decoding lazily."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        stream.thread_type = "AUTO"
        for count, frame in enumerate(container.decode(stream)):
            if max_frames is not None and count >= max_frames:
                return
            yield frame.to_ndarray(format="rgb24")


def read_image(path: str | os.PathLike) -> np.ndarray:
    """An image file as (H, W, 3) RGB uint8 (EXIF rotation applied, alpha dropped, gray expanded)."""
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I"):  # 16/32-bit gray: PIL's convert would clip, scale instead
                gray = np.asarray(image, dtype=np.float64)
                full_scale = 65535.0 if image.mode.startswith("I;16") or gray.max() > 255 else 255.0
                gray = np.round(gray / full_scale * 255).clip(0, 255).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=2)
            return np.asarray(image.convert("RGB"))
    except FileNotFoundError:
        raise InputImageError(f"Image file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise InputImageError(f"Cannot read image {path}: {exc}") from None


def _open(path: str | os.PathLike):
    if not Path(path).is_file():
        raise InputImageError(f"Video file not found: {path}")
    try:
        return av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise InputImageError(f"Cannot read video {path}: {exc}") from None


def _video_stream(container, path):
    if not container.streams.video:
        raise InputImageError(f"{path} has no video stream")
    return container.streams.video[0]
