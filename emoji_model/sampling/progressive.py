"""The paper's progressive strategy, training-free: keyframes first, then the frames between them.

Stage 1 samples the keyframes (every k-th frame, plus the last) as one sparse sequence, windowed by
``windows_overlap`` when there are more than a window's length of them. Stage 2 samples, for each pair of
consecutive keyframes (a, b), the segment a..b with a and b held fixed: at every step their latents are replaced by
the clean stage-1 keyframes re-noised to the current timestep (``hold_fixed``); segments longer than a window are
windowed the same way, the fixed frames staying fixed. Every frame is generated exactly once — keyframes in stage 1,
the others in the one segment that contains them — and stage 2 never changes a keyframe.

Which noise re-noises the keyframes: the **same noise the keyframe started from**, i.e. the initial noise at that
frame (one initial noise tensor is drawn for the whole video and every stage reads its frames from it), at every
step — not fresh noise per step. Why:

- DDIM with eta 0 is deterministic: an ideal trajectory is ``x_t = √ᾱ_t·x0 + √(1−ᾱ_t)·ε`` with one fixed ε from
  start to end. Re-noising with that ε puts the held frames on exactly such a trajectory, ending at the stage-1
  keyframe; its neighbours see a keyframe whose noise is coherent from step to step, as their own is.
  Fresh noise per step (RePaint's choice, made for stochastic samplers) makes the held frames' noise jump at every
  step, which the motion module spreads to the neighbouring frames as flicker next to the keyframes.
- At the first step (t = 999, ᾱ = 0) the held frame *is* its initial noise, exactly the latent it had at the start of
  stage 1 and the one a segment's initial noise holds at that frame: stage 2 starts with no discontinuity.
- Consecutive segments share their end keyframe with the same noise, so both see the same held latent at each step.
- It costs nothing: the noise at a frame is one slice of the initial noise; nothing is stored per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import DDIMScheduler

from .context import check_window, windows_overlap
from .schedule import renoise


@dataclass(frozen=True)
class Segment:
    """Frames sampled together, in temporal order; ``fixed`` (a subset) are held at re-noised clean latents."""

    frames: tuple[int, ...]
    fixed: tuple[int, ...] = ()

    @property
    def generated(self) -> tuple[int, ...]:
        """The frames this segment produces (all but the fixed ones)."""
        return tuple(f for f in self.frames if f not in self.fixed)

    @property
    def fixed_positions(self) -> tuple[int, ...]:
        """Positions of the fixed frames inside ``frames``."""
        return tuple(i for i, f in enumerate(self.frames) if f in self.fixed)

    def windows(self, length: int, overlap: int, step_index: int) -> list[list[int]]:
        """``windows_overlap`` over this segment, as positions into ``frames``."""
        return windows_overlap(len(self.frames), length, overlap, step_index)


@dataclass(frozen=True)
class ProgressivePlan:
    """Stage 1: ``keyframes`` (nothing fixed); stage 2: ``inbetweens``, one segment per keyframe pair with a gap."""

    keyframes: Segment
    inbetweens: tuple[Segment, ...]


def plan_progressive(num_frames: int, keyframe_stride: int, length: int, overlap: int = 0) -> ProgressivePlan:
    """Keyframes every ``keyframe_stride`` frames plus the last; one stage-2 segment a..b per consecutive pair that
    has frames between them. ``length``/``overlap`` are only validated here (both stages window with them)."""
    check_window(num_frames, length, overlap)
    if keyframe_stride < 1:
        raise ValueError(f"keyframe stride must be at least 1, got {keyframe_stride}")
    keyframes = list(range(0, num_frames, keyframe_stride))
    if keyframes[-1] != num_frames - 1:
        keyframes.append(num_frames - 1)
    inbetweens = tuple(
        Segment(tuple(range(a, b + 1)), fixed=(a, b)) for a, b in zip(keyframes, keyframes[1:]) if b - a > 1
    )
    return ProgressivePlan(Segment(tuple(keyframes)), inbetweens)


@dataclass(frozen=True)
class FixedFrames:
    """Frames a sampler holds: their positions along the frame axis, clean latents and noise (B, C, len, h, w)."""

    positions: tuple[int, ...]
    clean: torch.Tensor
    noise: torch.Tensor


def hold_fixed(x: torch.Tensor, fixed: FixedFrames, t: int, scheduler: DDIMScheduler) -> torch.Tensor:
    """``x`` (B, C, F, h, w) with the fixed frames replaced by their clean latents re-noised to timestep ``t`` with
    their noise by ``scheduler`` (``schedule.renoise``); t < 0 (after the last step) gives the clean latents
    themselves. Returns a new tensor."""
    index = torch.as_tensor(fixed.positions, dtype=torch.long, device=x.device)
    held = renoise(fixed.clean, fixed.noise, t, scheduler).to(device=x.device, dtype=x.dtype)
    return x.index_copy(2, index, held)
