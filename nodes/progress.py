"""ComfyUI's progress bar and Cancel button, as the per-item callback the library functions take."""

from __future__ import annotations

from collections.abc import Callable

import comfy.model_management
import comfy.utils


def progress_callback() -> Callable[[int, int], None]:
    """A callback for item ``i`` of ``total`` (known only as it runs): Cancel, then the progress bar."""
    bar = comfy.utils.ProgressBar(1)

    def on_item(index: int, total: int) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        bar.update_absolute(index + 1, max(total, index + 1))

    return on_item


def frame_callback(total: int) -> Callable[[int], None]:
    """A callback for item ``i`` of a known ``total``: Cancel, then the progress bar."""
    on_item = progress_callback()
    return lambda index: on_item(index, total)


def sampling_callback() -> Callable[[dict], None]:
    """A callback for the library's ``sample``: one progress bar over every denoiser call of the run (steps ×
    windows, all stages), and Cancel checked before each window."""
    on_item = progress_callback()
    return lambda info: on_item(info["done"] - 1, info["total"])
