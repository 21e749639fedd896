"""Edit Motion: each control moves exactly its landmarks, scales 0 and 1, curves, blinks, errors, drawings, node."""

from __future__ import annotations

import dataclasses
import importlib
import importlib.abc
import importlib.util
import sys
import types
from unittest import mock

import numpy as np
import pytest

from emoji_model.landmarks.align import align, iris_in_eye_boxes, rig_points, unaligned_motion
from emoji_model.landmarks.connections import FEATURES, NOSE_TIP
from emoji_model.landmarks.draw import draw_motion
from emoji_model.landmarks.edit import (
    CLOSED_GAP,
    IRISES,
    REGIONS,
    EditError,
    MotionEdit,
    blink_frames,
    curve,
    edit_from_json,
    edit_motion,
    eye_openness,
    parse_curve,
)

TOLERANCE = 1e-6  # px: "unchanged"
EYES_AND_IRISES = set(REGIONS["eyes"]) | set(IRISES)


@pytest.fixture(scope="module")
def motion(golden_reference, golden_driving):
    return align(golden_reference, golden_driving)


@pytest.fixture(scope="module")
def temple_motion(golden_reference, temple_video, landmarker_model):
    """The whole official driving video (97 frames, a blink at frames 29–41) on the astronaut."""
    from emoji_model.pipeline import video_landmarks

    driving, _ = video_landmarks(temple_video, landmarker_model)
    return align(golden_reference, driving)


def moved(before, after) -> set[int]:
    """The landmarks that moved by more than TOLERANCE in some frame."""
    return set(np.flatnonzero(np.abs(after.points - before.points).max(axis=(0, 2)) > TOLERANCE).tolist())


def openness(motion) -> np.ndarray:
    return eye_openness(motion.rig.face + motion.rig.expression)  # (N, 2)


# ---- no edit: the motion itself ---------------------------------------------------------------------------------


def test_no_edit_returns_the_motion_itself(motion):
    assert edit_motion(motion, MotionEdit()) is motion
    ones = MotionEdit(eyes=[1.0] * 32, head="1", pitch={0: 0.0}, add_blinks=())
    assert edit_motion(motion, ones) is motion


def test_the_rig_projects_to_the_aligned_points(motion, golden_reference, golden_driving):
    assert np.abs(rig_points(motion.rig, 512, 512) - motion.points).max() < 1e-9
    dropped = align(golden_reference, golden_driving, keep_first_frame=False)
    assert len(dropped.rig.pose) == len(dropped) == 31
    assert np.abs(rig_points(dropped.rig, 512, 512) - dropped.points).max() < 1e-9


# ---- each control moves exactly its landmarks -------------------------------------------------------------------


@pytest.mark.parametrize(("edit", "expected"), [
    (MotionEdit(eyes=0.3), EYES_AND_IRISES),  # the irises sit in the eye boxes
    (MotionEdit(brows=0.0), set(REGIONS["brows"])),
    (MotionEdit(mouth=2.0), set(REGIONS["mouth"])),
    (MotionEdit(pupils=0.0), set(IRISES)),
    (MotionEdit(gaze_x=0.5), set(IRISES)),
    (MotionEdit(gaze_y=-0.5), set(IRISES)),
    (MotionEdit(blink=0.5), EYES_AND_IRISES - {33, 133, 263, 362}),  # the eye corners stay put
    (MotionEdit(add_blinks=(12,)), EYES_AND_IRISES - {33, 133, 263, 362}),
    (MotionEdit(head=0.5), set(range(478))),
    (MotionEdit(yaw=5.0), set(range(478))),
], ids=lambda value: "" if isinstance(value, set) else str({k: v for k, v in vars(value).items()
                                                           if v != getattr(MotionEdit(), k)}))
def test_each_control_moves_exactly_its_landmarks(motion, edit, expected):
    edited = edit_motion(motion, edit)
    assert moved(motion, edited) == expected
    assert np.abs(edited.points - motion.points).max() > 0.5  # visibly


