"""The official noise schedule: DDIM, zero terminal SNR, trailing spacing, v-prediction, eta 0 (Song et al. 2021;
Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").

Built with diffusers' ``DDIMScheduler`` and the official config, then used through small pure functions:

- ``get_timesteps(steps)``: the N timesteps (trailing: ``round(1000 − i·1000/N) − 1``, so the first is always 999);
- ``prev_timestep(t, steps)``: diffusers' rule ``t − 1000 // N``; a negative value means "clean" (ᾱ = 1,
  ``set_alpha_to_one``). With trailing spacing this is *not* always the next timestep of the list when N does not
  divide 1000: at 30 steps 966 → 933 while the next step runs at 932 (harmless); and when 1000/N has a fractional
  part ≥ 0.5 (N = 6, 7, 11, 13, 15, …) the last step ends at t = 0 (ᾱ = 0.99915), not at clean, leaving noise of
  std ≈ 0.03 in the result. Kept: it is what the official sampler does (its default, 30 steps, ends clean).
- ``ddim_step(v, t, t_prev, x, alphas_cumprod)`` → ``(x_prev, x0)``, equal to ``DDIMScheduler.step`` (eta 0);
- ``renoise(x0, noise, t, alphas_cumprod)``: ``add_noise`` (``√ᾱ_t·x0 + √(1−ᾱ_t)·noise``), clean for t < 0.

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


def official_alphas_cumprod() -> torch.Tensor:
    """ᾱ_t for t = 0..999, (1000,) float32; ᾱ_999 = 0 (zero terminal SNR)."""
    return make_scheduler().alphas_cumprod.clone()


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


def _alpha(t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """ᾱ_t as a 0-d float32 tensor; 1 for t < 0 (the official ``final_alpha_cumprod``)."""
    return alphas_cumprod[int(t)] if t >= 0 else torch.tensor(1.0, dtype=alphas_cumprod.dtype)


def ddim_step(
    v: torch.Tensor, t: int, t_prev: int, x: torch.Tensor, alphas_cumprod: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """DDIM, eta 0, from a v-prediction (Song et al. 2021, eq. 12): ``x_t → (x_{t_prev}, x0)``, float32 or wider."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    x, v = x.to(dtype), v.to(dtype)
    # the coefficients in float32, as the scheduler computes them (exact as Python floats)
    alpha_t, alpha_prev = _alpha(t, alphas_cumprod), _alpha(t_prev, alphas_cumprod)
    a, b = float(alpha_t**0.5), float((1 - alpha_t) ** 0.5)
    c, d = float(alpha_prev**0.5), float((1 - alpha_prev) ** 0.5)
    # 1. predicted clean sample and noise from v = √ᾱ·ε − √(1−ᾱ)·x0 (one new tensor each: long videos)
    x0 = torch.mul(x, a).sub_(v, alpha=b)
    eps = torch.mul(v, a).add_(x, alpha=b)
    # 2. deterministic update: x0 at the new noise level plus the direction pointing to x_t
    return torch.mul(x0, c).add_(eps, alpha=d), x0


def renoise(x0: torch.Tensor, noise: torch.Tensor, t: int, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Clean latents taken to timestep ``t`` with the given noise (``DDIMScheduler.add_noise``); ``x0`` for t < 0."""
    dtype = torch.promote_types(x0.dtype, torch.float32)
    alpha = _alpha(t, alphas_cumprod).to(device=x0.device, dtype=dtype)
    return alpha**0.5 * x0.to(dtype) + (1 - alpha) ** 0.5 * noise.to(dtype)
