"""Fewer UNet calls, measured without weights: each solver's error against the exact solution, per number of calls.

The closed-form test model (``emoji_model.sampling.closed_form``): every latent vector (4 channels of one
frame-pixel) drawn from a known Gaussian mixture, its exact v-prediction denoiser on the official zero-SNR trailing
schedule, and the exact probability-flow ODE end point (closed form for one Gaussian; RK4 in float64 for the mixture).
The solvers (diffusers' DDIM, DPM-Solver++ 2M, UniPC, Euler with the official betas/zero-SNR/v-prediction/trailing
config) run through the pack's window sampler (``sample_windows``, overlapping windows of 8 frames fused per frame,
one denoiser call per window and step) from the same noise. The table: RMS error of the sampled clean latents per
number of steps (= UNet calls per window, ×2 with CFG); then the fewest steps with which each solver matches DDIM-30's
error; ``schedule.SUGGESTED_STEPS`` is the larger of the two models' counts (the mixture alone asks fewer).

Run: python bench/steps.py [--steps 4 5 6 …] [--frames 16] [--side 8]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from emoji_model.sampling.closed_form import GaussianMixture, solver_error  # noqa: E402
from emoji_model.sampling.schedule import SCHEDULERS, SUGGESTED_STEPS  # noqa: E402

STEPS = (3, 4, 5, 6, 7, 8, 9, 10, 12, 14, 16, 18, 20, 25, 30, 40, 50)


def table(mixture: GaussianMixture, noise: torch.Tensor, steps, window: int) -> dict[str, dict[int, float]]:
    exact = mixture.exact_solution(noise)
    return {name: {n: solver_error(mixture, name, n, noise, exact, window)[0] for n in steps} for name in SCHEDULERS}


def matching(errors: dict[str, dict[int, float]], reference: float) -> dict[str, int | None]:
    """The fewest steps with an error at most ``reference`` (None: not within the table)."""
    return {name: next((n for n, e in sorted(row.items()) if e <= reference), None) for name, row in errors.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=list(STEPS))
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--side", type=int, default=8, help="latent pixels per side")
    parser.add_argument("--window", type=int, default=8)
    args = parser.parse_args()
    steps = sorted(set(args.steps) | {30})
    noise = torch.randn(1, 4, args.frames, args.side, args.side, generator=torch.Generator().manual_seed(12580))
    print(f"{noise[0, 0].numel()} latent vectors, windows of {args.window} frames (overlap {args.window // 4}); "
          "RMS error of the clean latents against the exact ODE solution")
    suggested: dict[str, int] = {}
    for label, mixture in (("one Gaussian (closed form)", GaussianMixture.gaussian()),
                           ("Gaussian mixture, 3 components (RK4 reference)", GaussianMixture.default())):
        start = time.perf_counter()
        errors = table(mixture, noise, steps, args.window)
        print(f"\n{label} ({time.perf_counter() - start:.0f} s)")
        print(f"{'steps':>8s}" + "".join(f"{name:>11s}" for name in errors))
        for n in steps:
            print(f"{n:8d}" + "".join(f"{errors[name][n]:11.2e}" for name in errors))
        needed = matching(errors, errors["ddim"][30])
        print("steps to match DDIM-30 (" + f"{errors['ddim'][30]:.2e}): "
              + ", ".join(f"{name} {n if n is not None else '> ' + str(max(steps))}" for name, n in needed.items()))
        for name, n in needed.items():
            suggested[name] = max(suggested.get(name, 0), n or 10**6)
    print(f"\nsuggested (the larger of the two): {suggested}; schedule.SUGGESTED_STEPS: {SUGGESTED_STEPS}")


if __name__ == "__main__":
    main()
