"""ComfyUI adapters for the Follow-Your-Emoji library. The only package that imports ComfyUI."""

from . import framing, landmarks, models, motion, sampling
from .model_paths import register_folders

register_folders()

NODE_CLASS_MAPPINGS = {**framing.NODE_CLASS_MAPPINGS, **landmarks.NODE_CLASS_MAPPINGS, **models.NODE_CLASS_MAPPINGS, **sampling.NODE_CLASS_MAPPINGS, **motion.NODE_CLASS_MAPPINGS}
NODE_DISPLAY_NAME_MAPPINGS = {
    **framing.NODE_DISPLAY_NAME_MAPPINGS,
    **landmarks.NODE_DISPLAY_NAME_MAPPINGS,
    **models.NODE_DISPLAY_NAME_MAPPINGS,
    **sampling.NODE_DISPLAY_NAME_MAPPINGS,
    **motion.NODE_DISPLAY_NAME_MAPPINGS,
}
