"""Landmark topology of the official landmark drawing: which edges are drawn, in which colour and order.

Plain data. Indices are MediaPipe FaceLandmarker points (0–467 mesh, 468–477 irises); "left"/"right" are the
subject's own, as in MediaPipe. Colours are RGB, the channel order the official writes and the pipeline reads.

Draw order matters where segments of different colours share pixels (a later line overwrites an earlier one).
The official builds one dict ``{edge: colour}`` and draws its keys in insertion order: the custom face oval first
(in black, hence invisible on the black canvas and omitted from ``FEATURES``), then the eye and eyebrow edge sets,
then the four inner-lip polylines. The eye and eyebrow sets are MediaPipe frozensets; the tuples below are their
CPython iteration order (mediapipe 0.10.14 ``face_mesh_connections.py``). Within one feature the order cannot change
a pixel (one colour per feature); it is kept anyway so that the drawing follows the official call for call.
"""

from __future__ import annotations

from dataclasses import dataclass

Edge = tuple[int, int]
Colour = tuple[int, int, int]


@dataclass(frozen=True)
class Feature:
    """One group of edges drawn in one colour."""

    name: str
    colour: Colour  # RGB
    edges: tuple[Edge, ...]


# MediaPipe FACEMESH_* sets, in frozenset iteration order.
LEFT_EYE: tuple[Edge, ...] = (
    (374, 380), (390, 373), (249, 390), (385, 384), (373, 374), (263, 466), (387, 386), (381, 382),
    (384, 398), (466, 388), (386, 385), (388, 387), (263, 249), (380, 381), (398, 362), (382, 362),
)  # fmt: skip
LEFT_EYEBROW: tuple[Edge, ...] = (
    (334, 296), (276, 283), (293, 334), (295, 285), (296, 336), (282, 295), (283, 282), (300, 293),
)  # fmt: skip
RIGHT_EYE: tuple[Edge, ...] = (
    (154, 155), (33, 7), (246, 161), (159, 158), (144, 145), (173, 133), (158, 157), (163, 144),
    (153, 154), (7, 163), (161, 160), (157, 173), (33, 246), (160, 159), (145, 153), (155, 133),
)  # fmt: skip
RIGHT_EYEBROW: tuple[Edge, ...] = (
    (46, 53), (66, 107), (52, 65), (53, 52), (63, 105), (70, 63), (65, 55), (105, 66),
)  # fmt: skip

# The official's own polylines (ordered lists in draw_util.py).
LIPS_INNER_BOTTOM_LEFT: tuple[Edge, ...] = ((78, 95), (95, 88), (88, 178), (178, 87), (87, 14))
LIPS_INNER_BOTTOM_RIGHT: tuple[Edge, ...] = ((14, 317), (317, 402), (402, 318), (318, 324), (324, 308))
LIPS_INNER_TOP_LEFT: tuple[Edge, ...] = ((78, 191), (191, 80), (80, 81), (81, 82), (82, 13))
LIPS_INNER_TOP_RIGHT: tuple[Edge, ...] = ((13, 312), (312, 311), (311, 310), (310, 415), (415, 308))

# Drawn first and in black by the official (no visible pixel); kept as data for reference and tests.
CUSTOM_FACE_OVAL: tuple[Edge, ...] = (
    (176, 149), (150, 136), (356, 454), (58, 132), (152, 148), (361, 288), (251, 389), (132, 93), (389, 356),
    (400, 377), (136, 172), (377, 152), (323, 361), (172, 58), (454, 323), (365, 379), (379, 378), (148, 176),
    (93, 234), (397, 365), (149, 150), (288, 397), (234, 127), (378, 400), (127, 162), (162, 21),
)  # fmt: skip

# Visible features in draw order.
FEATURES: tuple[Feature, ...] = (
    Feature("left_eye", (180, 200, 10), LEFT_EYE),
    Feature("left_eyebrow", (180, 220, 10), LEFT_EYEBROW),
    Feature("right_eye", (10, 200, 180), RIGHT_EYE),
    Feature("right_eyebrow", (10, 220, 180), RIGHT_EYEBROW),
    Feature("lips_inner_bottom_left", (100, 100, 30), LIPS_INNER_BOTTOM_LEFT),
    Feature("lips_inner_bottom_right", (100, 150, 50), LIPS_INNER_BOTTOM_RIGHT),
    Feature("lips_inner_top_left", (120, 100, 200), LIPS_INNER_TOP_LEFT),
    Feature("lips_inner_top_right", (150, 120, 100), LIPS_INNER_TOP_RIGHT),
)

# Irises: centre first, then four contour points.
RIGHT_IRIS: tuple[int, ...] = (468, 469, 470, 471, 472)
LEFT_IRIS: tuple[int, ...] = (473, 474, 475, 476, 477)
# Eye contours whose bounding boxes carry the irises through retargeting (FaceMeshAlign._scale_iris).
RIGHT_EYE_CONTOUR: tuple[int, ...] = (33, 7, 163, 144, 145, 153, 154, 155, 246, 161, 160, 159, 158, 157, 173, 133)
LEFT_EYE_CONTOUR: tuple[int, ...] = (249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398, 263)

# Pupils: 6×6 red squares at the iris centres, left (473) drawn before right (468).
PUPILS: tuple[int, ...] = (473, 468)
PUPIL_COLOUR: Colour = (255, 0, 0)
PUPIL_HALF_WIDTH = 3

NOSE_TIP = 1  # pronasale
