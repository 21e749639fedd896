"""Reference-image preprocessing as the official code does it: fit-and-pad, the CLIP input and the VAE input.

Official path (``dataset/val_dataset.py``, ``infer.py visualize``, ``models/video_pipeline.py``):
PIL RGB → fit into W×H keeping aspect (PIL bicubic) and pad black, centred → uint8 canvas, which feeds
  * CLIP: ``CLIPImageProcessor()`` of transformers 4.x (PIL bicubic shortest side → centre crop → /255 → OpenAI
    mean/std; in transformers 5.x that PIL path is ``CLIPImageProcessorPil``);
  * the VAE: ``VaeImageProcessor.preprocess`` (size floored to a multiple of 8, PIL Lanczos resize, /255, 2x−1),
    after ``infer.visualize`` has pushed the canvas through a truncating float32 round trip (golden quirk 3).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from .errors import InputImageError
from .images import to_rgb_uint8

# transformers' OPENAI_CLIP_MEAN / OPENAI_CLIP_STD
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VAE_SCALE_FACTOR = 8  # 2 ** (len(block_out_channels) - 1) for every SD VAE
to_uint8 = to_rgb_uint8  # the old name nodes/sampling.py imports; drop it once that imports images.to_rgb_uint8


def fit_and_pad(image, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8: ``image`` scaled to fit (PIL bicubic, aspect kept), centred on black (ValDataset).

    Same arithmetic as the official resize + crop: ``scale = min(W / w0, H / h0)``, size ``int(w0·scale) ×
    int(h0·scale)``, placed at ``(W//2 − w//2, H//2 − h//2)``. Identical to the official for even W and H; for an odd
    size the official crop box comes out one pixel short, here the canvas is exactly width × height.
    """
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be positive, got {width}×{height}")
    rgb = to_rgb_uint8(image)
    h0, w0 = rgb.shape[:2]
    if h0 < 1 or w0 < 1:
        raise InputImageError(f"Empty reference image ({w0}×{h0})")
    scale = min(width / w0, height / h0)
    w, h = int(w0 * scale), int(h0 * scale)
    if w < 1 or h < 1:
        raise InputImageError(f"Reference image {w0}×{h0} is too thin to fit into {width}×{height}")
    # PIL returns a copy when the size is unchanged: no resampling then, as in the official code.
    resized = np.asarray(Image.fromarray(rgb).resize((w, h), resample=Image.BICUBIC))
    canvas = np.zeros((height, width, 3), dtype=np.uint8)
    top, left = height // 2 - h // 2, width // 2 - w // 2
    # The crop box can cut at most a pixel when int() rounds the fitted side up to the canvas; clip both ways.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + h, height), min(left + w, width)
    canvas[y0:y1, x0:x1] = resized[y0 - top:y1 - top, x0 - left:x1 - left]
    return canvas


@functools.cache
def _round_trip_table() -> np.ndarray:
    """uint8 → uint8 table of the official float32 round trip (ToTensor, ·2−1, then (x+1)/2 ·255 truncated)."""
    k = torch.arange(256, dtype=torch.uint8)
    x = k.to(torch.float32).div(255) * 2.0 - 1.0  # ValDataset: ToTensor()(img) * 2.0 - 1.0
    x = torch.clamp((x + 1.0) / 2.0, min=0, max=1)  # infer.visualize
    return (x * 255).numpy().astype(np.uint8)


def official_round_trip(image: np.ndarray) -> np.ndarray:
    """The truncation ``infer.visualize`` applies to the reference canvas before the pipeline (golden quirk 3).

    Elementwise, so a 256-entry table is exact; 63 of the 256 levels drop by one (the astronaut: 173,320 values).
    """
    return _round_trip_table()[to_rgb_uint8(image)]


def vae_input(image, width: int | None = None, height: int | None = None, official_round_trip: bool = False
              ) -> torch.Tensor:
    """(1, 3, h, w) float32 in [−1, 1], as ``VaeImageProcessor.preprocess(PIL, height, width)`` of diffusers 0.24.

    The size (default: the image's) is floored to a multiple of 8, the image is Lanczos-resized to it when it differs
    (PIL returns an unchanged copy otherwise), then ``x / 255`` and ``2x − 1``. ``official_round_trip`` first applies
    the official's truncating round trip (off by default: it is a defect; on to reproduce the official bit for bit).
    """
    rgb = to_rgb_uint8(image)
    if official_round_trip:
        rgb = _round_trip_table()[rgb]
    height = rgb.shape[0] if height is None else height
    width = rgb.shape[1] if width is None else width
    height, width = height - height % VAE_SCALE_FACTOR, width - width % VAE_SCALE_FACTOR
    if height < VAE_SCALE_FACTOR or width < VAE_SCALE_FACTOR:
        raise InputImageError(f"The VAE input must be at least {VAE_SCALE_FACTOR}×{VAE_SCALE_FACTOR} px")
    if rgb.shape[:2] != (height, width):
        rgb = np.asarray(Image.fromarray(rgb).resize((width, height), resample=Image.LANCZOS))
    x = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]  # (1, 3, h, w) in [0, 1]
    return 2.0 * x - 1.0


def clip_input(image, size: int = 224, crop_size: int | None = None) -> torch.Tensor:
    """(1, 3, crop, crop) float32 CLIP pixel values, normalised once, as transformers' PIL ``CLIPImageProcessor()``.

    Shortest side to ``size`` (long side ``int(size · long / short)``, PIL bicubic), centre crop (zero-padded if the
    crop is larger), ``x · (1/255)`` in float64 then float32, ``(x − mean) / std`` in float32. Give it uint8 pixels
    (or floats in [0, 1]); never pixel values that are already normalised.
    """
    crop_size = size if crop_size is None else crop_size
    rgb = to_rgb_uint8(image)
    h0, w0 = rgb.shape[:2]
    short, long = (w0, h0) if w0 <= h0 else (h0, w0)
    new_short, new_long = size, int(size * long / short)
    new_h, new_w = (new_long, new_short) if w0 <= h0 else (new_short, new_long)
    resized = np.asarray(Image.fromarray(rgb).resize((new_w, new_h), resample=Image.BICUBIC))
    cropped = _centre_crop(resized, crop_size, crop_size)
    x = torch.from_numpy((cropped.astype(np.float64) * (1 / 255)).astype(np.float32)).permute(2, 0, 1)
    mean = torch.tensor(CLIP_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(CLIP_STD, dtype=torch.float32).view(3, 1, 1)
    return ((x - mean) / std)[None]


def _centre_crop(image: np.ndarray, crop_h: int, crop_w: int) -> np.ndarray:
    """transformers' ``center_crop`` on (H, W, C): top-left at ``(H − h) // 2``; smaller images are zero-padded first."""
    h, w = image.shape[:2]
    if crop_h > h or crop_w > w:
        new_h, new_w = max(crop_h, h), max(crop_w, w)
        pad_top, pad_left = -(-(new_h - h) // 2), -(-(new_w - w) // 2)  # ceil
        padded = np.zeros((new_h, new_w) + image.shape[2:], dtype=image.dtype)
        padded[pad_top:pad_top + h, pad_left:pad_left + w] = image
        top, left = (h - crop_h) // 2 + pad_top, (w - crop_w) // 2 + pad_left
        return padded[max(top, 0):max(top, 0) + crop_h, max(left, 0):max(left, 0) + crop_w]
    top, left = (h - crop_h) // 2, (w - crop_w) // 2
    return image[top:top + crop_h, left:left + crop_w]
