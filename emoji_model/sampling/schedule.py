"""The official noise schedule: DDIM, zero terminal SNR, trailing spacing, v-prediction, eta 0 (Song et al. 2021;
Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

It is diffusers' ``DDIMScheduler`` with the official config (``make_scheduler``): the sampler steps with
``step(v, t, x, eta=0.0)`` after ``set_timesteps(N)`` and re-noises held frames with ``add_noise`` (``renoise``).

- ``get_timesteps(steps)``: the N timesteps (trailing: ``round(1000 − i·1000/N) − 1``, so the first is always 999);
- ``prev_timestep(t, steps)``: the rule ``step`` follows, ``t − 1000 // N``; a negative value means "clean" (ᾱ = 1,
  ``set_alpha_to_one``). With trailing spacing this is *not* always the next timestep of the list when N does not
  divide 1000: at 30 steps 966 → 933 while the next step runs at 932 (harmless); and when 1000/N has a fractional
  part ≥ 0.5 (N = 6, 7, 11, 13, 15, …) the last step ends at t = 0 (ᾱ = 0.99915), not at clean, leaving noise of
  std ≈ 0.03 in the result. Kept: it is what the official sampler does (its default, 30 steps, ends clean).
- ``renoise(x0, noise, t, scheduler)``: ``add_noise`` (``√ᾱ_t·x0 + √(1−ᾱ_t)·noise``), clean for t < 0.

One step: timesteps ``[999]`` and t_prev = −1. At t = 999 the zero-SNR schedule has ᾱ = 0, so the latent is pure
noise, ``x0 = −v`` and the step returns that prediction as the clean latent: one model call, no refinement.
"""

from __future__ import annotations

import numbers

import torch
from diffusers import DDIMScheduler

# configs/infer.yaml `scheduler` + infer.py's enable_zero_snr update; set_alpha_to_one keeps its default (True)
OFFICIAL_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "steps_offset": 1,
    "clip_sample": False,
    "set_alpha_to_one": True,
    "rescale_betas_zero_snr": True,
    "timestep_spacing": "trailing",
    "prediction_type": "v_prediction",
}
NUM_TRAIN_TIMESTEPS = OFFICIAL_SCHEDULER_CONFIG["num_train_timesteps"]


def make_scheduler() -> DDIMScheduler:
    """A fresh diffusers ``DDIMScheduler`` with the official config (use it with ``eta=0``)."""
    return DDIMScheduler(**OFFICIAL_SCHEDULER_CONFIG)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps must be an integer from 1 to {NUM_TRAIN_TIMESTEPS}, got {steps!r}")
    return int(steps)


def get_timesteps(steps: int) -> torch.Tensor:
    """The ``steps`` timesteps of the official DDIM sampler, (steps,) int64, decreasing from 999."""
    scheduler = make_scheduler()
    scheduler.set_timesteps(_check_steps(steps))
    return scheduler.timesteps.clone()


def prev_timestep(t: int, steps: int) -> int:
    """The timestep a DDIM step from ``t`` lands on in an N-step run (diffusers' rule); < 0 means clean."""
    return int(t) - NUM_TRAIN_TIMESTEPS // _check_steps(steps)


def renoise(x0: torch.Tensor, noise: torch.Tensor, t: int, scheduler: DDIMScheduler) -> torch.Tensor:
    """Clean latents taken to timestep ``t`` with the given noise by ``scheduler.add_noise``, in float32 or wider;
    ``x0`` itself for t < 0 (clean)."""
    dtype = torch.promote_types(x0.dtype, torch.float32)
    if t < 0:  # add_noise would read ᾱ[−1] = ᾱ_999 = 0
        return x0.to(dtype, copy=True)
    return scheduler.add_noise(x0.to(dtype), noise.to(dtype), torch.tensor([int(t)]))
