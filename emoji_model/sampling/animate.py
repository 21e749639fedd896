"""Portrait + landmark drawings → clean latents → frames: the three calls a host makes.

- ``encode_reference(networks, image, vae_encode=…, clip_encode=…)`` once per portrait → ``Reference``;
- ``sample(networks, reference, landmarks, options)`` → clean latents (F, 4, h, w), any number of frames, in context
  windows of at most 32 frames (the motion module's positional encoding);
- ``decode(vae_decode, latents)`` → uint8 frames, a chunk at a time.

The VAE and CLIP come in as callables so a host can use its own (ComfyUI's VAE and CLIP vision, or
``encoders.py``'s diffusers/transformers ones): nothing here loads a file.

Window modes (``SamplingOptions.windows``):

- ``official``: the official pipeline exactly — ``window_length`` frames side by side, the last window wrapping to the
  first frames, fixed across steps, equal weights (``overlap``, ``fusion`` and ``loop`` are ignored). Reproduces the
  official latents (tests/test_sampling_parity.py).
- ``overlap``: windows overlapping by ``overlap`` frames, shifted from step to step, fused with ``fusion`` weights; no
  wrap-around unless ``loop`` (for a driving video that loops). The default: no seams that stay put, no tail frames
  averaged with the head.
- ``progressive``: the paper's long-video strategy (training-free): every ``keyframe_stride``-th frame first, as one
  sparse sequence, then the frames between each pair of keyframes with both ends held (``progressive.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial

import numpy as np
import torch

from ..errors import SamplingError
from ..networks.speed import SpeedOptions, cpu_heap
from ..reference import clip_input, fit_and_pad, vae_input
from .context import MAX_WINDOW, check_window, get_weights, get_window_schedule, weights_flat, windows_overlap
from .denoiser import build_denoiser, check_cfg, check_finite
from .progressive import plan_progressive
from .sampler import sample_progressive, sample_windows
from .schedule import DEFAULT_SCHEDULER, get_timesteps, make_scheduler

SCALING_FACTOR = 0.18215  # sd-vae-ft-mse: latents live in the model's space as VAE mean × 0.18215
WINDOW_MODES = ("official", "overlap", "progressive")


# ---- the portrait -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Reference:
    """A portrait, encoded once: what every window of every step reuses."""

    latent: torch.Tensor  # (1, 4, h, w) float32: VAE mean × 0.18215
    clip_states: torch.Tensor  # (1, L, 1024) float32: CLIP vision last_hidden_state (before post_layernorm)
    features: tuple[torch.Tensor, ...]  # the ReferenceNet's 16 norm1 features (1, h_i·w_i, C_i), network dtype
    width: int  # pixel size the portrait was fitted and padded to
    height: int


def encode_reference(networks, image, **encoding) -> Reference:
    """The portrait's latent, CLIP states and ReferenceNet features: ``encode_portrait(image, **encoding)``, then
    ``reference_features``. A host that must load the networks only after the encoders ran (ComfyUI: loading the
    VAE and CLIP may offload them) calls the two itself."""
    return reference_features(networks, *encode_portrait(image, **encoding))


@torch.no_grad()
def encode_portrait(
    image,
    *,
    vae_encode: Callable[[torch.Tensor], torch.Tensor],
    clip_encode: Callable[[torch.Tensor], torch.Tensor],
    width: int = 512,
    height: int = 512,
    official_round_trip: bool = False,
    clip_size: int = 224,
    fit_size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The portrait's latent (1, 4, h, w) and CLIP states (1, L, 1024), float32.

    ``image``: (H, W, 3) uint8 RGB of any size (or what ``reference.to_uint8`` takes). It is fitted into
    width×height keeping its aspect and padded black (the official ``ValDataset``), then:
    ``vae_encode(x (1, 3, height, width) in [−1, 1])`` must return the **raw** latent mean (1, 4, h, w) (the
    0.18215 scaling happens here); ``clip_encode(pixels (1, 3, clip_size, clip_size), normalised once)`` returns
    (1, L, 1024) ``last_hidden_state``. The ReferenceNet then runs once on them (``reference_features``), at t = 0, on
    the conditional context only (batch 1: the official's uncond row is never read).

    ``official_round_trip``: apply the official's truncating uint8 round trip to the VAE input (golden quirk 3;
    off by default, it is a defect). ``clip_size``: the CLIP's input size (224 for ViT-L/14). ``fit_size``: fit and
    pad at this (width, height) first and let the VAE input be resized from there (Lanczos), as the official does
    when its dataset resolution (512²) differs from the pipeline size; default: fit directly at width×height.
    """
    if width % 8 or height % 8 or width < 8 or height < 8:
        raise ValueError(f"width and height must be positive multiples of 8, got {width}×{height}")
    canvas = fit_and_pad(image, *(fit_size or (width, height)))  # (H', W', 3) uint8
    pixels = vae_input(canvas, width, height, official_round_trip=official_round_trip)  # (1, 3, height, width)
    latent = torch.as_tensor(vae_encode(pixels)).float() * SCALING_FACTOR
    if latent.shape != (1, 4, height // 8, width // 8):
        raise ValueError(f"vae_encode returned {tuple(latent.shape)}, expected (1, 4, {height // 8}, {width // 8})")
    clip_states = torch.as_tensor(clip_encode(clip_input(canvas, clip_size))).float()
    if clip_states.ndim != 3 or clip_states.shape[0] != 1:
        raise ValueError(f"clip_encode must return (1, tokens, hidden) states, got {tuple(clip_states.shape)}")
    return latent, clip_states


@torch.no_grad()
def reference_features(networks, latent: torch.Tensor, clip_states: torch.Tensor) -> Reference:
    """The ``Reference`` of an encoded portrait (``encode_portrait``): the ReferenceNet's features, at t = 0."""
    param = next(networks.referencenet.parameters())
    features = networks.referencenet(
        latent.to(param.device, param.dtype),
        torch.tensor(0, dtype=torch.long),  # the official: zeros_like(t)
        clip_states.to(param.device, param.dtype),
    )
    return Reference(latent, clip_states, tuple(features), latent.shape[-1] * 8, latent.shape[-2] * 8)


# ---- sampling -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SamplingOptions:
    """How ``sample`` runs. Defaults: the official 30 steps, guidance 3.5 and seed; overlapping windows."""

    steps: int = 30
    cfg: float = 3.5  # ≥ 1; 1 = no guidance (one conditional pass per window)
    seed: int = 12580  # the official seed; the initial noise is drawn as the official draws it
    windows: str = "overlap"  # "official" | "overlap" | "progressive"
    window_length: int = 16  # frames per window, ≤ 32 (the motion module's positional encoding)
    overlap: int = 4  # frames shared by neighbouring windows (overlap / progressive)
    fusion: str = "pyramid"  # "pyramid" | "flat" | "linear": weights of overlapping predictions (overlap / progressive)
    loop: bool = False  # overlap: windows wrap around the end (a looping driving video)
    keyframe_stride: int = 4  # progressive: every k-th frame (and the last) is a keyframe
    scheduler: str = DEFAULT_SCHEDULER  # "ddim" (official) | "dpmpp_2m" | "unipc" | "euler": schedule.SCHEDULERS
    compile: bool = False  # the UNet through torch.compile (eager, with one warning, if that fails)
    speed: SpeedOptions = SpeedOptions()  # the exact speed-ups (all on; for comparisons)


def check_options(options: SamplingOptions) -> None:
    """``ValueError`` naming the bad option."""
    get_timesteps(options.steps)  # validates steps
    make_scheduler(options.scheduler)  # unknown (the names listed) or refused (the reason)
    check_cfg(options.cfg)
    if options.windows not in WINDOW_MODES:
        raise ValueError(f"Unknown window mode {options.windows!r}; choose one of {', '.join(WINDOW_MODES)}")
    if options.window_length > MAX_WINDOW:
        raise ValueError(
            f"window_length {options.window_length} is longer than the motion module's positional encoding "
            f"({MAX_WINDOW} positions: frames further apart were never seen in training); use at most {MAX_WINDOW}"
        )
    check_window(1, options.window_length, 0 if options.windows == "official" else options.overlap)  # 0 ≤ overlap < length
    get_weights(options.fusion)
    if options.keyframe_stride < 1:
        raise ValueError(f"keyframe_stride must be at least 1, got {options.keyframe_stride}")


def initial_noise(num_frames: int, height: int, width: int, seed: int) -> torch.Tensor:
    """(1, 4, F, h, w) float32 on the CPU, drawn as the official: ``torch.randn`` from a fresh CPU generator."""
    generator = torch.Generator("cpu").manual_seed(int(seed))
    return torch.randn((1, 4, num_frames, height, width), generator=generator, dtype=torch.float32)


def check_landmarks(landmarks, reference: Reference) -> int:
    """The frame count of (F, H, W, 3) drawings at the reference's size; ``ValueError`` otherwise."""
    shape = tuple(landmarks.shape)
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"landmarks must be (frames, height, width, 3) RGB drawings, got shape {shape}")
    if shape[0] < 1:
        raise ValueError("no landmark frames: nothing to animate")
    if shape[1:3] != (reference.height, reference.width):
        raise ValueError(
            f"the landmark drawings are {shape[2]}×{shape[1]} but the reference was encoded at "
            f"{reference.width}×{reference.height}: draw the landmarks at the reference's size"
        )
    return shape[0]