def test_remove_blinks_moves_only_the_eyes_and_keeps_them_open(temple_motion):
    blinking = blink_frames(temple_motion.rig.face + temple_motion.rig.expression)  # (97, 2)
    assert np.flatnonzero(blinking.all(axis=1)).tolist() == list(range(28, 43))  # narrow at 30–40, ±2 frames
    edited = edit_motion(temple_motion, MotionEdit(remove_blinks=True))
    assert moved(temple_motion, edited) <= EYES_AND_IRISES
    before, after = openness(temple_motion), openness(edited)
    median = np.median(before, axis=0)
    assert (before[33] < 0.5 * median).all() and (after[33] > 0.9 * median).all()  # closed before, open now
    unchanged = np.abs(edited.points - temple_motion.points).max(axis=(1, 2)) < TOLERANCE  # per frame
    assert unchanged[:28].all() and unchanged[43:].all() and not unchanged[30:40].any()


def test_an_added_blink_closes_the_eyes_at_its_frame(motion):
    edited = edit_motion(motion, MotionEdit(add_blinks=(12,)))
    ratio = openness(edited) / openness(motion)
    assert np.allclose(ratio[12], CLOSED_GAP, atol=1e-9)
    assert np.allclose(ratio[[7, 8, 16, 17]], 1.0, atol=1e-12) and (ratio[9:16] < 1).all()  # 7 frames


# ---- scales: 0 neutral, 1 unchanged, linear; pose offsets ------------------------------------------------------


def test_scale_zero_is_the_neutral_face(motion, golden_reference, golden_driving):
    neutral = align(golden_reference, golden_driving, expression_scale=0.0)
    edited = edit_motion(motion, MotionEdit(eyes=0.0, brows=0.0, mouth=0.0, pupils=0.0))
    points = sorted(set(REGIONS["eyes"] + REGIONS["brows"] + REGIONS["mouth"] + IRISES))
    assert np.abs(edited.points[:, points] - neutral.points[:, points]).max() < 1e-9
    held = align(golden_reference, golden_driving, pose_mode="none")
    assert np.abs(edit_motion(motion, MotionEdit(head=0.0)).points - held.points).max() < 1e-9


def test_scales_multiply_the_change_from_neutral(motion):
    neutral = edit_motion(motion, MotionEdit(mouth=0.0)).points[:, REGIONS["mouth"]]
    one = motion.points[:, REGIONS["mouth"]] - neutral
    two = edit_motion(motion, MotionEdit(mouth=2.0)).points[:, REGIONS["mouth"]] - neutral
    big = np.abs(one) > 0.5
    assert big.sum() > 50 and np.allclose(two[big] / one[big], 2.0, rtol=0.05)  # projection: nearly linear


def test_head_offsets_turn_the_head_the_documented_way(motion):
    def nose_shift(**offset):
        return edit_motion(motion, MotionEdit(**offset)).points[:, NOSE_TIP] - motion.points[:, NOSE_TIP]

    assert (nose_shift(yaw=10.0)[:, 0] > 5).all()  # towards the image's right
    assert (nose_shift(pitch=10.0)[:, 1] > 5).all()  # down
    rolled = edit_motion(motion, MotionEdit(roll=10.0))
    top, chin = rolled.points[:, 10] - motion.points[:, 10], rolled.points[:, 152] - motion.points[:, 152]
    assert (top[:, 0] < -3).all() and (chin[:, 0] > 3).all()  # anticlockwise in the image
    assert np.allclose(rolled.rig.pose[:, 2] - motion.rig.pose[:, 2], 10.0, atol=1e-12)


