"""Speed-ups of the network calls, each one a switch (to measure it on its own, or to rule it out).

"Exact": the same function, only float rounding moves (the golden parity tests run with all of them on). What each
does, and what it measured alone against none of them for the full-size CFG UNet3D call (256², 8 frames, fp32, 2 cores
of a Xeon with AVX-512/AMX, torch 2.13.0, one run each, ±5 % noise: ``bench/official.py``'s ablation): none 22.4 s,
all (the default) 19.4 s (1.16×); project_once 1.03×, constant_uncond 1.12×, matmul_projections 1.05×,
cpu_heap 1.17×, channels_last 1.02× (not exact; off).

- ``project_once``: the denoiser calls ``UNet3D.prepare`` once per sampling run, so every layer's reference
  keys/values and CLIP-context keys/values are projected once per portrait and layer, not once per window and step.
- ``constant_uncond``: a context row whose tokens are all equal (the CFG uncond row: all-zero CLIP states, so
  ``clip_fc`` gives its bias in all 257 tokens) has identical keys and values: every query's softmax is uniform and
  its cross-attention output is that one value row through ``to_out``, computed once per layer and broadcast.
- ``matmul_projections``: the spatial transformers' 1×1 ``proj_in``/``proj_out`` as batched matrix products on
  the NCHW maps read as transposed token matrices: no token copies, and the activations stay NCHW. (As 1×1
  convolutions on the token view, the output is channels-last-strided, and so is every activation after it: the
  next convolutions then convert their weights at every call and the group norms run the NHWC kernel.)
- ``channels_last`` (off by default, and **not exact**): the 2-D convolutions, group norms and token reshapes run on
  NHWC activations (oneDNN's native layout on CPU). Measured per resnet (1 thread): 8 % faster at 320 channels 32²,
  3 % at 640 16², 30–70 % slower at 1280 channels 8² and 4², so no gain for the whole UNet; and torch's NHWC
  GroupNorm kernel on the CPU takes the variance in one pass (8e-4 off at mean 3, std 0.1; 4e-4 relative on a
  tiny UNet). The landmark guider (convolutions only, exact) uses NHWC: 1.4× faster at 256².
- ``cpu_heap``: while sampling on the CPU (glibc), large tensors come from the heap instead of fresh ``mmap``s, so
  the memory of freed activations is reused instead of being page-faulted in again at every call (a UNet call
  allocates tens of GB that way); restored, and the heap trimmed back, when sampling ends.
- ``cache_landmarks`` (off by default): the landmark guider (per-frame convolutions) runs once per frame and
  sampling run instead of once per window and step, while its features fit in ``landmark_cache_bytes``.
"""

from __future__ import annotations

import ctypes
import logging
from contextlib import contextmanager
from dataclasses import dataclass

import torch

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SpeedOptions:
    """Switches of the exact speed-ups (all on by default) and the optional ``torch.compile`` (off)."""

    project_once: bool = True
    constant_uncond: bool = True
    matmul_projections: bool = True
    channels_last: bool = False  # off by default: not faster for the whole UNet on CPU, and not exact (see above)
    cpu_heap: bool = True
    cache_landmarks: bool = False  # off by default: the guider then sees exactly one window per UNet call
    landmark_cache_bytes: int = 2**30  # frames beyond this budget run the guider again at each call

    @classmethod
    def none(cls) -> SpeedOptions:
        """Every exact speed-up off: the plain computation (for comparisons)."""
        return cls(project_once=False, constant_uncond=False, matmul_projections=False, channels_last=False,
                   cpu_heap=False, cache_landmarks=False)


M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc mallopt parameters
_heap_users = 0


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


@contextmanager
def cpu_heap(enabled: bool = True):
    """glibc's malloc without ``mmap`` for large blocks and without trimming, inside the block (nested blocks share
    it); glibc's defaults back and ``malloc_trim(0)`` after. A no-op without glibc or when not ``enabled``."""
    global _heap_users
    libc = _glibc() if enabled else None
    if libc is None:
        yield
        return
    if _heap_users == 0:
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
    _heap_users += 1
    try:
        yield
    finally:
        _heap_users -= 1
        if _heap_users == 0:
            libc.mallopt(M_MMAP_MAX, 65536)
            libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)
            libc.malloc_trim(0)


def set_matmul_projections(module: torch.nn.Module, on: bool) -> None:
    """``SpatialTransformer.matmul_projections`` of every transformer in ``module`` (only when it changes)."""
    if getattr(module, "_matmul_projections", None) is on:
        return
    from .transformer import SpatialTransformer

    for child in module.modules():
        if isinstance(child, SpatialTransformer):
            child.matmul_projections = on
    module._matmul_projections = on


def use_channels_last(module: torch.nn.Module, probe: torch.Tensor, channels_last: bool = True) -> None:
    """The module's 4-D weights (convolutions) in NHWC memory (or back in NCHW), converted only when ``probe`` (one
    of them) is not yet so; values unchanged. A convolution would convert a mismatched weight at every call."""
    if probe.is_contiguous(memory_format=torch.channels_last) != channels_last:
        module.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def to_memory_format(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """A 4-D activation in NHWC memory when ``channels_last`` (a no-op if it already is), else unchanged."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last and x.ndim == 4 else x


class CompiledOrEager:
    """``module`` through ``torch.compile``, falling back to the eager module (one warning) if compiling or running
    the compiled module fails; an error the eager module raises too is the eager one's (re-raised as is)."""

    def __init__(self, module: torch.nn.Module, **compile_kwargs):
        self.module = module
        self.failed: str | None = None
        try:
            self.compiled = torch.compile(module, **compile_kwargs)
        except Exception as error:  # noqa: BLE001 - any failure means: run eager
            self._fall_back(error)

    def _fall_back(self, error: BaseException) -> None:
        self.failed = f"{type(error).__name__}: {error}".splitlines()[0][:300]
        self.compiled = None
        logger.warning("torch.compile of the %s failed, running it eagerly instead (%s)",
                       type(self.module).__name__, self.failed)

    def __call__(self, *args, **kwargs):
        if self.compiled is None:
            return self.module(*args, **kwargs)
        try:
            return self.compiled(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - compiler failure or an error of the call itself: eager tells
            out = self.module(*args, **kwargs)  # raises the call's own error (ValueError, …) as is
            self._fall_back(error)
            return out

    def __getattr__(self, name):  # parameters(), prepare(), config … of the wrapped module
        return getattr(self.module, name)
