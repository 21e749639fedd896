"""ComfyUI IMAGE tensors ⇄ the library's RGB uint8 frames; the library's latents → core LATENT."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..emoji_model.sampling.animate import SCALING_FACTOR


def iter_uint8_frames(images: torch.Tensor) -> Iterator[np.ndarray]:
    """Each frame of an IMAGE batch (B, H, W, C) float 0..1 as (H, W, C) uint8, converted one at a time."""
    for frame in images:
        yield frame.clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def to_image_batch(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 → IMAGE (B, H, W, 3) float32 in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255)


def to_latent(latents: torch.Tensor) -> dict:
    """The library's clean latents (F, 4, h, w), in the model's space (× 0.18215), as a core LATENT: ComfyUI keeps
    raw VAE latents in LATENT (``VAEDecode`` calls ``vae.decode`` on them unscaled; models scale in their
    ``latent_format.process_in``), so divide by the factor. One LATENT batch entry per frame."""
    return {"samples": latents.float().cpu() / SCALING_FACTOR}
