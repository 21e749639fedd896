"""Motion edits: expression strength per region, head pose, gaze and blinks, each a constant or one value per frame.

An edit works on what ``align`` projected the motion from (``Motion.rig``: the portrait's mesh, the expression added
to it, the head pose, the iris positions), in 3-D and before projection, and projects the result with ``align``'s own
camera and iris placement: the drawings are made by the same renderer, in the trained style.

Each control moves only its landmarks (``REGIONS``): ``eyes`` the eye contours (and the irises, which sit in the eye
boxes), ``brows`` the eyebrows, ``mouth`` the lips, ``pupils``/``gaze_*`` the irises; the head pose moves everything.
Scales are relative to the neutral frame: 0 gives the portrait's own eyes, brows, mouth, head pose (or the neutral
frame's gaze), 1 leaves the motion as driven. A curve is one value per motion frame: a list, or a schedule of
keyframes ``{frame: value}`` (linear in between, held at the ends), also as text (``parse_curve``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Union

import numpy as np

from ..errors import EmojiError
from .align import rig_points
from .connections import LEFT_EYE_CONTOUR, LEFT_EYEBROW, LEFT_IRIS, RIGHT_EYE_CONTOUR, RIGHT_EYEBROW, RIGHT_IRIS
from .types import Motion

logger = logging.getLogger(__name__)

_LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409)
_LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415)
REGIONS: dict[str, tuple[int, ...]] = {  # mesh vertices each expression control scales
    "eyes": RIGHT_EYE_CONTOUR + LEFT_EYE_CONTOUR,
    "brows": tuple(sorted({i for edge in RIGHT_EYEBROW + LEFT_EYEBROW for i in edge})),
    "mouth": _LIPS_OUTER + _LIPS_INNER,
}
IRISES = RIGHT_IRIS + LEFT_IRIS  # points 468–477
# Upper and lower eyelid points facing each other (the eye corners 33/133 and 263/362 stay put in a blink).
_LIDS = (
    ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155)),  # subject's right eye
    ((466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382)),  # subject's left eye
)
_EYES = (RIGHT_EYE_CONTOUR, LEFT_EYE_CONTOUR)

GAZE_RANGE = 0.25  # gaze ±1 moves the irises by this fraction of their eye box
BLINK_FRAMES = 7  # an added blink: eyes closing and opening again over this many frames (≈ 0.23 s at 30 fps)
CLOSED_GAP = 0.3  # a closed eye's lid gap, a fraction of the open one (MediaPipe's closed eyes measure 0.3–0.35)
BLINK_THRESHOLD = 0.6  # remove_blinks: an eye narrower than this fraction of its median opening is blinking
BLINK_MARGIN = 2  # frames before and after a detected blink that are replaced too (closing and opening)



class EditError(EmojiError, ValueError):
    """An edit that cannot be applied: a bad value, a curve of the wrong length, a motion without a 3-D face."""


Curve = Union[float, Sequence[float], np.ndarray, Mapping, str]
CURVES = ("eyes", "brows", "mouth", "pupils", "gaze_x", "gaze_y", "head", "pitch", "yaw", "roll", "blink")


@dataclass(frozen=True)
class MotionEdit:
    """What to change; every field but the two blink options is a number or a curve (see module docstring)."""

    eyes: Curve = 1.0  # eyelid expression strength (0: the portrait's own eyes, 1: as driven)
    brows: Curve = 1.0  # eyebrow expression strength
    mouth: Curve = 1.0  # lip expression strength
    pupils: Curve = 1.0  # how far the pupils move from the neutral frame's gaze
    gaze_x: Curve | None = None  # gaze fixed to -1 (image left) … 1 (image right); None: as driven
    gaze_y: Curve | None = None  # gaze fixed to -1 (up) … 1 (down); None: as driven
    head: Curve = 1.0  # head pose change from the portrait's own pose (0: the portrait's pose held)
    pitch: Curve = 0.0  # degrees added to the head's rotation about the camera's x axis
    yaw: Curve = 0.0  # … y axis
    roll: Curve = 0.0  # … z axis (in the image plane)
    blink: Curve = 0.0  # extra eye closure, 0 (as driven) … 1 (closed)
    remove_blinks: bool = False  # the driving's blinks replaced by the open eyes around them
    add_blinks: tuple[int, ...] = ()  # motion frames at which a blink (BLINK_FRAMES long) is centred


def curve(value: Curve | None, num_frames: int, name: str = "curve") -> np.ndarray:
    """One float per frame (num_frames,) from a number, a list of num_frames numbers, a keyframe schedule, or text."""
    if isinstance(value, str):
        value = parse_curve(value, name)
    if isinstance(value, Mapping):
        value = _schedule(value, num_frames, name)
    if isinstance(value, bool):
        raise EditError(f"{name}: expected a number or one number per frame, got {value!r}")
    try:
        values = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise EditError(f"{name}: expected a number or one number per frame, got {value!r}") from None
    if values.ndim == 0:
        values = np.full(num_frames, float(values))
    if values.ndim != 1 or len(values) != num_frames:
        raise EditError(f"{name}: the curve has {values.size} values but the motion has {num_frames} frames; give "
                         "one value per frame, a single number, or a schedule of keyframes {frame: value}")
    if not np.isfinite(values).all():
        raise EditError(f"{name}: the curve has a value that is not a finite number (frame "
                         f"{int(np.flatnonzero(~np.isfinite(values))[0])})")
    return values


_SCHEDULE_ITEM = re.compile(r"^\s*(-?\d+)\s*:\s*\(?\s*([^()]+?)\s*\)?\s*$")  # "30:(0.5)" or "30: 0.5"


def parse_curve(text: str, name: str = "curve") -> float | list[float] | dict[int, float]:
    """A curve from text: JSON (a number, a list, an object of keyframes), ``"0.1, 0.2, …"`` (one value per frame),
    or a schedule ``"0:(1.0), 48:(0.2)"`` as the ComfyUI scheduling nodes write it."""
    text = text.strip()
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        parsed = None
    if isinstance(parsed, (int, float, list, dict)) and not isinstance(parsed, bool):
        return parsed
    items = [item for item in re.split(r"[,;\n]", text) if item.strip()]
    try:
        if not items or not all(":" in item for item in items):
            return [float(item) for item in items]
        matches = [_SCHEDULE_ITEM.match(item) for item in items]
        if None not in matches:
            return {int(match.group(1)): float(match.group(2)) for match in matches}
    except ValueError:
        pass
    raise EditError(f"{name}: cannot read {text[:60]!r} as a curve: write numbers separated by commas, a JSON "
                     'list, or keyframes such as "0:(1.0), 48:(0.2)" or {"0": 1.0, "48": 0.2}')


def _schedule(keyframes: Mapping, num_frames: int, name: str) -> np.ndarray:
    """Keyframes {frame: value} → (num_frames,) linear in between, held before the first and after the last."""
    try:
        frames = np.array([int(frame) for frame in keyframes], dtype=np.int64)
        values = np.array([float(v) for v in keyframes.values()], dtype=np.float64)
    except (TypeError, ValueError):
        raise EditError(f"{name}: keyframes must map frame numbers to numbers, got {dict(keyframes)!r}") from None
    if len(frames) == 0:
        raise EditError(f"{name}: the schedule has no keyframes")
    if frames.min() < 0 or frames.max() >= num_frames:
        raise EditError(f"{name}: keyframe {int(frames.max() if frames.max() >= num_frames else frames.min())} is "
                         f"outside the motion's frames 0–{num_frames - 1}")
    order = np.argsort(frames)
    return np.interp(np.arange(num_frames), frames[order], values[order])


def parse_frames(text: str | Sequence[int]) -> tuple[int, ...]:
    """Frame numbers from ``"10, 45"`` (or a JSON list, or a sequence)."""
    if isinstance(text, str):
        items = [item for item in re.split(r"[\s,;\[\]]+", text) if item]
        try:
            return tuple(int(item) for item in items)
        except ValueError:
            raise EditError(f"add_blinks: expected frame numbers such as '10, 45', got {text!r}") from None
    return tuple(int(frame) for frame in text)


def edit_from_json(text: str | Mapping, base: MotionEdit = MotionEdit()) -> MotionEdit:
    """``base`` with the fields of a JSON object (or a mapping) replaced, e.g. ``{"mouth": 0.5, "yaw": {"96": 20}}``."""
    if isinstance(text, str):
        if not text.strip():
            return base
        try:
            text = json.loads(text)
        except json.JSONDecodeError as error:
            raise EditError(f"edits: not valid JSON ({error})") from None
    if not isinstance(text, Mapping):
        raise EditError(f"edits: expected a JSON object such as {{\"mouth\": 0.5}}, got {text!r}")
    names = [field.name for field in dataclasses.fields(MotionEdit)]
    unknown = sorted(set(text) - set(names))
    if unknown:
        raise EditError(f"edits: unknown control {', '.join(map(repr, unknown))}; allowed: {', '.join(names)}")
    values = dict(text)
    if "add_blinks" in values:
        values["add_blinks"] = parse_frames(values["add_blinks"])
    if "remove_blinks" in values and not isinstance(values["remove_blinks"], bool):
        raise EditError(f"edits: remove_blinks must be true or false, got {values['remove_blinks']!r}")
    return dataclasses.replace(base, **values)


def _unchanged(values: dict[str, np.ndarray | None], edit: MotionEdit) -> bool:
    scales = all((values[name] == 1.0).all() for name in ("eyes", "brows", "mouth", "pupils", "head"))
    offsets = all((values[name] == 0.0).all() for name in ("pitch", "yaw", "roll", "blink"))
    return scales and offsets and values["gaze_x"] is None and values["gaze_y"] is None and not (
        edit.remove_blinks or edit.add_blinks)


def edit_motion(motion: Motion, edit: MotionEdit) -> Motion:
    """``motion`` with ``edit`` applied in 3-D and projected again; the motion itself when the edit changes nothing.

    EditError (a ValueError) for a curve of the wrong length, a blink outside the motion, or a motion without a rig (the
    unaligned fallback of a portrait without a face: give the portrait's points instead, ``landmarks.fit``).
    """
    n = len(motion)
    values = {name: None if getattr(edit, name) is None else curve(getattr(edit, name), n, name) for name in CURVES}
    blinks = parse_frames(edit.add_blinks)
    outside = [frame for frame in blinks if not 0 <= frame < n]
    if outside:
        raise EditError(f"add_blinks: frame {outside[0]} is outside the motion's frames 0–{n - 1}")
    if _unchanged(values, edit):
        return motion
    rig = motion.rig
    if rig is None:
        raise EditError("this motion cannot be edited: it was not retargeted onto a face (the portrait had none, so "
                         "the driving landmarks are used unaligned); give the portrait's face points instead")
    expression, irises = rig.expression.copy(), rig.irises.copy()
    if edit.remove_blinks:
        _remove_blinks(rig.face, expression, irises)
    for region in ("eyes", "brows", "mouth"):
        expression[:, REGIONS[region]] *= values[region][:, None, None]
    closure = np.clip(values["blink"] + _blink_bumps(blinks, n), 0.0, 1.0)
    if closure.any():
        expression = _close_eyes(rig.face + expression, closure) - rig.face
    irises = _gaze(irises, rig.neutral_irises, values)
    pose = _head_pose(rig.pose, rig.face_pose, values)
    edited = dataclasses.replace(rig, expression=expression, pose=pose, irises=irises)
    return dataclasses.replace(motion, points=rig_points(edited, motion.width, motion.height), rig=edited)


def _head_pose(pose: np.ndarray, face_pose: np.ndarray, values: dict) -> np.ndarray:
    """Pose parameters (N, 6) scaled about the portrait's own pose by ``head``, then turned by pitch, yaw, roll."""
    pose = pose.copy()
    scale = values["head"][:, None]
    if (scale != 1.0).any():
        turn = (pose[:, :3] - face_pose[:3] + 180.0) % 360.0 - 180.0  # the short way round
        pose[:, :3] = face_pose[:3] + scale * turn
        pose[:, 3:] = face_pose[3:] + scale * (pose[:, 3:] - face_pose[3:])
    pose[:, :3] += np.stack([values["pitch"], values["yaw"], values["roll"]], axis=1)
    return pose


def _gaze(irises: np.ndarray, neutral: np.ndarray, values: dict) -> np.ndarray:
    """Irises (N, 10, 2) scaled about the neutral gaze by ``pupils``, then fixed where ``gaze_x``/``gaze_y`` say."""
    scale = values["pupils"][:, None, None]
    out = irises.copy() if (scale == 1.0).all() else neutral + scale * (irises - neutral)
    for axis, name in enumerate(("gaze_x", "gaze_y")):
        if values[name] is not None:
            out[..., axis] = neutral[:, axis] + GAZE_RANGE * values[name][:, None]
    return out


def eye_openness(mesh: np.ndarray) -> np.ndarray:
    """(N, 468, 3) meshes → (N, 2) mean lid gap of the subject's right and left eye (mesh units)."""
    lids = np.array(_LIDS)  # (2, 7, 2)
    return np.linalg.norm(mesh[:, lids[..., 0]] - mesh[:, lids[..., 1]], axis=-1).mean(axis=-1)


def blink_frames(mesh: np.ndarray) -> np.ndarray:
    """(N, 2) bool: where each eye blinks (narrower than BLINK_THRESHOLD of its median, widened by BLINK_MARGIN)."""
    openness = eye_openness(mesh)
    closed = openness < BLINK_THRESHOLD * np.median(openness, axis=0)
    widened = closed.copy()
    for shift in range(1, BLINK_MARGIN + 1):
        widened[shift:] |= closed[:-shift]
        widened[:-shift] |= closed[shift:]
    return widened


def _remove_blinks(face: np.ndarray, expression: np.ndarray, irises: np.ndarray) -> None:
    """In place: each eye's contour expression and iris positions during its blinks interpolated from the frames
    just before and after (held at the motion's ends)."""
    blinking = blink_frames(face + expression)  # (N, 2)
    frames = np.arange(len(expression))
    for eye, contour in enumerate(_EYES):
        keep = ~blinking[:, eye]
        if keep.all() or not keep.any():
            continue
        for values, index in ((expression, list(contour)), (irises, list(range(5 * eye, 5 * eye + 5)))):
            part = values[:, index].reshape(len(frames), -1)
            filled = np.stack([np.interp(frames, frames[keep], column) for column in part[keep].T], axis=1)
            values[:, index] = filled.reshape(values[:, index].shape)
        logger.info("removed %d blinking frame(s) of eye %d", int((~keep).sum()), eye)


def _blink_bumps(centres: Sequence[int], num_frames: int) -> np.ndarray:
    """(num_frames,) eye closure: a raised cosine BLINK_FRAMES wide, peaking at 1, around each centre."""
    closure = np.zeros(num_frames)
    half = BLINK_FRAMES // 2 + 1
    frames = np.arange(num_frames)
    for centre in centres:
        distance = np.abs(frames - centre)
        closure = np.maximum(closure, np.where(distance < half, 0.5 * (1 + np.cos(np.pi * distance / half)), 0.0))
    return closure


def _close_eyes(mesh: np.ndarray, closure: np.ndarray) -> np.ndarray:
    """Meshes (N, 468, 3) with each lid pair's gap shrunk by ``closure`` (N,) towards CLOSED_GAP, the upper lid
    travelling four fifths of the way."""
    out = mesh.copy()
    lids = np.array(_LIDS).reshape(-1, 2)  # (14, 2)
    gap = mesh[:, lids[:, 0]] - mesh[:, lids[:, 1]]  # (N, 14, 3)
    shrink = (closure * (1.0 - CLOSED_GAP))[:, None, None]
    out[:, lids[:, 0]] -= 0.8 * shrink * gap
    out[:, lids[:, 1]] += 0.2 * shrink * gap
    return out