def window_plan(options: SamplingOptions, num_frames: int) -> list[int]:
    """Denoiser calls per step (one entry per step, all stages of ``progressive`` summed): for progress totals."""
    if options.windows == "progressive":
        plan = plan_progressive(num_frames, options.keyframe_stride, options.window_length, options.overlap)
        lengths = [len(segment.frames) for segment in (plan.keyframes, *plan.inbetweens)]
        count = partial(windows_overlap, length=options.window_length, overlap=options.overlap)
        return [sum(len(count(n, step_index=i)) for n in lengths) for i in range(options.steps)]
    windows_fn = _windows_fn(options)
    return [len(windows_fn(num_frames, step_index=i)) for i in range(options.steps)]


def _windows_fn(options: SamplingOptions):
    if options.windows == "official":
        return partial(get_window_schedule("official"), length=options.window_length)
    return partial(windows_overlap, length=options.window_length, overlap=options.overlap, loop=options.loop)


def _counting(callback: Callable[[dict], None] | None, total: int) -> Callable[[dict], None] | None:
    """The sampler's callback with ``'done'`` (denoiser calls finished) and ``'total'`` (calls in the run) added."""
    if callback is None:
        return None
    done = 0

    def report(info: dict) -> None:
        nonlocal done
        callback({**info, "done": done, "total": total})
        if "x" not in info:  # a window is about to run
            done += 1

    return report


