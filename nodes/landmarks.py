"""Nodes for the landmark half of Follow-Your-Emoji: extract face landmarks, retarget them onto a portrait."""

from __future__ import annotations

from ..emoji_model import pipeline
from ..emoji_model.errors import InputImageError
from ..emoji_model.landmarks.align import POSE_MODES
from ..emoji_model.landmarks.faces import FACE_ORDERS
from ..emoji_model.model_files import FACE_LANDMARKER
from ..emoji_model.video import read_audio
from .convert import to_audio, to_image_batch
from .model_paths import check_landmarker, landmarker_choices, landmarker_path
from .progress import frame_callback, progress_callback

CATEGORY = "FollowYourEmoji/landmarks"
PREVIEW_FRAMES, PREVIEW_SIDE = 16, 512  # a video's preview: this many frames, at most this big


class FYE_ExtractLandmarks:
    """MediaPipe face landmarks (478 points, blendshapes, head pose, metric mesh) for every frame of a driving video
    (read one frame at a time from a VIDEO) or of an IMAGE batch."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "extract"
    RETURN_TYPES = ("FYE_LANDMARKS", "IMAGE", "FLOAT", "AUDIO")
    RETURN_NAMES = ("landmarks", "preview", "fps", "audio")
    OUTPUT_TOOLTIPS = (
        "Per-frame face landmarks; frames without a face are marked and filled in later by the align node.",
        f"The detected landmarks drawn (black where no face was found); for a video, {PREVIEW_FRAMES} frames "
        "spread over it.",
        "The video's frame rate (30 for an IMAGE batch), for Create Video.",
        "The video's sound (none for an IMAGE batch), for Create Video.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
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
            },
            "optional": {
                "face_index": ("INT", {
                    "default": 0, "min": 0, "max": 7,
                    "tooltip": "With several faces in the video: which one to follow (0 = the first in face_order, "
                               "on the first frame that shows it; then followed by its position).",
                }),
                "face_order": (list(FACE_ORDERS), {
                    "default": "largest", "tooltip": "How faces are counted for face_index.",
                }),
                "video": ("VIDEO", {"tooltip": "A driving video from Load Video: its frames are read one at a "
                                               "time, so any length fits in memory."}),
                "images": ("IMAGE", {"tooltip": "Or the frames of a driving video as an IMAGE batch."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):  # one input: ComfyUI repeats the message per input named here
        return check_landmarker(model) or True

    def extract(self, model, tracking, download_if_missing, face_index=0, face_order="largest", video=None,
                images=None):
        if (video is None) == (images is None):
            raise InputImageError("Connect either a video (Load Video) or images to Face Landmarks.")
        path, faces = landmarker_path(model, download_if_missing), {"face_index": face_index, "face_order": face_order}
        if video is not None:
            source = video.get_stream_source()
            landmarks, info = pipeline.video_landmarks(source, path, tracking=tracking, on_frame=progress_callback(),
                                                       **faces)
            fps, audio = info.fps, to_audio(read_audio(source))
        else:
            landmarks = pipeline.extract_landmarks(images, path, video=tracking and len(images) > 1,
                                                   on_frame=frame_callback(len(images)), **faces)
            fps, audio = 30.0, None
        preview = pipeline.draw_landmarks(landmarks, max_frames=PREVIEW_FRAMES, max_side=PREVIEW_SIDE)
        return landmarks, to_image_batch(preview), fps, audio


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
    "FYE_ExtractLandmarks": "Follow-Your-Emoji Face Landmarks",
    "FYE_AlignLandmarks": "Follow-Your-Emoji Align Landmarks",
}
