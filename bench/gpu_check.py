"""One-shot GPU check (``bench/gpu.sh`` runs it): the full-size pipeline on random weights, and the GPU's fp16/bf16
against CPU fp32 on tiny weights.

1. ``pipeline``: the three networks at full size and a full-size SD VAE, random weights (every tensor from a
   generator seeded by its key), built on the device in each dtype; a random portrait (latent, CLIP states) through
   the ReferenceNet, ``sampling.animate.sample`` (overlap windows of 16, CFG 3.5, the default exact speed-ups) on
   random landmark drawings, then ``animate.decode``: seconds per frame·step of the sampling, seconds per decoded
   frame, peak VRAM, and that nothing overflowed (a NaN/inf raises). One warm-up step first (kernel selection).
2. ``parity``: tiny networks (every official block) with the same random weights on the CPU in fp32 and on the
   device in fp16/bf16 (the golden tiny official weights from ``../shared`` when present, else random tiny ones):
   one unguided denoiser call's largest difference relative to its largest value, against a bound per dtype
   (``PARITY_BOUND``); the guided call and a 2-step sample are printed beside it (guidance 3.5 multiplies the
   rounding of the cond − uncond difference, about 10× here).

``--dry-run``: everything on the CPU at tiny sizes (the "full-size" networks shrunk, 64², 6 frames), so the script
is tested here (tests/test_gpu_check.py) and works the first time a GPU is at hand. Exit code 1 if a parity check
fails. Prints one line per result; the whole run is meant to fit in 8 minutes on one modern GPU.

Run: python bench/gpu_check.py [--dry-run] [--device cuda] [--dtypes fp16 bf16] [--size 512] [--frames 16]
"""

from __future__ import annotations

import argparse
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emoji_model.checkpoints import FollowYourEmojiNetworks  # noqa: E402
from emoji_model.networks import (  # noqa: E402
    FULL,
    GuiderConfig,
    MotionModuleConfig,
    NetworkConfigs,
    UNet3DConfig,
    UNetConfig,
    build_guider,
    build_referencenet,
    build_unet3d,
    sinusoid_table,
)
from emoji_model.sampling import animate  # noqa: E402

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# one unguided call, relative to its largest value (measured on the golden tiny weights against float64, CPU:
# fp16 2.6e-3 … 4.0e-3, bf16 2.6e-2 … 2.9e-2; with CFG 3.5: fp16 1.4e-2 … 4.0e-2, bf16 7.8e-2 … 9.3e-2)
PARITY_BOUND = {"fp32": 1e-4, "fp16": 1.5e-2, "bf16": 6e-2}
TINY_UNET = UNetConfig(block_out_channels=(32, 32, 32, 64), num_attention_heads=4, norm_num_groups=16)
TINY = NetworkConfigs(referencenet=TINY_UNET, unet3d=UNet3DConfig(TINY_UNET, MotionModuleConfig(num_attention_heads=4)),
                      guider=GuiderConfig(block_out_channels=(8, 16, 24, 32), conditioning_embedding_channels=32))


