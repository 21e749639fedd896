"""Nodes for the landmark half of Follow-Your-Emoji: extract face landmarks, retarget them onto a portrait."""

from __future__ import annotations

from ..emoji_model import pipeline
from ..emoji_model.landmarks.align import POSE_MODES
from ..emoji_model.model_files import FACE_LANDMARKER
from .convert import to_image_batch
from .model_paths import check_landmarker, landmarker_choices, landmarker_path
from .progress import frame_callback

CATEGORY = "FollowYourEmoji/landmarks"


class FYE_ExtractLandmarks:
    """MediaPipe face landmarks (478 points, blendshapes, head pose, metric mesh) for every frame of a batch."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = ("FYE_LANDMARKS", "IMAGE")
    RETURN_NAMES = ("landmarks", "preview")
    OUTPUT_TOOLTIPS = (
        "Per-frame face landmarks; frames without a face are marked and filled in later by the align node.",
        "The detected landmarks drawn in the Follow-Your-Emoji style (black where no face was found).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "A portrait (1 image) or the frames of a driving video."}),
                "model": (landmarker_choices(), {
                    "default": FACE_LANDMARKER.name,
                    "tooltip": f"MediaPipe face landmarker bundle in models/mediapipe ({FACE_LANDMARKER.name}).",
                }),
                "tracking": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Track the face from frame to frame (MediaPipe VIDEO mode): faster and steadier "
                               "for videos. Off: detect every frame on its own, as the official code does.",
                }),
                "download_if_missing": ("BOOLEAN", {
                    "default": False,
                    "tooltip": f"Download {FACE_LANDMARKER.name} (3.7 MB, checksum verified) into "
                               "models/mediapipe if it is not there.",
                }),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model, download_if_missing):
        return check_landmarker(model, download_if_missing) or True

    def extract(self, images, model, tracking, download_if_missing):
        path = landmarker_path(model, download_if_missing)
        landmarks = pipeline.extract_landmarks(
            images, path, video=tracking and len(images) > 1, on_frame=frame_callback(len(images))
        )
        return landmarks, to_image_batch(pipeline.draw_landmarks(landmarks))


class FYE_AlignLandmarks:
    """Retarget the driving face's expression and head motion onto the reference face, and draw it."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "align"
    RETURN_TYPES = ("FYE_MOTION", "IMAGE")
    RETURN_NAMES = ("motion", "images")
    OUTPUT_TOOLTIPS = (
        "The retargeted landmark sequence, one entry per driving frame.",
        "The expression-aware landmark drawings the denoiser is conditioned on, at the reference's size.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "reference": ("FYE_LANDMARKS", {"tooltip": "Landmarks of the portrait to animate (its first frame is used)."}),
                "driving": ("FYE_LANDMARKS", {"tooltip": "Landmarks of the driving video."}),
                "pose_mode": (list(POSE_MODES), {
                    "default": "relative",
                    "tooltip": "relative: head turns as in the video, moves relative to its first frame (official). "
                               "absolute: the video's head pose as is. none: keep the portrait's head pose, "
                               "animate the expression only.",
                }),
                "neutral_frame": ("INT", {
                    "default": -1, "min": -1, "max": 1_000_000,
                    "tooltip": "The driving frame with the neutral expression that maps onto the portrait's own "
                               "expression. -1: the frame with the smallest blendshape sum (official).",
                }),
                "expression_scale": ("FLOAT", {
                    "default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05,
                    "tooltip": "Strength of the expression change: 0 keeps the portrait's expression, 1 follows the video.",
                }),
                "smoothing": ("INT", {
                    "default": 1, "min": 1, "max": 31, "step": 2,
                    "tooltip": "Temporal smoothing window in frames (odd). 1 = off (official).",
                }),
                "keep_first_frame": ("BOOLEAN", {
                    "default": True,
                    "tooltip": "Keep driving frame 0 so the output has one frame per driving frame "
                               "(the official code drops it).",
                }),
            }
        }

    def align(self, reference, driving, pose_mode, neutral_frame, expression_scale, smoothing, keep_first_frame):
        motion = pipeline.retarget(
            reference,
            driving,
            pose_mode=pose_mode,
            neutral_frame=None if neutral_frame < 0 else neutral_frame,
            expression_scale=expression_scale,
            smoothing=smoothing,
            keep_first_frame=keep_first_frame,
        )
        return motion, to_image_batch(pipeline.draw_motion(motion))


NODE_CLASS_MAPPINGS = {
    "FYE_ExtractLandmarks": FYE_ExtractLandmarks,
    "FYE_AlignLandmarks": FYE_AlignLandmarks,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FYE_ExtractLandmarks": "Extract Face Landmarks (Follow-Your-Emoji)",
    "FYE_AlignLandmarks": "Align Landmarks to Portrait (Follow-Your-Emoji)",
}