def test_fixed_gaze_puts_the_irises_where_asked(motion):
    fixed = edit_motion(motion, MotionEdit(gaze_x=0.0, gaze_y=0.0))
    fractions = iris_in_eye_boxes(fixed.points)  # (N, 10, 2)
    assert np.abs(fractions - motion.rig.neutral_irises).max() < 1e-9
    right = iris_in_eye_boxes(edit_motion(motion, MotionEdit(gaze_x=1.0, gaze_y=0.0)).points)
    assert np.allclose(right[..., 0] - fractions[..., 0], 0.25, atol=1e-9)


# ---- curves ----------------------------------------------------------------------------------------------------


def test_a_curve_gives_each_frame_its_own_value(motion):
    values = np.linspace(0.0, 2.0, 32)
    edited = edit_motion(motion, MotionEdit(mouth=values))
    for frame in (0, 7, 31):
        constant = edit_motion(motion, MotionEdit(mouth=float(values[frame])))
        assert np.abs(edited.points[frame] - constant.points[frame]).max() < 1e-9
    scheduled = edit_motion(motion, MotionEdit(mouth={"0": 0.0, "31": 2.0}))
    assert np.abs(scheduled.points - edited.points).max() < 1e-9


@pytest.mark.parametrize(("text", "expected"), [
    ("0.5", [0.5] * 4), ("[1, 2, 3, 4]", [1, 2, 3, 4]), ("1, 2, 3, 4", [1, 2, 3, 4]), ("1;2;3;4", [1, 2, 3, 4]),
    ('{"0": 0, "3": 3}', [0, 1, 2, 3]), ("0:(0), 3:(3)", [0, 1, 2, 3]), ("1: 2", [2, 2, 2, 2]),
])
def test_curve_texts(text, expected):
    assert curve(text, 4, "x").tolist() == expected


@pytest.mark.parametrize(("value", "message"), [
    ([1.0] * 10, "the curve has 10 values but the motion has 32 frames"),
    ("1, 2, 3", "the curve has 3 values but the motion has 32 frames"),
    ({"0": 1.0, "40": 0.0}, "keyframe 40 is outside the motion's frames 0–31"),
    ("0:(1), fast", "cannot read"),
    ([1.0] * 31 + [float("nan")], "not a finite number .frame 31"),
    (True, "expected a number"),
])
def test_a_bad_curve_is_a_clear_error(motion, value, message):
    with pytest.raises(EditError, match=message):
        edit_motion(motion, MotionEdit(mouth=value))


def test_edits_from_json():
    edit = edit_from_json('{"mouth": [1, 0.5], "yaw": {"0": 0, "1": 20}, "remove_blinks": true, "add_blinks": "3, 9"}')
    assert edit == MotionEdit(mouth=[1, 0.5], yaw={"0": 0, "1": 20}, remove_blinks=True, add_blinks=(3, 9))
    assert edit_from_json("", MotionEdit(eyes=0.5)) == MotionEdit(eyes=0.5)
    assert parse_curve("0:(1.0), 48:(0.2)") == {0: 1.0, 48: 0.2}
    with pytest.raises(ValueError, match="unknown control 'smile'; allowed: eyes, brows"):
        edit_from_json('{"smile": 1}')
    with pytest.raises(ValueError, match="not valid JSON"):
        edit_from_json("{mouth: 1}")
    with pytest.raises(ValueError, match="remove_blinks must be true or false"):
        edit_from_json('{"remove_blinks": "yes"}')


def test_other_errors_are_clear(motion, golden_driving):
    with pytest.raises(EditError, match="add_blinks: frame 32 is outside the motion's frames 0–31"):
        edit_motion(motion, MotionEdit(add_blinks=(32,)))
    with pytest.raises(EditError, match="cannot be edited: it was not retargeted onto a face"):
        edit_motion(unaligned_motion(golden_driving, 512, 512), MotionEdit(mouth=0.5))


# ---- drawings: the same renderer --------------------------------------------------------------------------------


