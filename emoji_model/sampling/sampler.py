"""Samplers over context windows, k-diffusion style: the denoiser is an opaque callable.

``denoise(x_window, t, frame_indices) -> v`` gets the latents of one window (B, C, len(window), h, w), float32,
the integer timestep and the window's frame indices (positions along the sampled tensor's frame axis — absolute
video frames in ``sample_progressive``), and returns the v-prediction for that window (any float dtype; CFG, if any,
happens inside it). It never sees more frames than a window, and the sampler keeps its latents in float32.

``callback(info)`` runs before every window, ``{'step', 'steps', 'window', 'windows'}`` (step index, steps, window
index, windows in this step), and once after every step with ``window == windows`` plus ``'x'`` (latents after the
step) and ``'denoised'`` (the predicted clean latents, for previews). ``sample_progressive`` adds ``'stage'``
(``"keyframes"`` or ``"inbetweens"``), ``'segment'`` and ``'segments'``. It may raise to cancel: nothing more is
computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial

import numpy as np
import torch
from diffusers import DDIMScheduler

from .context import WindowFusion, windows_overlap
from .progressive import FixedFrames, ProgressivePlan, hold_fixed
from .schedule import make_scheduler, prev_timestep

Denoiser = Callable[[torch.Tensor, int, list[int]], torch.Tensor]
WindowsFn = Callable[..., list[list[int]]]  # windows_fn(num_frames, step_index=i)
WeightsFn = Callable[[int], torch.Tensor]  # weights_fn(window_length) -> (window_length,)


@torch.no_grad()
def sample_windows(
    denoise: Denoiser,
    x: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    windows_fn: WindowsFn,
    weights_fn: WeightsFn,
    scheduler: DDIMScheduler | None = None,
    fixed: FixedFrames | None = None,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """DDIM, eta 0, v-prediction (Song et al. 2021) over context windows fused per frame; x (B, C, F, h, w).

    ``scheduler`` (default ``make_scheduler()``) makes the steps and re-noises ``fixed``; its ``set_timesteps`` is
    called with ``len(timesteps)``, from which ``step`` takes each step's t_prev (``schedule.prev_timestep``).
    Another diffusers scheduler (``make_scheduler(name)``: DPM-Solver++, UniPC, Euler) steps the same fused
    v-predictions at its own timesteps (``get_timesteps(steps, name)``): ``x`` is scaled by its
    ``init_noise_sigma`` and the windows see ``scale_model_input(x, t)``; a multistep solver keeps its history on the
    whole tensor, which is right since the fused prediction covers every frame."""
    timesteps = [int(t) if float(t).is_integer() else float(t) for t in timesteps]
    if not timesteps:
        raise ValueError("need at least one timestep")
    scheduler = make_scheduler() if scheduler is None else scheduler
    with np.errstate(divide="ignore"):  # zero SNR: some schedulers' σ table is infinite at t = 999 before clamping
        scheduler.set_timesteps(len(timesteps))
    ddim = isinstance(scheduler, DDIMScheduler)
    x = x.to(torch.float32, copy=True)
    if float(scheduler.init_noise_sigma) != 1.0:
        x = x * float(scheduler.init_noise_sigma)
    for i, t in enumerate(timesteps):
        if fixed is not None:
            x = hold_fixed(x, fixed, t, scheduler)
        t_step = t if ddim else scheduler.timesteps[i]  # some schedulers take only their own timestep tensors
        model_input = x if ddim else scheduler.scale_model_input(x, t_step)
        windows = windows_fn(x.shape[2], step_index=i)
        fusion = WindowFusion(x)
        for w, window in enumerate(windows):
            if callback is not None:
                callback({"step": i, "steps": len(timesteps), "window": w, "windows": len(windows)})
            fusion.add(window, denoise(model_input[:, :, window], t, list(window)), weights_fn(len(window)))
        # the step on the fused v-prediction (divided in place: no extra full-size tensor), in float32
        v = fusion.result(inplace=True).float()
        if ddim:
            out = scheduler.step(v, t, x, eta=0.0)
            x, denoised = out.prev_sample, out.pred_original_sample
        else:
            denoised = _x0_from_v(scheduler, model_input, v, t) if callback is not None else None
            x = scheduler.step(v, t_step, x).prev_sample
        del fusion, v, model_input  # frees the fused prediction before the next step allocates its buffer
        if callback is not None:
            info = {"step": i, "steps": len(timesteps), "window": len(windows), "windows": len(windows)}
            callback({**info, "x": x, "denoised": denoised})
        del denoised
    if fixed is None:
        return x
    return hold_fixed(x, fixed, prev_timestep(timesteps[-1], len(timesteps)) if ddim else -1, scheduler)


def _x0_from_v(scheduler, x: torch.Tensor, v: torch.Tensor, t) -> torch.Tensor:
    """The clean latents a v-prediction implies, x0 = √ᾱ·x − √(1−ᾱ)·v (x: the model's input), for previews."""
    alpha = scheduler.alphas_cumprod[int(round(float(t)))].to(x.device, torch.float32)
    return alpha.sqrt() * x - (1 - alpha).sqrt() * v


@torch.no_grad()
def sample_progressive(
    denoise: Denoiser,
    noise: torch.Tensor,
    timesteps: Sequence[int] | torch.Tensor,
    plan: ProgressivePlan,
    length: int,
    overlap: int,
    weights_fn: WeightsFn,
    scheduler: DDIMScheduler | None = None,
    callback: Callable[[dict], None] | None = None,
) -> torch.Tensor:
    """The progressive strategy (Ma et al. 2024): the keyframes, then each in-between segment with its end keyframes
    held at their re-noised clean latents. ``noise`` (B, C, F, h, w) is the whole video's initial noise."""
    out = noise.to(torch.float32, copy=True)  # clean frames replace the noise as the stages produce them
    segments = (plan.keyframes, *plan.inbetweens)
    for s, segment in enumerate(segments):
        frames = list(segment.frames)
        held = [frames[p] for p in segment.fixed_positions]
        fixed = FixedFrames(segment.fixed_positions, out[:, :, held], noise[:, :, held]) if held else None
        x = sample_windows(
            lambda xw, t, window, frames=frames: denoise(xw, t, [frames[j] for j in window]),
            noise[:, :, frames],
            timesteps,
            partial(windows_overlap, length=length, overlap=overlap),
            weights_fn,
            scheduler,
            fixed,
            None if callback is None else lambda info, s=s: callback({**info, **_stage(s, len(segments))}),
        )
        generated = [p for p, f in enumerate(frames) if f not in segment.fixed]
        out[:, :, [frames[p] for p in generated]] = x[:, :, generated]
    return out


def _stage(segment: int, segments: int) -> dict:
    return {"stage": "inbetweens" if segment else "keyframes", "segment": segment, "segments": segments}
