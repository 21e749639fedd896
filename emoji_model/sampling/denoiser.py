"""The Follow-Your-Emoji denoiser: landmark guider + UNet3D + classifier-free guidance, as one window callable.

``build_denoiser(...)`` returns ``denoise(x_window, t, frame_indices) -> v`` for the samplers in ``sampler.py``:

- the landmark guider runs on the window's frames only (never on the whole video), on every call;
- the UNet3D gets the reference's CLIP states (its ``clip_fc`` inside) and its 16 ReferenceNet features (batch 1,
  computed once per portrait by ``animate.encode_reference``, never again);
- guidance as the official pipeline (golden quirks 1, 6, 7): one batch-2 call [uncond, cond] whose uncond row has
  all-zero CLIP states **and** no reference attention (``reference_mask=(False, True)``), the landmark features in
  both rows; ``v = u + g·(c − u)``. ``cfg == 1`` makes that exactly the cond row, so a single cond call is made;
- inputs are cast to the networks' dtype at the call, the prediction comes back float32, and a NaN or infinity in it
  raises ``SamplingError`` (fp16 overflow would otherwise end as a black video).

The official averages the [uncond; cond] outputs over windows first and guides after; guidance is linear, so with
its equal weights guiding per window first is the same up to float rounding (measured ≤ 1e-6).

Exact speed-ups (``networks.SpeedOptions``): the UNet's conditions are ``prepare``d once per sampling run (reference
and context keys/values projected once per layer, the uncond row's constant cross-attention), the guider's features
are kept per frame across steps (within a memory budget), and ``compile`` runs the UNet through ``torch.compile``
(eager, with one warning, if that fails).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from ..errors import SamplingError
from ..networks.speed import CompiledOrEager, SpeedOptions
from .sampler import Denoiser


def check_cfg(cfg: float) -> float:
    """``ValueError`` unless cfg is a finite number ≥ 1 (1 = no guidance, a single conditional pass)."""
    if isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not math.isfinite(cfg) or cfg < 1:
        raise ValueError(
            f"cfg must be a finite number ≥ 1 (1 = no guidance, one conditional pass per window), got {cfg!r}"
        )
    return float(cfg)


def landmark_window(landmarks, frames: Sequence[int], *, device, dtype: torch.dtype) -> torch.Tensor:
    """(1, 3, n, H, W) guider input in [0, 1] from frames ``frames`` of (F, H, W, 3) landmark drawings.

    ``landmarks``: uint8 (divided by 255 in float32, as the official ``do_normalize=False`` preprocessing) or float in
    [0, 1]; a torch tensor, a numpy array or any array-like that takes a list of frame indices (a lazy sequence).
    """
    window = landmarks[list(frames)]
    window = window if isinstance(window, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(window))
    window = window.float() / 255.0 if window.dtype == torch.uint8 else window.float()
    return window.permute(3, 0, 1, 2).unsqueeze(0).to(device=device, dtype=dtype)  # (n, H, W, 3) → (1, 3, n, H, W)


def check_finite(x: torch.Tensor, what: str) -> torch.Tensor:
    """``x`` unchanged, or ``SamplingError`` if it holds NaN or infinity."""
    if not bool(torch.isfinite(x).all()):
        raise SamplingError(
            f"{what} contains NaN or infinity. With fp16 weights this is an overflow: use bf16 or fp32. "
            "Nothing usable would come out of the remaining steps, so sampling stopped."
        )
    return x


def _module_dtype(module: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    param = next(module.parameters())
    return param.device, param.dtype


def build_denoiser(networks, reference, landmarks, cfg: float, speed: SpeedOptions = SpeedOptions(),
                   compile: bool = False) -> Denoiser:
    """``denoise(x (1, 4, n, h, w) float32, t, frames) -> v (1, 4, n, h, w) float32`` for one window.

    ``networks``: ``FollowYourEmojiNetworks`` (``.unet``, ``.guider``); ``reference``: ``animate.Reference``;
    ``landmarks``: (F, H, W, 3) drawings at the reference's size (see ``landmark_window``); ``speed``: which exact
    speed-ups to use; ``compile``: the UNet through ``torch.compile``.
    """
    cfg = check_cfg(cfg)
    unet, guider = networks.unet, networks.guider
    device, dtype = _module_dtype(unet)
    guider_device, guider_dtype = _module_dtype(guider)
    features = tuple(f.to(device=device, dtype=dtype) for f in reference.features)  # (1, h_i·w_i, C_i), cast once
    cond = reference.clip_states.to(device=device, dtype=dtype)  # (1, L, 1024)
    states = cond if cfg == 1 else torch.cat([torch.zeros_like(cond), cond])  # [uncond, cond]: zero CLIP states
    mask = None if cfg == 1 else (False, True)  # the uncond row runs plain self-attention (no reference)
    prepare = getattr(unet, "prepare", None)  # a wrapped UNet (a host's, a test's) takes the plain arguments
    with torch.no_grad():  # once per sampling run, or at every call when project_once is off
        prepared = prepare(states, features, mask, speed, project=True) if prepare and speed.project_once else None
    model = CompiledOrEager(unet) if compile else unet
    landmark_features = _landmark_features(guider, landmarks, speed, device, dtype, guider_device, guider_dtype)

    @torch.no_grad()
    def denoise(x: torch.Tensor, t: int, frames: list[int]) -> torch.Tensor:
        lmk = landmark_features(frames)  # (1, C0, n, h, w), shared by both rows
        sample = x.to(device=device, dtype=dtype)
        if cfg != 1:
            sample = sample.expand(2, *sample.shape[1:])
        if prepare is None:
            out = model(sample, t, states, lmk, features, mask)
        else:
            conditions = prepared or prepare(states, features, mask, speed, project=False)
            out = model(sample, t, landmark_features=lmk, conditions=conditions)
        out = out.float()
        v = out if cfg == 1 else out[:1] + cfg * (out[1:] - out[:1])
        return check_finite(v, f"The denoiser's prediction at timestep {t} for frames {frames[0]}…{frames[-1]}")

    return denoise


def _landmark_features(guider, landmarks, speed: SpeedOptions, device, dtype, guider_device, guider_dtype):
    """``features(frames) -> (1, C0, n, h, w)`` in the UNet's dtype: the guider on those frames, each frame's
    features kept (``speed.cache_landmarks``) while they fit in ``speed.landmark_cache_bytes`` — the guider works
    frame by frame, so a kept frame is the same whichever window asks for it."""
    kept: dict[int, torch.Tensor] = {}
    budget = [speed.landmark_cache_bytes if speed.cache_landmarks else 0]

    def run(frames) -> torch.Tensor:
        pixels = landmark_window(landmarks, frames, device=guider_device, dtype=guider_dtype)
        return guider(pixels).to(device=device, dtype=dtype)  # (1, C0, n, h, w)

    @torch.no_grad()
    def features(frames: list[int]) -> torch.Tensor:
        if not speed.cache_landmarks:
            return run(frames)
        missing = [f for f in dict.fromkeys(frames) if f not in kept]
        if missing:
            fresh = run(missing)
            for i, f in enumerate(missing):
                frame = fresh[0, :, i]
                size = frame.numel() * frame.element_size()
                if size <= budget[0]:
                    kept[f] = frame.clone()  # its own storage, so the window's buffer can go
                    budget[0] -= size
            if len(missing) == len(frames) and list(missing) == list(frames):
                return fresh
            fresh_at = {f: fresh[0, :, i] for i, f in enumerate(missing)}
        else:
            fresh_at = {}
        return torch.stack([kept[f] if f in kept else fresh_at[f] for f in frames], dim=1).unsqueeze(0)

    return features
