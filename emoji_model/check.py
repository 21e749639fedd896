"""Check Motion: how closely generated frames follow the motion they were made from, measured on landmarks detected
again in them.

Per frame and overall:

* landmark error: the mean distance from the output's landmarks to the motion's over the drawn expression landmarks
  (eyes, brows, inner lips: what the model is conditioned on), in pixels and normalised by the motion's outer
  eye-corner distance (NME); the pupils on their own;
* expression distance (an AED proxy): the mean absolute difference of the 51 MediaPipe blendshape scores of the
  output and of the driving frame it follows;
* head-pose distance (an APD proxy): the mean absolute difference of the output's and the motion's head rotation
  (xyz Euler degrees, as ``align`` poses the face);
* jitter: the mean size of the landmarks' second difference over time, of the output and (for comparison) of the
  motion, normalised as the NME;
* frames where no face is found in the output: counted, listed, and left out of the means.
"""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from .errors import EmojiError
from .framing import PortraitCrop, to_portrait
from .landmarks.align import matrix_to_pose
from .landmarks.connections import FEATURES, PUPILS
from .landmarks.types import FaceLandmarks, Motion

EXPRESSION_POINTS = tuple(sorted({i for feature in FEATURES for edge in feature.edges for i in edge}))
EYE_CORNERS = (33, 263)  # outer eye corners: the distance errors are normalised by
METRICS = ("nme", "pupil_nme", "error_px", "expression", "pose", "jitter", "target_jitter")


class CheckError(EmojiError, ValueError):
    """Output frames that cannot be compared with the motion (another size, another frame count)."""


@dataclass(frozen=True, eq=False)
class MotionCheck:
    """Per-frame numbers (N,), NaN where the output has no face (or, for jitter, a neighbour has none)."""

    nme: np.ndarray  # expression landmarks' mean error / eye-corner distance
    pupil_nme: np.ndarray  # the pupils' mean error / eye-corner distance
    error_px: np.ndarray  # expression landmarks' mean error in output pixels
    expression: np.ndarray  # mean |blendshape difference| to the driving frame (NaN without the driving)
    pose: np.ndarray  # mean |head rotation difference|, degrees (NaN when the motion has no pose)
    jitter: np.ndarray  # the output's second difference / eye-corner distance
    target_jitter: np.ndarray  # the motion's own on the same frames, for comparison
    found: np.ndarray  # (N,) bool: a face was found in the output frame
    source_frames: np.ndarray  # (N,) the driving frame each output frame follows

    def __len__(self) -> int:
        return len(self.found)

    @property
    def missing(self) -> list[int]:
        return np.flatnonzero(~self.found).tolist()

    def summary(self) -> dict:
        """Means over the frames with a face, the worst frame, the faceless frames."""
        out: dict = {"frames": len(self), "faceless_frames": len(self.missing), "faceless": _ranges(self.missing)}
        for name in METRICS:
            values = getattr(self, name)
            out[name] = float(np.nanmean(values)) if np.isfinite(values).any() else None
        worst = np.where(np.isfinite(self.nme), self.nme, -np.inf)
        out["worst_frame"] = int(np.argmax(worst)) if np.isfinite(self.nme).any() else None
        return out

    def report(self) -> str:
        """The summary as a few lines an artist can read."""
        s = self.summary()

        def show(value, scale=1.0, unit=""):
            return "n/a" if value is None else f"{value * scale:.2f}{unit}"

        lines = [
            f"Check Motion: {s['frames']} frames, no face found in {s['faceless_frames']}"
            + (f" (frames {s['faceless']})" if s["faceless"] else ""),
            f"landmark error: {show(s['nme'], 100, '%')} of the eye distance ({show(s['error_px'], 1, ' px')}), "
            f"pupils {show(s['pupil_nme'], 100, '%')}"
            + ("" if s["worst_frame"] is None else f"; worst frame {s['worst_frame']}"),
            f"expression (blendshapes): {show(s['expression'])}; head pose: {show(s['pose'], 1, '°')}",
            f"jitter (mean second difference over frames): output {show(s['jitter'], 100, '%')}, motion "
            f"{show(s['target_jitter'], 100, '%')} of the eye distance",
        ]
        return "\n".join(lines)

    def to_json(self) -> str:
        """Summary and per-frame numbers (null for NaN)."""
        frames = {name: [None if not math.isfinite(v) else round(float(v), 6) for v in getattr(self, name)]
                  for name in METRICS}
        frames["found"] = self.found.tolist()
        frames["source_frames"] = self.source_frames.tolist()
        return json.dumps({"summary": self.summary(), "frames": frames}, indent=1)


