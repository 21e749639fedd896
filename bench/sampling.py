"""Sampling long videos: memory that does not grow with the frame count, and the cost of overlapping windows.

1. Peak RSS of ``sampling.animate.sample`` at 32, 128 and 256 frames, each in a fresh process: tiny random
   networks (every official block, widths 32–64), 128×128 px (16×16 latents), overlap windows of 16 (overlap 4),
   2 steps, CFG 3.5, landmark drawings read lazily. The peak is measured from just before ``sample`` (Linux
   ``VmHWM``, reset through ``/proc/self/clear_refs``), then the full-size latent buffers the sampler needs are
   taken off: ``c × latents``, with c measured in its own process as the sampler's peak over the size of one
   (1, 4, F, h, w) float32 tensor with a free denoiser at 4096 frames. What is left must be flat in F (target: the
   three within 25 % of each other).
2. Seconds per frame·step of ``overlap`` windows against ``official`` windows, same networks, 64 frames, 2 steps,
   window 16: overlapping windows denoise more frames per step (stride 12 instead of 16).

Run: ./dev bench sampling [--sizes 32 128 256] [--frames 64] [--steps 2]

Measured (2 shared cores, another engineer's jobs running, load ~4):
  sampler's full-size buffers at peak: ~7 × the latents (diffusers' DDIMScheduler.step makes four temporaries);
  peak beyond them: 32 frames 25.4 MB, 128 frames 24.3 MB, 256 frames 26.8 MB — spread 9.5 %;
  official 23.2 ms, overlap 30.8 ms per frame·step: 1.33× (1.38× the window calls: 11 against 8).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SIZE = 128  # px: 16×16 latents
WINDOW, OVERLAP = 16, 4


def tiny_networks():
    from torch import nn

    from emoji_model.checkpoints import FollowYourEmojiNetworks
    from emoji_model.networks import (
        GuiderConfig,
        MotionModuleConfig,
        UNet3DConfig,
        UNetConfig,
        build_guider,
        build_referencenet,
        build_unet3d,
    )

    unet = UNetConfig(block_out_channels=(32, 32, 32, 64), num_attention_heads=4, norm_num_groups=16,
                      cross_attention_dim=32, clip_dim=16)
    torch.manual_seed(0)
    guider = build_guider(GuiderConfig(block_out_channels=(8, 16, 24, 32), conditioning_embedding_channels=32))
    nn.init.normal_(guider.conv_out.weight, std=0.05)
    networks = FollowYourEmojiNetworks(build_referencenet(unet), build_unet3d(UNet3DConfig(unet, MotionModuleConfig(
        num_attention_heads=4))), guider, files=None)
    return networks.requires_grad_(False).eval()


class LazyLandmarks:
    """(F, H, W, 3) uint8 drawings made when read (a moving square), like ``landmarks.draw.Drawings``."""

    def __init__(self, num_frames: int):
        self.shape = (num_frames, SIZE, SIZE, 3)

    def __getitem__(self, frames):
        import numpy as np

        out = np.zeros((len(frames), SIZE, SIZE, 3), np.uint8)
        for i, f in enumerate(frames):
            out[i, (3 * f) % 100 : (3 * f) % 100 + 16, (5 * f) % 100 : (5 * f) % 100 + 16] = (255, 60, 10)
        return out


def reference(networks):
    from emoji_model.sampling.animate import encode_reference

    image = torch.linspace(0, 255, SIZE * SIZE * 3).reshape(SIZE, SIZE, 3).to(torch.uint8).numpy()
    return encode_reference(
        networks, image, vae_encode=lambda x: torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4],
        clip_encode=lambda p: p.flatten(2)[:, :, :80].reshape(1, 15, 16), width=SIZE, height=SIZE, clip_size=32)


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def child_memory(num_frames: int, steps: int) -> dict:
    from emoji_model.sampling.animate import SamplingOptions, sample

    networks = tiny_networks()
    ref = reference(networks)
    options = SamplingOptions(steps=steps, windows="overlap", window_length=WINDOW, overlap=OVERLAP)
    sample(networks, ref, LazyLandmarks(WINDOW), options)  # warm-up: one-time allocations are not the video's
    _reset_peak()
    before = _status("VmRSS")
    out = sample(networks, ref, LazyLandmarks(num_frames), options)
    return {"frames": num_frames, "peak": _status("VmHWM") - before, "latents": out.numel() * 4}


def child_latent_copies(steps: int, num_frames: int = 4096) -> dict:
    """The sampler's own peak with a free denoiser, in units of one full-size latent tensor."""
    from functools import partial

    from emoji_model.sampling.context import weights_pyramid, windows_overlap
    from emoji_model.sampling.sampler import sample_windows
    from emoji_model.sampling.schedule import get_timesteps

    noise = torch.randn(1, 4, num_frames, SIZE // 8, SIZE // 8)
    windows_fn = partial(windows_overlap, length=WINDOW, overlap=OVERLAP)
    sample_windows(lambda x, t, f: torch.zeros_like(x), noise[:, :, :64], get_timesteps(steps), windows_fn,
                   weights_pyramid)
    _reset_peak()
    before = _status("VmRSS")
    sample_windows(lambda x, t, f: torch.zeros_like(x), noise, get_timesteps(steps), windows_fn, weights_pyramid)
    return {"copies": (_status("VmHWM") - before) / (noise.numel() * 4)}


def child_speed(num_frames: int, steps: int) -> dict:
    from emoji_model.sampling.animate import SamplingOptions, sample, window_plan

    networks = tiny_networks()
    ref = reference(networks)
    result = {}
    for mode in ("official", "overlap", "official", "overlap"):  # interleaved: load changes hit both
        options = SamplingOptions(steps=steps, windows=mode, window_length=WINDOW, overlap=OVERLAP)
        start = time.perf_counter()
        sample(networks, ref, LazyLandmarks(num_frames), options)
        seconds = time.perf_counter() - start
        calls = sum(window_plan(options, num_frames))
        best = result.get(mode, (float("inf"), calls))[0]
        result[mode] = (min(best, seconds), calls)
    return result


def _in_fresh_process(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    if done.returncode:
        raise SystemExit(f"child {args} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--frames", type=int, default=64, help="frames of the speed comparison")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, *rest = args.child
        functions = {"memory": child_memory, "copies": child_latent_copies, "speed": child_speed}
        print(json.dumps(functions[kind](*map(int, rest))))
        return

    mb = 1 / 2**20
    copies = _in_fresh_process("copies", str(args.steps))["copies"]
    print(f"sampler's full-size latent buffers at peak: {copies:.1f} × the latents (free denoiser, 4096 frames)")
    beyond = []
    for n in args.sizes:
        r = _in_fresh_process("memory", str(n), str(args.steps))
        beyond.append(r["peak"] - copies * r["latents"])
        print(f"{n:4d} frames: peak +{r['peak'] * mb:7.2f} MB, latents {r['latents'] * mb:6.2f} MB, "
              f"beyond {copies:.1f}× latents {beyond[-1] * mb:7.2f} MB")
    spread = (max(beyond) - min(beyond)) / max(beyond)
    print(f"spread beyond the latents: {spread:.1%} (max − min over max; target ≤ 25%)")

    speed = _in_fresh_process("speed", str(args.frames), str(args.steps))
    per = {mode: seconds / (args.frames * args.steps) for mode, (seconds, _) in speed.items()}
    for mode, (seconds, calls) in speed.items():
        print(f"{mode:9s}: {seconds:6.2f} s, {calls} window calls, {per[mode] * 1e3:6.1f} ms per frame·step")
    frames_ratio = speed["overlap"][1] / speed["official"][1]
    print(f"overlap / official: {per['overlap'] / per['official']:.2f}× the time per frame·step "
          f"({frames_ratio:.2f}× the window calls)")


if __name__ == "__main__":
    main()
