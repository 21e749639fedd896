"""Errors a user can act on. Their messages are shown as they are, in ComfyUI and on the command line."""


class EmojiError(Exception):
    """Base class: something about the inputs, files or options that the user can fix."""


class ModelFileError(EmojiError):
    """A model file is missing, truncated, corrupt, or not the file that slot expects."""


class InputImageError(EmojiError):
    """An image or video frame that cannot be used (too small, wrong layout, unreadable)."""


class NoFaceError(EmojiError):
    """No face was found where one is required."""

    def __init__(self, message: str, frame_index: int | None = None):
        super().__init__(message)
        self.frame_index = frame_index


class SamplingError(EmojiError):
    """Sampling or decoding produced NaN or infinity (typically fp16 overflow), or cannot run as asked."""
