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


Other solvers (``SCHEDULERS``): diffusers' DPM-Solver++ 2M, UniPC and Euler with the same betas, zero terminal SNR,
v-prediction and trailing spacing (``make_scheduler(name)``), stepping the same fused v-predictions; the official
DDIM stays the default. ``SUGGESTED_STEPS``: the steps each needs to match DDIM-30 on the closed-form test model
(``bench/steps.py``). Schedulers that cannot rescale to zero SNR or predict v are refused with the reason.
"""

from __future__ import annotations

import inspect
import numbers

import diffusers
import numpy as np
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


DEFAULT_SCHEDULER = "ddim"
# name → (diffusers class name, settings on top of the official config)
SCHEDULERS = {
    "ddim": ("DDIMScheduler", {}),
    "dpmpp_2m": ("DPMSolverMultistepScheduler",
                 {"algorithm_type": "dpmsolver++", "solver_order": 2, "final_sigmas_type": "zero"}),
    "unipc": ("UniPCMultistepScheduler", {"solver_order": 2, "final_sigmas_type": "zero"}),
    "euler": ("EulerDiscreteScheduler", {"final_sigmas_type": "zero"}),
}
# names a user may try that cannot sample these weights (checked by ``check_scheduler_class`` or stated here)
REFUSED = {
    "heun": ("HeunDiscreteScheduler", None),
    "lms": ("LMSDiscreteScheduler", None),
    "pndm": ("PNDMScheduler", None),
    "deis": ("DEISMultistepScheduler", None),
    "dpmpp_2s": ("DPMSolverSinglestepScheduler", None),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler",
                        "it adds fresh noise at every step (ancestral sampling): not a deterministic solver of the "
                        "probability-flow ODE, so seeds and steps would not compare with DDIM's"),
    "dpmpp_sde": ("DPMSolverSDEScheduler", None),
}
# steps (UNet calls per window) to match DDIM-30's error on the closed-form test models, the larger of the single
# Gaussian's and the mixture's (bench/steps.py: mixture dpmpp_2m 12, unipc 10, euler 30; Gaussian 16, 16, 40)
SUGGESTED_STEPS = {"ddim": 30, "dpmpp_2m": 16, "unipc": 16, "euler": 40}


def check_scheduler_class(cls) -> None:
    """``ValueError`` with the reason when a diffusers scheduler class cannot sample the Follow-Your-Emoji weights:
    they predict v on a zero-terminal-SNR schedule with trailing timesteps, and the window sampler calls the model
    once per timestep."""
    params = inspect.signature(cls.__init__).parameters
    name = cls.__name__
    if "rescale_betas_zero_snr" not in params:
        raise ValueError(f"{name} cannot rescale its betas to zero terminal SNR (no rescale_betas_zero_snr), which "
                         "the Follow-Your-Emoji UNet was trained with: its first step would not start from pure noise")
    if "prediction_type" not in params:
        raise ValueError(f"{name} cannot take v-predictions (no prediction_type), which the UNet makes")
    if "timestep_spacing" not in params:
        raise ValueError(f"{name} has no trailing timestep spacing: with zero SNR its first step would skip t = 999")
    if getattr(cls, "order", 1) != 1:
        raise ValueError(f"{name} calls the model {cls.order} times per timestep; the window sampler calls it once")


def scheduler_names() -> tuple[str, ...]:
    return tuple(SCHEDULERS)


def make_scheduler(name: str = DEFAULT_SCHEDULER):
    """A fresh diffusers scheduler with the official config: ``ddim`` (the official, use it with ``eta=0``) or one
    of ``SCHEDULERS``. ``ValueError`` for an unknown name (listing the names) or a refused scheduler (the reason)."""
    if name in REFUSED:
        class_name, reason = REFUSED[name]
        if reason is None:
            try:
                check_scheduler_class(getattr(diffusers, class_name))
                reason = "it is not one of the tested solvers"
            except ValueError as why:
                reason = str(why)
        raise ValueError(f"scheduler {name!r} ({class_name}) is refused: {reason}. Choose one of "
                         f"{', '.join(SCHEDULERS)}")
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    class_name, extra = SCHEDULERS[name]
    if name == "ddim":
        return DDIMScheduler(**OFFICIAL_SCHEDULER_CONFIG)
    cls = getattr(diffusers, class_name)
    check_scheduler_class(cls)
    params = inspect.signature(cls.__init__).parameters
    config = {k: v for k, v in {**OFFICIAL_SCHEDULER_CONFIG, **extra}.items() if k in params}
    with np.errstate(divide="ignore"):  # σ = √((1 − ᾱ)/ᾱ) is infinite at zero SNR before diffusers clamps ᾱ_999
        return cls(**config)


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 1 <= steps <= NUM_TRAIN_TIMESTEPS:
        raise ValueError(f"steps must be an integer from 1 to {NUM_TRAIN_TIMESTEPS}, got {steps!r}")
    return int(steps)


def get_timesteps(steps: int, scheduler: str = DEFAULT_SCHEDULER) -> torch.Tensor:
    """The ``steps`` timesteps of the official DDIM sampler, (steps,) int64, decreasing from 999 (or those of the
    named scheduler)."""
    made = make_scheduler(scheduler)
    with np.errstate(divide="ignore"):
        made.set_timesteps(_check_steps(steps))
    return made.timesteps.clone()


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
