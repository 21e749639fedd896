"""A closed-form test model: data from a known Gaussian mixture, its exact v-prediction denoiser on the official
schedule, and the exact probability-flow ODE solution — to measure solvers without weights.

Every latent vector (the C channels of one frame-pixel of a (B, C, F, h, w) tensor) is an independent draw of a
diagonal Gaussian mixture. At timestep t of the official zero-SNR schedule, x_t = a·x0 + s·ε with a = √ᾱ_t and
s = √(1 − ᾱ_t); component k then gives x_t ~ N(a·μ_k, a²σ_k² + s²), so the exact posterior mean is

    x̂0(x_t) = Σ_k r_k(x_t) · (μ_k + a·σ_k²/(a²σ_k² + s²) · (x_t − a·μ_k)),   r_k ∝ w_k · N(x_t; a·μ_k, a²σ_k² + s²),

and the exact v-prediction (what a perfect UNet returns) is v̂ = a·ε̂ − s·x̂0 = (a·x_t − x̂0)/s.

With a = cos φ and s = sin φ the v-target is the velocity dx/dφ, so the probability-flow ODE is dx/dφ = v̂(x, φ),
from φ = π/2 (t = 999, pure noise) to φ = 0 (clean). For one Gaussian (K = 1) it is solved in closed form — the
standardised coordinate is conserved, so noise z ends at μ + σ·z; for K > 1 ``exact_solution`` integrates it with
RK4 in float64 (checked against the closed form at K = 1 by tests/test_solvers.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .schedule import make_scheduler


def official_alphas_cumprod() -> torch.Tensor:
    """ᾱ_t, t = 0 … 999, of the official schedule (float64; ᾱ_999 = 0: zero terminal SNR)."""
    return make_scheduler().alphas_cumprod.to(torch.float64)


@dataclass(frozen=True)
class GaussianMixture:
    """Diagonal Gaussian mixture over C-vectors: means and stds (K, C), weights (K,)."""

    means: torch.Tensor
    stds: torch.Tensor
    weights: torch.Tensor

    @classmethod
    def gaussian(cls, mean: float = 0.3, std: float = 0.7, channels: int = 4) -> GaussianMixture:
        return cls(torch.full((1, channels), mean, dtype=torch.float64),
                   torch.full((1, channels), std, dtype=torch.float64), torch.ones(1, dtype=torch.float64))

    @classmethod
    def default(cls, channels: int = 4) -> GaussianMixture:
        """Three well-separated components at latent scale (std ≈ 1): a clearly non-linear denoiser."""
        generator = torch.Generator().manual_seed(0)
        means = torch.tensor([-1.2, 0.2, 1.4], dtype=torch.float64)[:, None] + 0.3 * torch.randn(
            3, channels, generator=generator, dtype=torch.float64)
        stds = torch.tensor([0.15, 0.35, 0.25], dtype=torch.float64)[:, None].expand(3, channels).clone()
        return cls(means, stds, torch.tensor([0.3, 0.45, 0.25], dtype=torch.float64))

    def x0_hat(self, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """E[x0 | x_t] for x (B, C, ...) at ᾱ_t = alpha_bar, float64."""
        x = x.to(torch.float64).movedim(1, -1).unsqueeze(-2)  # (..., 1, C)
        a, s2 = math.sqrt(alpha_bar), 1.0 - alpha_bar
        var = a * a * self.stds**2 + s2  # (K, C)
        logp = (-0.5 * ((x - a * self.means) ** 2 / var + var.log()).sum(-1)) + self.weights.log()  # (..., K)
        r = torch.softmax(logp, dim=-1).unsqueeze(-1)  # (..., K, 1)
        per_component = self.means + a * self.stds**2 / var * (x - a * self.means)  # (..., K, C)
        return (r * per_component).sum(-2).movedim(-1, 1)

    def v_hat(self, x: torch.Tensor, alpha_bar: float) -> torch.Tensor:
        """The exact v-prediction (a·x − x̂0)/s, float64."""
        a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        return (a * x.to(torch.float64) - self.x0_hat(x, alpha_bar)) / s

    def denoiser(self, alphas_cumprod: torch.Tensor | None = None, calls: list | None = None):
        """``denoise(x, t, frames) -> v`` for the window samplers: the exact v-prediction at the integer timestep
        (the true, zero-SNR ᾱ table), float32; ``calls`` (a list) counts the calls."""
        table = official_alphas_cumprod() if alphas_cumprod is None else alphas_cumprod

        def denoise(x: torch.Tensor, t, frames) -> torch.Tensor:
            if calls is not None:
                calls.append(t)
            return self.v_hat(x, float(table[int(round(float(t)))])).to(torch.float32)

        return denoise

    def exact_solution(self, noise: torch.Tensor, steps: int = 2000) -> torch.Tensor:
        """The probability-flow ODE's clean end point for initial noise (at t = 999, φ = π/2), float64: closed form
        for one component, else RK4 in φ with ``steps`` steps."""
        if len(self.weights) == 1:
            shape = (1, -1) + (1,) * (noise.ndim - 2)
            return self.means[0].reshape(shape) + self.stds[0].reshape(shape) * noise.to(torch.float64)
        return self.rk4(noise, steps)

    def rk4(self, noise: torch.Tensor, steps: int = 2000) -> torch.Tensor:
        """dx/dφ = v̂(x, φ) from π/2 to 0 by classical RK4 (ᾱ = cos²φ), float64."""

        def f(x, phi):  # at φ = 0 (s = 0) the limit, taken just above it
            return self.v_hat(x, math.cos(max(phi, 1e-6)) ** 2)

        x, h = noise.to(torch.float64), -(math.pi / 2) / steps
        for i in range(steps):
            phi = math.pi / 2 + i * h
            k1 = f(x, phi)
            k2 = f(x + 0.5 * h * k1, phi + 0.5 * h)
            k3 = f(x + 0.5 * h * k2, phi + 0.5 * h)
            k4 = f(x + h * k3, phi + h)
            x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return x


def solver_error(mixture: GaussianMixture, scheduler_name: str, steps: int, noise: torch.Tensor,
                 exact: torch.Tensor, windows: int | None = None) -> tuple[float, int]:
    """RMS error of the pack's window sampler with ``scheduler_name`` at ``steps`` steps against the exact solution,
    and the denoiser calls it made. ``windows``: window length along the frame axis (None: one window)."""
    from functools import partial

    from .context import weights_flat, windows_overlap
    from .sampler import sample_windows
    from .schedule import get_timesteps

    calls: list = []
    frames = noise.shape[2]
    length = windows or frames
    windows_fn = partial(windows_overlap, length=length, overlap=min(length // 4, length - 1)) if windows else (
        lambda n, step_index=0: [list(range(n))])
    out = sample_windows(mixture.denoiser(calls=calls), noise, get_timesteps(steps, scheduler_name), windows_fn,
                         weights_flat, make_scheduler(scheduler_name))
    error = (out.to(torch.float64) - exact).pow(2).mean().sqrt().item()
    return error, len(calls)
