"""Library frames → ComfyUI IMAGE (back: the library's ``images.to_rgb_uint8``); library latents → core LATENT."""

from __future__ import annotations

import numpy as np
import torch

from ..emoji_model.sampling.animate import SCALING_FACTOR


def to_image_batch(frames: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 → IMAGE (B, H, W, 3) float32 in 0..1."""
    return torch.from_numpy(np.ascontiguousarray(frames)).float().div_(255)


def to_latent(latents: torch.Tensor) -> dict:
    """The library's clean latents (F, 4, h, w), in the model's space (× 0.18215), as a core LATENT: ComfyUI keeps
    raw VAE latents in LATENT (``VAEDecode`` calls ``vae.decode`` on them unscaled; models scale in their
    ``latent_format.process_in``), so divide by the factor. One LATENT batch entry per frame."""
    return {"samples": latents.float().cpu() / SCALING_FACTOR}


def to_audio(audio: tuple[np.ndarray, int] | None) -> dict | None:
    """The library's (channels, samples) float32 and sample rate → core AUDIO ``{'waveform' (1, C, T), 'sample_rate'}``."""
    if audio is None:
        return None
    waveform, rate = audio
    return {"waveform": torch.from_numpy(waveform).unsqueeze(0), "sample_rate": rate}
