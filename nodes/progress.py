"""ComfyUI's progress bar and Cancel button, as the per-item callback the library functions take."""

from __future__ import annotations

from collections.abc import Callable

import comfy.latent_formats
import comfy.model_management
import comfy.utils
import latent_preview


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
    windows, all stages), Cancel checked before each window, and after each step a latent preview of the middle
    frame of what is being sampled (``denoised``: SD 1.x latents), as ComfyUI's own samplers send it — with the
    method the user chose (``--preview-method``; none: no preview)."""
    previewer = latent_preview.get_previewer(comfy.model_management.get_torch_device(), comfy.latent_formats.SD15())
    bar = comfy.utils.ProgressBar(1)

    def on_window(info: dict) -> None:
        comfy.model_management.throw_exception_if_processing_interrupted()
        preview = None
        if previewer is not None and "denoised" in info:
            denoised = info["denoised"]  # (1, 4, F, h, w)
            preview = previewer.decode_latent_to_preview_image("JPEG", denoised[:, :, denoised.shape[2] // 2])
        bar.update_absolute(info["done"], max(info["total"], 1), preview)

    return on_window
