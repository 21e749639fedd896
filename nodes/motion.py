"""Nodes around the retargeted motion: edit it in 3-D, make a portrait's face from a few points, check an animation
against the motion it followed."""

from __future__ import annotations

from ..emoji_model import check, pipeline
from ..emoji_model.framing import FRAMINGS, FramingOptions, preview
from ..emoji_model.landmarks.edit import MotionEdit, edit_from_json, parse_frames
from ..emoji_model.landmarks.fit import FIT_POINTS
from ..emoji_model.model_files import FACE_LANDMARKER
from .convert import to_image_batch
from .model_paths import check_landmarker, landmarker_choices, landmarker_path
from .progress import frame_callback

DEFAULTS = FramingOptions()


def _model() -> tuple:
    return (landmarker_choices(), {"default": FACE_LANDMARKER.name, "tooltip": "MediaPipe face landmarker bundle in "
                                   f"models/mediapipe ({FACE_LANDMARKER.name})."})

DOWNLOAD = ("BOOLEAN", {"default": False, "tooltip": f"Download {FACE_LANDMARKER.name} (3.7 MB, checksum verified) "
                                                     "into models/mediapipe if it is not there."})


def _scale(tooltip: str) -> tuple:
    return ("FLOAT", {"default": 1.0, "min": 0.0, "max": 3.0, "step": 0.05, "tooltip": tooltip})


def _degrees(tooltip: str) -> tuple:
    return ("FLOAT", {"default": 0.0, "min": -60.0, "max": 60.0, "step": 0.5, "tooltip": tooltip})


class FYE_EditMotion:
    """Change the retargeted motion before it is drawn: expression strength per region, head pose, gaze, blinks —
    constants here, or one value per frame in curves. Works on the 3-D face, so the drawings keep the trained style."""

    DESCRIPTION = __doc__
    CATEGORY = "FollowYourEmoji/landmarks"
    FUNCTION = "edit"
    RETURN_TYPES = ("FYE_MOTION", "IMAGE")
    RETURN_NAMES = ("motion", "images")
    OUTPUT_TOOLTIPS = ("The edited motion, for the sampler.", "Its landmark drawings.")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "motion": ("FYE_MOTION", {"tooltip": "From Align Landmarks (or another Edit Motion)."}),
                "eyes": _scale("Eyelid motion: 0 keeps the portrait's own eyes, 1 as driven, 2 twice as much."),
                "brows": _scale("Eyebrow motion: 0 still, 1 as driven."),
                "mouth": _scale("Lip motion: 0 keeps the portrait's mouth, 1 as driven."),
                "pupils": _scale("Pupil motion: 0 holds the neutral frame's gaze, 1 as driven."),
                "head": _scale("Head pose change from the portrait's own: 0 holds the portrait's pose, 1 as driven."),
                "pitch": _degrees("Degrees added to the head's pitch: positive tilts the face down."),
                "yaw": _degrees("Degrees added to the head's yaw: positive turns the face to the image's right."),
                "roll": _degrees("Degrees added to the head's roll: positive tilts the face anticlockwise."),
                "fix_gaze": ("BOOLEAN", {"default": False, "tooltip": "Hold the gaze at gaze_x, gaze_y instead "
                                                                      "of following the driving pupils."}),
                "gaze_x": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                     "tooltip": "With fix_gaze: -1 looks to the image's left, 1 to its right, 0 as "
                                                "in the neutral frame."}),
                "gaze_y": ("FLOAT", {"default": 0.0, "min": -1.0, "max": 1.0, "step": 0.05,
                                     "tooltip": "With fix_gaze: -1 looks up, 1 down, 0 as in the neutral frame."}),
                "blinks": (["as driven", "remove"], {"default": "as driven",
                                                     "tooltip": "remove: the eyes stay open through the driving's "
                                                                "blinks (other eye motion is kept)."}),
                "add_blinks": ("STRING", {"default": "", "tooltip": "Frames at which to blink, e.g. '20, 75'."}),
                "curves": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": "Per-frame curves as JSON, overriding the widgets: each control "
                                                 "(eyes, brows, mouth, pupils, head, pitch, yaw, roll, gaze_x, "
                                                 "gaze_y, blink = extra eye closure 0–1) as a number, a list with "
                                                 "one value per frame, or keyframes, e.g. {\"mouth\": [1, 0.8, …], "
                                                 "\"yaw\": {\"0\": 0, \"96\": 20}, \"blink\": \"0:(0), 40:(1), "
                                                 "44:(0)\"}."}),
            }
        }

    def edit(self, motion, eyes, brows, mouth, pupils, head, pitch, yaw, roll, fix_gaze, gaze_x, gaze_y, blinks,
             add_blinks, curves):
        edit = MotionEdit(eyes=eyes, brows=brows, mouth=mouth, pupils=pupils, head=head, pitch=pitch, yaw=yaw,
                          roll=roll, gaze_x=gaze_x if fix_gaze else None, gaze_y=gaze_y if fix_gaze else None,
                          remove_blinks=blinks == "remove", add_blinks=parse_frames(add_blinks))
        edited = pipeline.edit_motion(motion, edit_from_json(curves, edit))
        return edited, to_image_batch(pipeline.draw_motion(edited))