def _ranges(frames: list[int]) -> str:
    """[3, 4, 5, 9] → "3–5, 9"."""
    parts, start = [], None
    for i, frame in enumerate(frames):
        if start is None:
            start = frame
        if i + 1 == len(frames) or frames[i + 1] != frame + 1:
            parts.append(str(start) if start == frame else f"{start}–{frame}")
            start = None
    return ", ".join(parts)


def target_points(motion: Motion, width: int, height: int, crop: PortraitCrop | None = None) -> np.ndarray:
    """The motion's points (N, 478, 2) in the pixels of width × height output frames: the motion's own size, or
    the portrait's size through ``crop`` (frames pasted back); either may have grown to even sides in an MP4."""
    def fits(w: int, h: int) -> bool:
        return (width, height) in ((w, h), (w + w % 2, h + h % 2))  # video.write_video pads odd sides at the end

    if fits(motion.width, motion.height):
        return motion.points
    if crop is not None and fits(*crop.portrait_size):
        return to_portrait(motion.points, crop)
    sizes = f"{motion.width}×{motion.height}" + ("" if crop is None else f" or {crop.portrait_size[0]}×"
                                                                         f"{crop.portrait_size[1]} (pasted back)")
    raise CheckError(f"the output frames are {width}×{height}, but the motion's frames are {sizes}")


def check_motion(output: FaceLandmarks, motion: Motion, *, driving: FaceLandmarks | None = None,
                 crop: PortraitCrop | None = None) -> MotionCheck:
    """Compare the landmarks detected on the output frames with the motion they follow (see module docstring).

    ``output``: one frame per motion frame; ``driving``: for the blendshape distance; ``crop``: when the output
    frames were pasted back into the portrait.
    """
    if len(output) != len(motion):
        raise CheckError(f"the output has {len(output)} frames but the motion has {len(motion)}")
    target = target_points(motion, output.width, output.height, crop)  # (N, 478, 2)
    detected = output.points[..., :2] * (output.width, output.height)  # (N, 478, 2), NaN where no face
    eye_distance = np.linalg.norm(target[:, EYE_CORNERS[0]] - target[:, EYE_CORNERS[1]], axis=-1)  # (N,)
    distance = np.linalg.norm(detected - target, axis=-1)  # (N, 478)
    expression_error = distance[:, list(EXPRESSION_POINTS)].mean(axis=1)
    pupil_error = distance[:, list(PUPILS)].mean(axis=1)

    blendshapes = np.full(len(motion), np.nan)
    if driving is not None:
        wanted = driving.blendshapes[motion.source_frames, 1:]  # "_neutral" left out, as in align
        blendshapes = np.abs(output.blendshapes[:, 1:] - wanted).mean(axis=1)
    pose = np.full(len(motion), np.nan)
    if motion.rig is not None:
        angles = np.full((len(motion), 3), np.nan)
        angles[output.found] = matrix_to_pose(output.pose[output.found])[:, :3]
        pose = np.abs((angles - motion.rig.pose[:, :3] + 180.0) % 360.0 - 180.0).mean(axis=1)

    jitter = _jitter(detected) / eye_distance
    return MotionCheck(
        nme=expression_error / eye_distance,
        pupil_nme=pupil_error / eye_distance,
        error_px=expression_error,
        expression=blendshapes,
        pose=pose,
        jitter=jitter,
        target_jitter=np.where(np.isfinite(jitter), _jitter(target) / eye_distance, np.nan),  # on the same frames
        found=output.found.copy(),
        source_frames=np.asarray(motion.source_frames).copy(),
    )