def sample(
    networks,
    reference: Reference,
    landmarks,
    options: SamplingOptions = SamplingOptions(),
    *,
    callback: Callable[[dict], None] | None = None,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """Clean latents (F, 4, h, w) float32, in the model's space (× 0.18215), one per landmark frame.

    ``landmarks``: (F, H, W, 3) drawings at the reference's width×height, uint8 or float in [0, 1] — a torch tensor,
    a numpy array or a lazy array-like taking a list of frame indices (``landmarks.draw.Drawings``). Only one
    window's frames are read at a time. ``noise``: the initial noise (1, 4, F, h, w) or (F, 4, h, w); default drawn
    from ``options.seed`` as the official draws it (so seed 12580 gives the official's noise).

    ``callback(info)`` runs before every window — ``{'step', 'steps', 'window', 'windows', 'done', 'total'}`` plus
    ``'stage'``, ``'segment'``, ``'segments'`` in progressive mode — and after every step with ``'x'`` and
    ``'denoised'`` (the latents of the frames being sampled, for previews). ``done``/``total`` count denoiser calls
    over the whole run (a progress bar). Raising from it cancels: the exception propagates.

    Guidance: see ``denoiser.py`` (official CFG; ``cfg == 1`` runs one conditional pass per window, exactly what the
    guided formula gives at 1, at half the cost). The latents stay float32 on the networks' device whatever the
    networks' dtype; a NaN or infinity raises ``SamplingError``.
    """
    check_options(options)
    num_frames = check_landmarks(landmarks, reference)
    device = next(networks.unet.parameters()).device
    h, w = reference.latent.shape[-2:]
    if noise is None:
        noise = initial_noise(num_frames, h, w, options.seed)
    noise = noise.unsqueeze(0).transpose(1, 2) if noise.ndim == 4 else noise  # (F, 4, h, w) → (1, 4, F, h, w)
    if tuple(noise.shape) != (1, 4, num_frames, h, w):
        raise ValueError(f"noise must be (1, 4, {num_frames}, {h}, {w}), got {tuple(noise.shape)}")
    noise = check_finite(noise.to(device=device, dtype=torch.float32), "The initial noise")

    with cpu_heap(options.speed.cpu_heap and device.type == "cpu"):
        return _sample(networks, noise, num_frames, reference, landmarks, options, callback)


def _sample(networks, noise, num_frames, reference, landmarks, options, callback) -> torch.Tensor:
    denoise = build_denoiser(networks, reference, landmarks, options.cfg, options.speed, options.compile)
    timesteps = get_timesteps(options.steps, options.scheduler)
    scheduler = make_scheduler(options.scheduler)
    report = _counting(callback, sum(window_plan(options, num_frames)))
    if options.windows == "progressive":
        plan = plan_progressive(num_frames, options.keyframe_stride, options.window_length, options.overlap)
        weights = partial(get_weights(options.fusion), overlap=options.overlap)
        x = sample_progressive(denoise, noise, timesteps, plan, options.window_length, options.overlap, weights,
                               scheduler, callback=report)
    else:
        weights = weights_flat if options.windows == "official" else partial(get_weights(options.fusion),
                                                                             overlap=options.overlap)
        x = sample_windows(denoise, noise, timesteps, _windows_fn(options), weights, scheduler, callback=report)
    return check_finite(x, "The sampled latents")[0].transpose(0, 1).contiguous()  # (F, 4, h, w)


# ---- decoding -----------------------------------------------------------------------------------------------------


def to_uint8_frames(pixels: torch.Tensor) -> np.ndarray:
    """(n, 3, H, W) or (n, H, W, 3) floats in [0, 1] → (n, H, W, 3) uint8, rounded."""
    if pixels.ndim != 4:
        raise ValueError(f"decoded frames must be 4-D, got shape {tuple(pixels.shape)}")
    if pixels.shape[1] == 3 and pixels.shape[-1] != 3:
        pixels = pixels.permute(0, 2, 3, 1)
    return pixels.float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()


def decode(
    vae_decode: Callable[[torch.Tensor], torch.Tensor],
    latents: torch.Tensor,
    *,
    chunk: int = 8,
    callback: Callable[[dict], None] | None = None,
    as_float: bool = False,
) -> Iterator[np.ndarray]:
    """Yield (n, H, W, 3) uint8 frames, ``chunk`` latents per ``vae_decode`` call (memory does not grow with F).

    ``latents``: (F, 4, h, w) from ``sample``. ``vae_decode(z)`` gets ``z = latents / 0.18215`` (n, 4, h, w) — the
    raw VAE latent, what the official passes to ``vae.decode`` — and returns frames **in [0, 1]**, (n, 3, H, W) or
    (n, H, W, 3) (ComfyUI's ``VAE.decode`` returns that; with diffusers: ``(vae.decode(z).sample / 2 + 0.5)``,
    clamped). Values are clamped to [0, 1] and rounded to uint8. ``callback({'done', 'total'})`` runs before each
    chunk (frames decoded so far, all frames); raising from it cancels.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    if latents.ndim != 4:
        raise ValueError(f"latents must be (frames, 4, h, w), got shape {tuple(latents.shape)}")
    total = latents.shape[0]
    for start in range(0, total, chunk):
        if callback is not None:
            callback({"done": start, "total": total})
        z = latents[start : start + chunk].float() / SCALING_FACTOR
        with torch.no_grad():
            pixels = torch.as_tensor(vae_decode(z))
        check_finite(pixels, f"The VAE's output for frames {start}…{start + len(z) - 1}")
        if pixels.shape[0] != len(z):
            raise SamplingError(f"vae_decode returned {pixels.shape[0]} frames for {len(z)} latents")
        if as_float:  # (n, H, W, 3) float32 in [0, 1], unrounded: for paste_back, which rounds once at its end
            pixels = pixels.permute(0, 2, 3, 1) if pixels.shape[1] == 3 and pixels.shape[-1] != 3 else pixels
            yield pixels.float().clamp(0, 1).cpu().numpy()
        else:
            yield to_uint8_frames(pixels)
