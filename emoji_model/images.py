"""The one image normaliser: every image the package takes in becomes (H, W, 3) RGB uint8 here."""

from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import InputImageError


def to_rgb_levels(image) -> np.ndarray:
    """``to_rgb_uint8``'s image as (H, W, 3) float32 levels 0–255, floats not rounded: for work that resamples and
    rounds once at its end (paste-back), so a float frame is not rounded twice."""
    return to_rgb_uint8(image, rounded=False)


def to_rgb_uint8(image, *, rounded: bool = True) -> np.ndarray:
    """One image as a C-contiguous (H, W, 3) RGB uint8 array; an array that already is one is returned as is.

    ``image``: a PIL image, a NumPy array or a torch tensor (any device), (H, W) or (H, W, C) with C = 1 (grey),
    2 (grey + alpha), 3 (RGB) or 4 (RGBA): alpha is dropped, grey repeated. Pixels: uint8 as they are; uint16
    (also PIL's ``I;16``, and ``I`` unless it stays within 0–255) scaled to 0–255, rounded; floats in [0, 1] (ComfyUI
    IMAGE) clipped and rounded in float64, not truncated: rounding recovers k from any float within half a level of
    k / 255, where truncation loses a level after any arithmetic. Anything else raises InputImageError.
    """
    if isinstance(image, Image.Image):
        image = _pil_pixels(image)
    elif hasattr(image, "detach"):  # a torch tensor, without importing torch
        image = image.detach().cpu().numpy()
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 2, 3, 4):
        raise InputImageError(f"expected one image of shape (H, W) or (H, W, 1|2|3|4), got {image.shape}")
    if image.shape[2] in (2, 4):
        image = image[:, :, :-1]  # drop alpha
    image = _levels(image) if rounded else _levels(image, np.float32)
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image)


def _pil_pixels(image: Image.Image) -> np.ndarray:
    """A PIL image's pixels: 32-bit ``I`` grey up to 255 as uint8, other ``I`` modes as uint16, the rest as RGB.

    PIL's own ``convert("RGB")`` would clip 16-bit grey at 255 instead of scaling it.
    """
    if not image.mode.startswith("I"):
        return np.asarray(image.convert("RGB"))
    grey = np.asarray(image)
    if image.mode == "I" and grey.size and grey.max() <= 255:
        return grey.clip(0, 255).astype(np.uint8)
    return grey.clip(0, 65535).astype(np.uint16)


def _levels(image: np.ndarray, dtype=np.uint8) -> np.ndarray:
    """uint8, uint16 or float-in-[0, 1] pixels → uint8 levels, rounded; or float32 levels 0–255, floats unrounded."""
    if image.dtype == np.uint8:
        return image if dtype == np.uint8 else image.astype(dtype)
    if image.dtype == np.uint16:
        return ((image.astype(np.uint32) * 255 + 32767) // 65535).astype(dtype)
    if not np.issubdtype(image.dtype, np.floating):
        raise InputImageError(f"unsupported image dtype {image.dtype}: use uint8, uint16 or float in [0, 1]")
    if not np.isfinite(image).all():
        raise InputImageError("the image contains NaN or infinite values")
    if image.size and image.max() > 1.5:  # far outside [0, 1]: a 0–255 image passed as float
        raise InputImageError(f"float images must be in [0, 1], this one reaches {float(image.max()):g}")
    scaled = image.astype(np.float64 if dtype == np.uint8 else dtype)  # one temporary, then in place: frames can be 4K
    scaled *= 255.0
    if dtype == np.uint8:
        np.rint(scaled, out=scaled)
    return np.clip(scaled, 0.0, 255.0, out=scaled).astype(dtype, copy=False)