def check_frames(output_frames: Iterable, motion: Motion, landmarker_model: str | os.PathLike, *,
                 driving: FaceLandmarks | None = None, crop: PortraitCrop | None = None, tracking: bool = True,
                 on_frame: Callable[[int], None] | None = None) -> MotionCheck:
    """Landmarks detected again on generated frames (any ``images.to_rgb_uint8`` frames; at most ``len(motion)`` are
    read; MediaPipe VIDEO mode with ``tracking``), compared with the motion they were made from (``check_motion``)."""
    from .landmarks.extract import extract_landmarks

    frames = itertools.islice(output_frames, len(motion))
    output = extract_landmarks(frames, landmarker_model, video=tracking, on_frame=on_frame)
    if len(output) < len(motion):
        raise CheckError(f"the output has {len(output)} frames but the motion has {len(motion)}: check the same "
                         "driving frames the output was made from (--frames)")
    return check_motion(output, motion, driving=driving, crop=crop)


def _jitter(points: np.ndarray) -> np.ndarray:
    """(N,) mean |p[i+1] − 2 p[i] + p[i−1]| over the expression landmarks; NaN at the ends and next to NaN."""
    out = np.full(len(points), np.nan)
    if len(points) >= 3:
        second = points[2:, EXPRESSION_POINTS] - 2 * points[1:-1, EXPRESSION_POINTS] + points[:-2, EXPRESSION_POINTS]
        out[1:-1] = np.linalg.norm(second, axis=-1).mean(axis=1)
    return out


def plot_check(check: MotionCheck, *, title: str = "Check Motion", dpi: int = 100) -> np.ndarray:
    """The per-frame numbers as a (H, W, 3) uint8 RGB chart (matplotlib, Agg, no display): landmark error, expression,
    head pose, jitter, one panel each; faceless frames shaded red."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 8), dpi=dpi, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(4, 1, sharex=True)
    frames = np.arange(len(check))
    s = check.summary()
    panels = (
        ("landmark error\n(% eye distance)", (("expression landmarks", check.nme * 100, "tab:blue"),
                                              ("pupils", check.pupil_nme * 100, "tab:orange"))),
        ("expression\n(blendshapes)", (("|output − driving|", check.expression, "tab:green"),)),
        ("head pose\n(degrees)", (("|output − motion|", check.pose, "tab:purple"),)),
        ("jitter\n(% eye distance)", (("output", check.jitter * 100, "tab:red"),
                                      ("motion", check.target_jitter * 100, "tab:gray"))),
    )
    for ax, (label, lines) in zip(axes, panels):
        for name, values, colour in lines:
            ax.plot(frames, values, color=colour, linewidth=1.4, label=name, marker="." if len(frames) < 60 else None)
        for frame in check.missing:
            ax.axvspan(frame - 0.5, frame + 0.5, color="red", alpha=0.15, linewidth=0)
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        finite = np.concatenate([values[np.isfinite(values)] for _, values, _ in lines])
        top = finite.max() if len(finite) and finite.max() > 0 else 1.0
        ax.set_ylim(0, 1.35 * top)  # room for the legend and the faceless note above the lines
        ax.legend(loc="upper right", fontsize=8, ncols=len(lines))
    if check.missing:
        axes[0].text(0.01, 0.95, f"no face: {s['faceless']}", transform=axes[0].transAxes, color="red",
                     va="top", fontsize=9)
    axes[-1].set_xlabel("frame")
    mean = "n/a" if s["nme"] is None else f"{100 * s['nme']:.2f}%"
    figure.suptitle(f"{title}: landmark error {mean} of the eye distance over {s['frames'] - s['faceless_frames']} "
                    f"frames with a face, {s['faceless_frames']} without")
    figure.canvas.draw()
    return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
