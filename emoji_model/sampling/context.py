"""Context windows over the frame axis and the weighted fusion of their predictions. Pure: no model, no state.

Window schedules share one signature, ``windows_<name>(num_frames, length, overlap, step_index=0, loop=False)``
→ ``list[list[int]]`` (frame indices in temporal order), and are chosen by name with ``get_window_schedule``:

- ``official``: the official pipeline exactly — windows of ``length`` (24) frames side by side from frame 0, the
  last one wrapping around modulo the frame count; overlap, step and ``loop`` ignored (windows never move).
- ``overlap``: windows of ``length`` ≤ 32 frames overlapping by at least ``overlap``, whose offsets move from step
  to step so the seams between windows do not stay on the same frames; no wrap-around unless ``loop``.

The paper's progressive strategy (keyframes, then the frames between them) is a two-stage plan built on
``windows_overlap``: see ``progressive.py``.

Fusion weights ``weights_<name>(length, overlap=0)`` → (length,) float32, all > 0, chosen with ``get_weights``;
``WindowFusion`` accumulates weighted window predictions into a float32 buffer and divides by the per-frame sum.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

MAX_WINDOW = 32  # the motion module's sinusoidal positional encoding has 32 positions (pos_encoder.pe: (1, 32, C))
GOLDEN_RATIO = (1 + 5**0.5) / 2


def check_window(num_frames: int, length: int, overlap: int) -> None:
    """``ValueError`` unless 1 ≤ num_frames, 1 ≤ length ≤ 32 and 0 ≤ overlap < length."""
    if num_frames < 1:
        raise ValueError(f"need at least one frame, got {num_frames}")
    if length > MAX_WINDOW:
        raise ValueError(
            f"context window of {length} frames is longer than the motion module's positional encoding "
            f"({MAX_WINDOW} positions); use at most {MAX_WINDOW} frames"
        )
    if length < 1:
        raise ValueError(f"context window length must be at least 1, got {length}")
    if not 0 <= overlap < length:
        raise ValueError(f"context overlap must be from 0 to length − 1 = {length - 1}, got {overlap}")


# ---- window schedules -------------------------------------------------------------------------------------------


def _ordered_halving(step: int) -> float:
    """The 64-bit bit reversal of ``step`` as a fraction in [0, 1): 0, 1/2, 1/4, 3/4, 1/8, …"""
    return int(f"{step:064b}"[::-1], 2) / 2**64


def uniform_official(
    step: int, num_frames: int, length: int, stride: int, overlap: int, closed_loop: bool = True
) -> list[list[int]]:
    """The official ``pipeline_context.uniform`` in all its arguments (the pipeline only ever uses step 0,
    stride 1, overlap 0): dilated levels 1, 2, 4, … frames apart, phase from the bit-reversed step, wrap modulo F."""
    if num_frames <= length:
        return [list(range(num_frames))]
    levels = min(stride, math.ceil(math.log2(num_frames / length)) + 1)
    phase = _ordered_halving(step)
    pad = round(num_frames * phase)
    windows = []
    for dilation in (2**level for level in range(levels)):
        end = num_frames + pad - (0 if closed_loop else overlap)
        for start in range(int(phase * dilation) + pad, end, length * dilation - overlap):
            windows.append([(start + i * dilation) % num_frames for i in range(length)])
    return windows


def windows_official(
    num_frames: int, length: int = 24, overlap: int = 0, step_index: int = 0, loop: bool = True
) -> list[list[int]]:
    """The official windows: ``length`` frames side by side from 0, the last wrapping modulo F (overlap, step and
    loop are ignored, as the official pipeline ignores them); all frames in one window if F ≤ length."""
    check_window(num_frames, length, 0)
    return uniform_official(0, num_frames, length, 1, 0)


def _shift_increment(stride: int) -> int:
    """The offset added per step: the integer coprime with ``stride`` nearest to stride/φ (0 if stride is 1)."""
    candidates = [g for g in range(1, stride) if math.gcd(g, stride) == 1]
    return min(candidates, key=lambda g: (abs(g - stride / GOLDEN_RATIO), g)) if candidates else 0


def windows_overlap(
    num_frames: int, length: int, overlap: int, step_index: int = 0, loop: bool = False
) -> list[list[int]]:
    """Windows of ``length`` frames, consecutive ones sharing ≥ ``overlap`` frames, shifted from step to step.

    Window starts sit on the grid ``offset + k·stride`` (stride = length − overlap). The offset advances by the
    integer nearest stride/φ that is coprime with the stride, modulo the stride, so consecutive steps always differ
    and every offset comes back once per ``stride`` steps, spread out (a golden-ratio sequence). Not looping, starts
    are clamped to [0, F − length] (the first window starts at frame 0, the last ends at F − 1, every window keeps
    its full length); when F − length < stride the offset cycles over the F − length positions that change the
    windows. Looping, the grid runs around the circle and windows wrap modulo F.
    Fewer frames than ``length``: one window of all frames.
    """
    check_window(num_frames, length, overlap)
    if num_frames <= length:
        return [list(range(num_frames))]
    stride = length - overlap
    if loop:
        offset = (step_index * _shift_increment(stride)) % stride
        starts = range(offset, offset + num_frames, stride)
        return [[(start + i) % num_frames for i in range(length)] for start in starts]
    last = num_frames - length
    period = min(stride, last)
    offset = (step_index * _shift_increment(period)) % period
    starts = sorted({min(max(start, 0), last) for start in range(offset - stride, last + stride, stride)})
    return [list(range(start, start + length)) for start in starts]


WINDOW_SCHEDULES: dict[str, Callable[..., list[list[int]]]] = {
    "official": windows_official,
    "overlap": windows_overlap,
}


def get_window_schedule(name: str) -> Callable[..., list[list[int]]]:
    """``windows_<name>`` from its name."""
    if name not in WINDOW_SCHEDULES:
        raise ValueError(f"Unknown window schedule {name!r}; choose one of {', '.join(WINDOW_SCHEDULES)}")
    return WINDOW_SCHEDULES[name]


# ---- fusion weights ---------------------------------------------------------------------------------------------


def weights_flat(length: int, overlap: int = 0) -> torch.Tensor:
    """Equal weights (the official averaging)."""
    return torch.ones(length, dtype=torch.float32)


def weights_pyramid(length: int, overlap: int = 0) -> torch.Tensor:
    """1, 2, …, peak, …, 2, 1: frames near a window's middle count more (FreeNoise's weighted average)."""
    i = torch.arange(length, dtype=torch.float32)
    return torch.minimum(i + 1, length - i)


def weights_linear(length: int, overlap: int = 0) -> torch.Tensor:
    """1 in the middle, linear ramps over the ``overlap`` first and last frames: 1/(o+1), 2/(o+1), …; flat if 0."""
    i = torch.arange(length, dtype=torch.float32)
    ramp = torch.minimum(i + 1, length - i) / (overlap + 1)
    return ramp.clamp(max=1.0)


WEIGHTS: dict[str, Callable[..., torch.Tensor]] = {
    "pyramid": weights_pyramid,
    "flat": weights_flat,
    "linear": weights_linear,
}


def get_weights(name: str) -> Callable[..., torch.Tensor]:
    """``weights_<name>`` from its name."""
    if name not in WEIGHTS:
        raise ValueError(f"Unknown fusion weights {name!r}; choose one of {', '.join(WEIGHTS)}")
    return WEIGHTS[name]


# ---- fusion -----------------------------------------------------------------------------------------------------


class WindowFusion:
    """Weighted per-frame average of window predictions, accumulated in float32 whatever their dtype.

    Holds one buffer the size of the full tensor and one weight per frame; nothing else grows with the length.
    """

    def __init__(self, like: torch.Tensor, dim: int = 2):
        self.dim = dim
        self.total = torch.zeros(like.shape, dtype=torch.float32, device=like.device)
        self.weight = torch.zeros(like.shape[dim], dtype=torch.float32, device=like.device)

    def add(self, window: Sequence[int], prediction: torch.Tensor, weights: torch.Tensor) -> None:
        """Add a window's prediction (its frames along ``dim``) with per-frame ``weights`` (len(window),)."""
        index = torch.as_tensor(window, dtype=torch.long, device=self.total.device)
        weights = torch.as_tensor(weights, dtype=torch.float32, device=self.total.device)
        shape = [1] * self.total.ndim
        shape[self.dim] = len(window)
        weighted = prediction.to(device=self.total.device, dtype=torch.float32) * weights.view(shape)
        self.total.index_add_(self.dim, index, weighted)  # index_add_ accumulates repeated indices correctly
        self.weight.index_add_(0, index, weights)

    def result(self, inplace: bool = False) -> torch.Tensor:
        """The fused tensor, float32; ``ValueError`` if a frame was never covered. ``inplace``: divide the buffer
        itself and return it (no second full-size tensor; the fusion is then spent)."""
        missing = torch.nonzero(self.weight <= 0).flatten().tolist()
        if missing:
            raise ValueError(f"frames not covered by any window: {missing[:10]}{' …' if len(missing) > 10 else ''}")
        shape = [1] * self.total.ndim
        shape[self.dim] = -1
        return self.total.div_(self.weight.view(shape)) if inplace else self.total / self.weight.view(shape)
