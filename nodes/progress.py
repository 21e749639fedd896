"""ComfyUI's progress bar and Cancel button, as the per-item callback the library functions take."""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import comfy.utils


def frame_callback(total: int) -> Callable[[int], None]:
    """A callback for item ``i`` of ``total``: raises if the user pressed Cancel, then moves the progress bar."""
    bar = comfy.utils.ProgressBar(total)

    def on_item(index: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(index + 1, total)

    return on_item


def sampling_callback() -> Callable[[dict], None]:
    """A callback for the library's ``sample``: one progress bar over every denoiser call of the run (steps ×
    windows, all stages), and Cancel checked before each window."""
    bar = comfy.utils.ProgressBar(1)

    def on_window(info: dict) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(info["done"], info["total"])

    return on_window
