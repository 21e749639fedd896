"""Follow-Your-Emoji for ComfyUI: freestyle portrait animation driven by expression-aware face landmarks."""

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