def fill(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Built on meta → on ``device`` in ``dtype``, every state-dict tensor drawn (fp32, CPU generator seeded by its
    key, so the same on every device): matrices N(0, 1/fan_in), norm scales 1 + N(0, 0.1²), biases N(0, 0.02²)."""
    module = module.to_empty(device=device).to(dtype)
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            if name.endswith("pos_encoder.pe"):
                value = sinusoid_table(tensor.shape[1], tensor.shape[2])
            elif tensor.ndim >= 2:
                value = torch.randn(tensor.shape, generator=gen) * tensor[0].numel() ** -0.5
            elif name.endswith("weight"):
                value = 1 + 0.1 * torch.randn(tensor.shape, generator=gen)
            else:
                value = 0.02 * torch.randn(tensor.shape, generator=gen)
            tensor.copy_(value)
    return module.eval().requires_grad_(False)


def random_networks(configs: NetworkConfigs, device, dtype) -> FollowYourEmojiNetworks:
    with torch.device("meta"):
        parts = build_referencenet(configs.referencenet), build_unet3d(configs.unet3d), build_guider(configs.guider)
    return FollowYourEmojiNetworks(*(fill(p, device, dtype) for p in parts), files=None)


def random_vae(device, dtype, tiny: bool):
    from diffusers import AutoencoderKL

    from emoji_model.encoders import SD_VAE_FT_MSE_CONFIG

    config = {k: v for k, v in SD_VAE_FT_MSE_CONFIG.items() if not k.startswith("_")}
    if tiny:
        config.update(block_out_channels=[32, 32, 32, 32], norm_num_groups=16)
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(config)
    return fill(vae, device, dtype)


def portrait(networks, size: int, clip_dim: int, seed: int = 0) -> animate.Reference:
    gen = torch.Generator().manual_seed(seed)
    latent = torch.randn(1, 4, size // 8, size // 8, generator=gen)
    clip = torch.randn(1, 257, clip_dim, generator=gen)
    return animate.reference_features(networks, latent, clip)


def drawings(frames: int, size: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ((rng.random((frames, size, size, 3)) < 0.005) * 255).astype(np.uint8)  # sparse bright pixels


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline(device: torch.device, dtype_name: str, size: int, frames: int, steps: int, tiny: bool) -> dict:
    dtype = DTYPES[dtype_name]
    configs = TINY if tiny else FULL
    start = time.perf_counter()
    networks = random_networks(configs, device, dtype)
    vae = random_vae(device, dtype, tiny)
    reference = portrait(networks, size, configs.unet3d.unet.clip_dim)
    motion = drawings(frames, size)
    window = 4 if tiny else 16
    options = animate.SamplingOptions(steps=steps, windows="overlap", window_length=window, overlap=window // 4)
    build = time.perf_counter() - start
    animate.sample(networks, reference, motion[: min(frames, window)], animate.SamplingOptions(
        steps=1, windows="overlap", window_length=window, overlap=window // 4))  # warm-up: one window, one step
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    synchronize(device)
    start = time.perf_counter()
    latents = animate.sample(networks, reference, motion, options)
    synchronize(device)
    sampling = time.perf_counter() - start
    from emoji_model.pipeline import vae_decoder

    start = time.perf_counter()
    video = np.concatenate(list(animate.decode(vae_decoder(vae), latents, chunk=8)))
    synchronize(device)
    decoding = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    del networks, vae
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"build_s": build, "s_per_frame_step": sampling / (frames * steps), "decode_s_per_frame": decoding / frames,
            "peak_vram_gib": peak, "frames": video.shape[0], "calls": sum(animate.window_plan(options, frames))}


def tiny_networks(device, dtype, shared: Path | None):
    """The golden tiny official networks (``shared/golden``) when there, else tiny random ones: (networks, clip dim,
    which)."""
    if shared is not None and (shared / "golden" / "tiny_configs.json").is_file():
        import json

        from emoji_model.checkpoints import load_follow_your_emoji

        configs = NetworkConfigs.from_golden(json.loads((shared / "golden" / "tiny_configs.json").read_text()))
        networks = load_follow_your_emoji(shared / "golden" / "tiny_pretrained_models", configs=configs)
        return networks.to(device=device, dtype=dtype), configs.unet3d.unet.clip_dim, "golden tiny"
    return random_networks(TINY, device, dtype), TINY.unet3d.unet.clip_dim, "random tiny"


def parity(device: torch.device, dtype_name: str, shared: Path | None, size: int = 64) -> dict:
    """``dtype_name`` on ``device`` against fp32 on the CPU, same tiny weights: one denoiser call (guider + UNet)
    without guidance (bounded: half-precision rounding of one call), the same call at CFG 3.5 (guidance multiplies
    the rounding of c − u) and a 2-step sample (informative)."""
    from emoji_model.sampling.denoiser import build_denoiser

    motion = drawings(8, size)
    x = torch.randn(1, 4, 4, size // 8, size // 8, generator=torch.Generator().manual_seed(5))
    options = animate.SamplingOptions(steps=2, windows="overlap", window_length=4, overlap=1)
    results = {}
    for dev, dtype in ((torch.device("cpu"), torch.float32), (device, DTYPES[dtype_name])):
        networks, clip_dim, which = tiny_networks(dev, dtype, shared)
        reference = portrait(networks, size, clip_dim)
        results[dev, dtype] = {f"call cfg {g:g}": build_denoiser(networks, reference, motion, g)(x, 500, [0, 1, 2, 3])
                               for g in (1.0, 3.5)}
        results[dev, dtype]["2-step sample"] = animate.sample(networks, reference, motion, options)
    reference, out = results.values()
    rel = {k: ((out[k].cpu() - reference[k]).abs().max() / reference[k].abs().max()).item() for k in reference}
    bound = PARITY_BOUND[dtype_name]
    return {"relative": rel, "bound": bound, "ok": rel["call cfg 1"] <= bound, "weights": which}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU, tiny sizes: the same code paths")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --dry-run)")
    parser.add_argument("--dtypes", nargs="+", default=["fp16", "bf16"], choices=sorted(DTYPES))
    parser.add_argument("--size", type=int, default=None, help="pixels (default 512; 64 with --dry-run)")
    parser.add_argument("--frames", type=int, default=None, help="default 32 (6 with --dry-run)")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--shared", default=None, help="the shared/ folder with golden/ (default: ./shared or ../shared)")
    args = parser.parse_args(argv)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device (torch.cuda.is_available() is False); --dry-run runs on the CPU")
        return 2
    size = args.size or (64 if args.dry_run else 512)
    frames = args.frames or (6 if args.dry_run else 32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"gpu_check: {name}, torch {torch.__version__}, {'dry run (tiny)' if args.dry_run else 'full size'}, "
          f"{size}² px, {frames} frames, {args.steps} steps")
    start, failed = time.perf_counter(), False
    for dtype in args.dtypes:
        r = pipeline(device, dtype, size, frames, args.steps, tiny=args.dry_run)
        vram = f"{r['peak_vram_gib']:.2f} GiB" if r["peak_vram_gib"] is not None else "n/a (CPU)"
        print(f"[pipeline {dtype}] {r['frames']} frames × {args.steps} steps ({r['calls']} window calls): "
              f"{r['s_per_frame_step']:.3f} s per frame·step, decode {r['decode_s_per_frame']:.3f} s per frame, "
              f"peak VRAM {vram}, built in {r['build_s']:.0f} s", flush=True)
    shared = Path(args.shared) if args.shared else (REPO / "shared" if (REPO / "shared").is_dir() else REPO.parent /
                                                     "shared")
    for dtype in args.dtypes:
        r = parity(device, dtype, shared if shared.is_dir() else None)
        failed |= not r["ok"]
        rel = r["relative"]
        print(f"[parity {dtype}] {r['weights']} weights, {dtype} on {device.type} vs fp32 on cpu, relative max |diff|: "
              f"call {rel['call cfg 1']:.2e} (bound {r['bound']:g}) {'ok' if r['ok'] else 'FAILED'}; "
              f"call at CFG 3.5 {rel['call cfg 3.5']:.2e}; 2-step sample {rel['2-step sample']:.2e}", flush=True)
    print(f"gpu_check: done in {time.perf_counter() - start:.0f} s{'; a parity check FAILED' if failed else ''}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
