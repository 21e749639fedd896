"""``images.to_rgb_uint8``, the one image normaliser: every input kind → (H, W, 3) RGB uint8, clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emoji_model.errors import InputImageError
from emoji_model.images import to_rgb_uint8


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)


def test_every_layout_and_kind_becomes_rgb_uint8(rgb):
    grey = rgb[..., 1]
    grey3 = np.repeat(grey[..., None], 3, axis=2)
    rgba = np.concatenate([rgb, np.full_like(rgb[..., :1], 7)], axis=-1)
    cases = {
        "rgb": (rgb, rgb),
        "rgba": (rgba, rgb),
        "uint16": (rgb.astype(np.uint16) * 257, rgb),
        "float32": (rgb.astype(np.float32) / 255, rgb),
        "float64 rgba": (rgba / 255.0, rgb),
        "grey (H, W)": (grey, grey3),
        "grey (H, W, 1)": (grey[..., None], grey3),
        "grey + alpha": (np.stack([grey, grey], axis=-1), grey3),
        "strided": (rgb[:, ::-1], rgb[:, ::-1]),
        "tensor uint8": (torch.from_numpy(rgb), rgb),
        "tensor float with grad": ((torch.from_numpy(rgb) / 255).requires_grad_(), rgb),
        "PIL RGB": (Image.fromarray(rgb), rgb),
        "PIL RGBA": (Image.fromarray(rgba), rgb),
        "PIL L": (Image.fromarray(grey), grey3),
        "PIL P": (Image.fromarray(rgb).convert("P"), np.asarray(Image.fromarray(rgb).convert("P").convert("RGB"))),
    }
    for name, (image, expected) in cases.items():
        out = to_rgb_uint8(image)
        assert out.dtype == np.uint8 and out.shape == (30, 40, 3) and out.flags.c_contiguous, name
        np.testing.assert_array_equal(out, expected, err_msg=name)
    assert to_rgb_uint8(rgb) is rgb  # no copy when there is nothing to convert


def test_floats_are_clipped_and_rounded_not_truncated():
    levels = np.arange(256, dtype=np.uint8)
    floats = (levels.astype(np.float32) / 255)[None, :, None].repeat(3, axis=2)  # ComfyUI LoadImage: x / 255
    assert np.array_equal(to_rgb_uint8(floats)[0, :, 0], levels)
    # After arithmetic (here the official's ·2−1 and back) values land just below k/255: rounding still recovers
    # them, truncation (as the official and the community wrapper do) loses 63 levels.
    t = (torch.from_numpy(floats) * 2.0 - 1.0 + 1.0) / 2.0
    assert np.array_equal(to_rgb_uint8(t)[0, :, 0], levels)
    assert ((t * 255).numpy().astype(np.uint8)[0, :, 0] != levels).sum() == 63
    edges = np.array([[0.0, 0.5 / 255, 0.6 / 255, 1.0, 1.2, -0.1]])
    np.testing.assert_array_equal(to_rgb_uint8(edges)[0, :, 0], [0, 0, 1, 255, 255, 0])


def test_16_bit_grey_is_scaled_not_clipped():
    ramp = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    expected = np.rint(np.arange(65536) / 257).reshape(256, 256)
    for image in (ramp, Image.fromarray(ramp), Image.fromarray(ramp.astype(np.int32))):  # uint16, PIL I;16, PIL I
        out = to_rgb_uint8(image)
        np.testing.assert_array_equal(out[..., 0], expected)
        np.testing.assert_array_equal(out[..., 0], out[..., 2])
    low = np.arange(256, dtype=np.int32).reshape(16, 16)  # a 32-bit PIL image within 0–255 is taken as 8-bit
    np.testing.assert_array_equal(to_rgb_uint8(Image.fromarray(low))[..., 1], low)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((1, 64, 64, 3), np.uint8), r"expected one image of shape .* got \(1, 64, 64, 3\)"),
        (np.zeros((64, 64, 5), np.uint8), r"expected one image of shape .* got \(64, 64, 5\)"),
        (np.zeros(64, np.uint8), "expected one image"),
        (np.zeros((64, 64, 3), np.int32), "unsupported image dtype int32"),
        (np.zeros((64, 64, 3), bool), "unsupported image dtype bool"),
        (np.full((64, 64, 3), 200.0), r"must be in \[0, 1\], this one reaches 200"),
        (np.full((64, 64, 3), np.nan), "NaN"),
        (np.full((64, 64, 3), np.inf, np.float32), "infinite"),
    ],
)
def test_unusable_images_are_rejected(image, message):
    with pytest.raises(InputImageError, match=message):
        to_rgb_uint8(image)
