"""Nodes that frame a photo for the model and put the animation back into it at the photo's own resolution."""

from __future__ import annotations

import torch

from ..emoji_model.framing import (
    FACE_ORDERS,
    FRAMINGS,
    FramingOptions,
    paste_back,
    paste_mask,
    prepare_portrait,
    preview,
)
from ..emoji_model.model_files import FACE_LANDMARKER
from .convert import to_image_batch
from .model_paths import check_landmarker, landmarker_choices, landmarker_path
from .progress import frame_callback

CATEGORY = "FollowYourEmoji/portrait"
DEFAULTS = FramingOptions()


class FYE_CropPortrait:
    """Find the portrait's faces, choose one and crop it as the model was trained (or fit / keep the whole photo);
    also detects the landmarks of the prepared portrait."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "crop"
    RETURN_TYPES = ("IMAGE", "FYE_CROP", "FYE_LANDMARKS", "IMAGE")
    RETURN_NAMES = ("portrait", "crop", "landmarks", "preview")
    OUTPUT_TOOLTIPS = (
        "The portrait as the model sees it (size × size for crop and fit).",
        "How it maps back into the photo, for Paste Back.",
        "The landmarks of its face, for Align Landmarks (reference).",
        "The photo with the crop box and the detected landmarks drawn over it.",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "The photo to animate, any size (the first image of a batch)."}),
                "model": (landmarker_choices(), {
                    "default": FACE_LANDMARKER.name,
                    "tooltip": f"MediaPipe face landmarker bundle in models/mediapipe ({FACE_LANDMARKER.name}).",
                }),
                "framing": (list(FRAMINGS), {
                    "default": DEFAULTS.framing,
                    "tooltip": "crop: a square around the face, framed like the videos the model was trained on "
                               "(then pasted back into the photo). fit: the whole photo fitted and padded black "
                               "(the official). none: the photo at its own size (trimmed to a multiple of 8).",
                }),
                "size": ("INT", {
                    "default": DEFAULTS.size, "min": 64, "max": 2048, "step": 8,
                    "tooltip": "The model's image size for crop and fit (official: 512).",
                }),
                "face_index": ("INT", {
                    "default": DEFAULTS.face_index, "min": 0, "max": 7,
                    "tooltip": "Which face to animate when the photo has several (0 = the first in face_order).",
                }),
                "face_order": (list(FACE_ORDERS), {
                    "default": DEFAULTS.face_order, "tooltip": "How faces are counted for face_index.",
                }),
                "crop_scale": ("FLOAT", {
                    "default": DEFAULTS.crop_scale, "min": 0.5, "max": 3.0, "step": 0.05,
                    "tooltip": "crop: more than 1 shows more around the face, less than 1 zooms in.",
                }),
                "crop_offset_y": ("FLOAT", {
                    "default": DEFAULTS.crop_offset_y, "min": -0.5, "max": 0.5, "step": 0.01,
                    "tooltip": "crop: moves the face down (positive) or up in the crop, a fraction of its size.",
                }),
                "download_if_missing": ("BOOLEAN", {
                    "default": False,
                    "tooltip": f"Download {FACE_LANDMARKER.name} (3.7 MB, checksum verified) into "
                               "models/mediapipe if it is not there.",
                }),
            }
        }

    @classmethod
    def VALIDATE_INPUTS(cls, model):  # one input: ComfyUI repeats the message per input named here
        return check_landmarker(model) or True

    def crop(self, image, model, framing, size, face_index, face_order, crop_scale, crop_offset_y,
             download_if_missing):
        options = FramingOptions(framing=framing, size=size, face_index=face_index, face_order=face_order,
                                 crop_scale=crop_scale, crop_offset_y=crop_offset_y)
        prepared = prepare_portrait(image[0], landmarker_path(model, download_if_missing), options)
        return (to_image_batch(prepared.image[None]), prepared.crop, prepared.landmarks,
                to_image_batch(preview(image[0], prepared)[None]))


class FYE_PasteBack:
    """Put the animated frames back into the photo at its own resolution, blended through a feathered mask."""

    DESCRIPTION = __doc__
    CATEGORY = CATEGORY
    FUNCTION = "paste"
    RETURN_TYPES = ("IMAGE", "MASK")
    RETURN_NAMES = ("images", "mask")
    OUTPUT_TOOLTIPS = (
        "The frames at the photo's size; outside the mask exactly the photo.",
        "Where the animation replaces the photo (1) and how it fades out (feather).",
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "images": ("IMAGE", {"tooltip": "The animated frames (from VAE Decode)."}),
                "portrait": ("IMAGE", {"tooltip": "The original photo, as given to Crop Portrait."}),
                "crop": ("FYE_CROP", {"tooltip": "From Crop Portrait."}),
                "feather": ("FLOAT", {
                    "default": 0.1, "min": 0.0, "max": 0.5, "step": 0.01,
                    "tooltip": "Width of the blend at the crop's edges, a fraction of its size.",
                }),
                "colour_match": ("BOOLEAN", {
                    "default": False,
                    "tooltip": "Match each frame's colours to the photo under the crop before pasting.",
                }),
            }
        }

    def paste(self, images, portrait, crop, feather, colour_match):
        progress = frame_callback(len(images))
        rgb = portrait[0]
        out = torch.empty((len(images), crop.portrait_size[1], crop.portrait_size[0], 3), dtype=torch.float32)
        frames = (frame for frame in images)  # one frame at a time: VAE Decode's floats, rounded once by the library
        for i, pasted in enumerate(paste_back(frames, rgb, crop, feather=feather, colour_match=colour_match)):
            out[i] = torch.from_numpy(pasted).float().div_(255)
            progress(i)
        mask = torch.from_numpy(paste_mask(crop, feather))[None]
        return out, mask


NODE_CLASS_MAPPINGS = {"FYE_CropPortrait": FYE_CropPortrait, "FYE_PasteBack": FYE_PasteBack}
NODE_DISPLAY_NAME_MAPPINGS = {
    "FYE_CropPortrait": "Follow-Your-Emoji Crop Portrait",
    "FYE_PasteBack": "Follow-Your-Emoji Paste Back",
}