def test_edited_drawings_are_drawn_by_the_same_renderer(motion):
    assert np.array_equal(draw_motion(edit_motion(motion, MotionEdit()).points, 512, 512),
                          draw_motion(motion.points, 512, 512))
    edited = edit_motion(motion, MotionEdit(mouth=0.0))
    before, after = draw_motion(motion.points, 512, 512), draw_motion(edited.points, 512, 512)
    lips = [feature.colour for feature in FEATURES if feature.name.startswith("lips")]
    is_lip = lambda image: np.any([np.all(image == colour, axis=-1) for colour in lips], axis=0)  # noqa: E731
    changed = np.any(before != after, axis=-1)
    assert changed.any() and not (changed & ~is_lip(before) & ~is_lip(after)).any()  # only lip pixels changed
    colours = {tuple(c) for c in after.reshape(-1, 3)}
    assert colours <= {(0, 0, 0), (255, 0, 0)} | {feature.colour for feature in FEATURES}  # the trained palette


# ---- the node (ComfyUI stubbed: only the adapter's conversions are under test) ------------------------------------


COMFYUI_MODULES = ("comfy", "comfy_api", "comfy_execution", "comfy_extras", "folder_paths", "latent_preview",
                   "node_helpers", "server")


class _ComfyStubs(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """ComfyUI's modules (``COMFYUI_MODULES`` and their submodules) as modules whose attributes are MagicMocks."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in COMFYUI_MODULES:
            return importlib.util.spec_from_loader(name, self, is_package=True)
        return None

    def create_module(self, spec):
        return _StubModule(spec.name)

    def exec_module(self, module):
        module.__path__ = []


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return mock.MagicMock(name=f"{self.__name__}.{name}")


def load_motion_nodes(monkeypatch, landmarker=None):
    """``nodes/motion.py`` imported as part of the pack (as ``fye_pack``) with ComfyUI stubbed out: only the
    adapters' conversions are under test. ``landmarker``: the path the model widget resolves to."""
    from conftest import REPO

    for name in [name for name in sys.modules if name.split(".")[0] in (*COMFYUI_MODULES, "fye_pack")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_ComfyStubs(), *sys.meta_path])
    package = types.ModuleType("fye_pack")
    package.__path__ = [str(REPO)]
    nodes_package = types.ModuleType("fye_pack.nodes")
    nodes_package.__path__ = [str(REPO / "nodes")]
    monkeypatch.setitem(sys.modules, "fye_pack", package)
    monkeypatch.setitem(sys.modules, "fye_pack.nodes", nodes_package)
    module = importlib.import_module("fye_pack.nodes.motion")
    for name in [name for name in sys.modules if name.startswith("fye_pack.")]:  # gone again after the test
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
    if landmarker is not None:
        monkeypatch.setattr(module, "landmarker_path", lambda model, download: str(landmarker))
    return module


def test_edit_motion_node(motion, monkeypatch):
    nodes = load_motion_nodes(monkeypatch)
    node = nodes.FYE_EditMotion
    required = node.INPUT_TYPES()["required"]
    assert all(spec[1].get("tooltip") for spec in required.values())
    assert nodes.NODE_DISPLAY_NAME_MAPPINGS["FYE_EditMotion"] == "Follow-Your-Emoji Edit Motion"
    widgets = {name: spec[1]["default"] for name, spec in required.items() if name != "motion"}
    same, images = node().edit(motion, **widgets)
    assert same is motion and tuple(images.shape) == (32, 512, 512, 3)
    widgets.update(mouth=0.0, add_blinks="5", curves='{"yaw": {"0": 0, "31": 10}}')
    edited, images = node().edit(motion, **widgets)
    expected = edit_motion(motion, MotionEdit(mouth=0.0, add_blinks=(5,), yaw={"0": 0, "31": 10}))
    assert np.abs(edited.points - expected.points).max() < 1e-12
    assert np.array_equal((images.numpy() * 255).round().astype(np.uint8), draw_motion(edited.points, 512, 512))
    assert dataclasses.is_dataclass(edited.rig)