class FYE_FaceFromPoints:
    """For a face MediaPipe cannot find (a cat, a statue, a painting): five points on the photo make its face — the
    canonical face mesh fitted to them — then the photo is framed around it like Crop Portrait does."""

    DESCRIPTION = __doc__
    CATEGORY = "FollowYourEmoji/portrait"
    FUNCTION = "fit"
    RETURN_TYPES = ("IMAGE", "FYE_CROP", "FYE_LANDMARKS", "IMAGE")
    RETURN_NAMES = ("portrait", "crop", "landmarks", "preview")
    OUTPUT_TOOLTIPS = (
        "The portrait as the model sees it.",
        "How it maps back into the photo, for Paste Back.",
        "The fitted face's landmarks, for Align Landmarks (reference).",
        "The photo with the crop box and the fitted landmarks drawn over it: check they sit on the face.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        order = "; ".join(f"{i + 1}. {name}" for i, name in enumerate(FIT_POINTS))
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo to animate (the first image of a batch)."}),
                "points": ("STRING", {"default": "", "multiline": True,
                                      "tooltip": f"Five points in the photo's pixels, in this order: {order}. As "
                                                 "'x,y; x,y; …' or the JSON of a points editor (KJNodes' Points "
                                                 "Editor: [{\"x\": 120, \"y\": 200}, …]; give the editor the "
                                                 "photo's width and height)."}),
                "model": _model(),
                "framing": (list(FRAMINGS), {"default": DEFAULTS.framing,
                                             "tooltip": "crop: a square around the fitted face, framed as the model "
                                                        "was trained. fit: the whole photo fitted and padded. none: "
                                                        "the photo at its own size."}),
                "size": ("INT", {"default": DEFAULTS.size, "min": 64, "max": 2048, "step": 8,
                                 "tooltip": "The model's image size for crop and fit (official: 512)."}),
                "crop_scale": ("FLOAT", {"default": DEFAULTS.crop_scale, "min": 0.5, "max": 3.0, "step": 0.05,
                                         "tooltip": "crop: more than 1 shows more around the face."}),
                "crop_offset_y": ("FLOAT", {"default": DEFAULTS.crop_offset_y, "min": -0.5, "max": 0.5,
                                            "step": 0.01, "tooltip": "crop: moves the face down (positive) or up."}),
                "download_if_missing": DOWNLOAD,
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        return check_landmarker(model) or True

    def fit(self, image, points, model, framing, size, crop_scale, crop_offset_y, download_if_missing):
        options = FramingOptions(framing=framing, size=size, crop_scale=crop_scale, crop_offset_y=crop_offset_y)
        prepared = pipeline.prepare_fitted_portrait(image[0], points, landmarker_path(model, download_if_missing),
                                                    options)
        return (to_image_batch(prepared.image[None]), prepared.crop, prepared.landmarks,
                to_image_batch(preview(image[0], prepared)[None]))


class FYE_CheckMotion:
    """How closely generated frames follow their motion: landmarks detected again in them and compared — landmark
    error (expression landmarks, pupils), expression (blendshapes) and head-pose distance, jitter, faceless frames."""

    DESCRIPTION = __doc__
    CATEGORY = "FollowYourEmoji/landmarks"
    FUNCTION = "check"
    RETURN_TYPES = ("IMAGE", "STRING", "FLOAT")
    RETURN_NAMES = ("plot", "report", "error")
    OUTPUT_TOOLTIPS = ("The per-frame numbers as a chart (faceless frames shaded red).",
                       "The overall numbers as text.",
                       "The mean landmark error, a fraction of the eye distance (0.05 = 5 %).")

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The generated frames (VAE Decode, or Paste Back with crop)."}),
                "motion": ("FYE_MOTION", {"tooltip": "The motion they were sampled from."}),
                "model": _model(),
                "tracking": ("BOOLEAN", {"default": True, "tooltip": "Track the face from frame to frame."}),
                "download_if_missing": DOWNLOAD,
            },
            "optional": {
                "driving": ("FYE_LANDMARKS", {"tooltip": "The driving video's landmarks: for the expression "
                                                         "(blendshape) distance."}),
                "crop": ("FYE_CROP", {"tooltip": "From Crop Portrait, when the frames were pasted back."}),
            },
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):
        return check_landmarker(model) or True

    def check(self, images, motion, model, tracking, download_if_missing, driving=None, crop=None):
        path = landmarker_path(model, download_if_missing)
        result = check.check_frames(images, motion, path, driving=driving, crop=crop, tracking=tracking,
                                       on_frame=frame_callback(min(len(images), len(motion))))
        summary = result.summary()
        error = summary["nme"] if summary["nme"] is not None else float("nan")
        return to_image_batch(check.plot_check(result)[None]), result.report(), error


NODE_CLASS_MAPPINGS = {
    "FYE_EditMotion": FYE_EditMotion,
    "FYE_FaceFromPoints": FYE_FaceFromPoints,
    "FYE_CheckMotion": FYE_CheckMotion,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FYE_EditMotion": "Follow-Your-Emoji Edit Motion",
    "FYE_FaceFromPoints": "Follow-Your-Emoji Face from Points",
    "FYE_CheckMotion": "Follow-Your-Emoji Check Motion",
}
