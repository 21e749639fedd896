"""The official DDIM zero-SNR schedule (diffusers' ``DDIMScheduler``, official config): parity with the golden tables
and step checks, the step against closed-form DDIM in float64, re-noising."""

from __future__ import annotations

import json

import pytest
import torch

from emoji_model.sampling.schedule import (
    OFFICIAL_SCHEDULER_CONFIG,
    get_timesteps,
    make_scheduler,
    prev_timestep,
    renoise,
)

TOL = 1e-6


@pytest.fixture(scope="module")
def table(golden_scheduler_dir) -> dict:
    return json.loads((golden_scheduler_dir / "ddim_zero_snr.json").read_text())


@pytest.fixture(scope="module")
def tensors(golden_scheduler_dir) -> dict:
    from safetensors.torch import load_file

    return load_file(str(golden_scheduler_dir / "ddim_zero_snr.safetensors"))


# ---- parity with the official scheduler ---------------------------------------------------------------------------


def test_config_is_the_official_one(table):
    config = make_scheduler().config
    for key, value in table["config"].items():
        if not key.startswith("_"):
            assert config[key] == value, key
    assert {k: OFFICIAL_SCHEDULER_CONFIG[k] for k in table["kwargs"]} == table["kwargs"]
    assert make_scheduler().init_noise_sigma == table["init_noise_sigma"]


def test_alphas_cumprod_and_betas_match(tensors, table):
    alphas = make_scheduler().alphas_cumprod
    assert alphas.dtype == torch.float32 and alphas.shape == (1000,)
    assert torch.allclose(alphas, tensors["alphas_cumprod"], atol=TOL, rtol=0)
    # β_t = 1 − ᾱ_t/ᾱ_{t−1} in float32: the golden's and ours are both ~7e-6 from float64 near t = 999, and differ
    # by up to 3e-6 between torch versions (2.13 made the golden)
    assert torch.allclose(make_scheduler().betas, tensors["betas"], atol=1e-5, rtol=0)
    assert alphas[999].item() == table["alphas_cumprod_at_999"] == 0.0  # zero terminal SNR
    assert make_scheduler().final_alpha_cumprod.item() == tensors["final_alpha_cumprod"].item() == 1.0


@pytest.mark.parametrize("steps", [3, 4, 30])
def test_timesteps_match(steps, table, tensors):
    timesteps = get_timesteps(steps)
    assert timesteps.dtype == torch.int64
    assert timesteps.tolist() == table["timesteps"][str(steps)] == tensors[f"timesteps_{steps}"].tolist()


def scheduler_for(steps: int):
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    return scheduler


@pytest.mark.parametrize("index", range(4))
def test_step_matches_the_golden_step_checks(index, tensors):
    model_output, t, sample = (tensors[f"step{index}.{key}"] for key in ("model_output", "t", "sample"))
    assert int(t) == get_timesteps(4)[index]
    out = scheduler_for(4).step(model_output, int(t), sample, eta=0.0)
    assert (out.prev_sample - tensors[f"step{index}.prev_sample"]).abs().max() <= TOL
    assert (out.pred_original_sample - tensors[f"step{index}.pred_original_sample"]).abs().max() <= TOL


def test_step_replays_the_official_pipeline_run(golden_pipeline_run):
    """Teacher forcing on run1: the guided v-prediction of each step → that step's latents."""
    _, run = golden_pipeline_run("run1_official_call")
    scheduler, x = scheduler_for(4), run["init_latents"]
    for index, t in enumerate(run["timesteps"].tolist()):
        out = scheduler.step(run[f"step{index}.model_output"], t, x, eta=0.0)
        assert (out.prev_sample - run[f"step{index}.prev_sample"]).abs().max() <= TOL
        assert (out.pred_original_sample - run[f"step{index}.pred_original_sample"]).abs().max() <= TOL
        x = run[f"step{index}.prev_sample"]


@pytest.mark.parametrize("steps", [1, 4, 7, 30, 1000])
def test_step_equals_closed_form_ddim_in_float64(steps, tensors):
    """DDIM eq. 12 from a v-prediction on the official ᾱ table, landing on ``prev_timestep`` (clean below 0): at 7
    steps a step from t lands on t − 142, not on the next listed timestep, which would be off by ~1e-3."""
    alphas = tensors["alphas_cumprod"].double()
    scheduler = scheduler_for(steps)
    generator = torch.Generator().manual_seed(steps)
    x = torch.randn(1, 4, 3, 2, 2, generator=generator)
    for t in get_timesteps(steps).tolist()[:: max(1, steps // 7)] + [get_timesteps(steps)[-1].item()]:
        v = torch.randn(x.shape, generator=generator)
        t_prev = prev_timestep(t, steps)
        a, a_prev = alphas[t], alphas[t_prev] if t_prev >= 0 else torch.tensor(1.0, dtype=torch.float64)
        x0 = a.sqrt() * x.double() - (1 - a).sqrt() * v.double()
        eps = a.sqrt() * v.double() + (1 - a).sqrt() * x.double()
        out = scheduler.step(v, t, x, eta=0.0)
        assert out.prev_sample.dtype == out.pred_original_sample.dtype == torch.float32
        assert (out.pred_original_sample - x0).abs().max() <= 1e-5
        assert (out.prev_sample - (a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps)).abs().max() <= 1e-5
        x = out.prev_sample


def test_prev_timestep_follows_diffusers_rule():
    assert [prev_timestep(t, 4) for t in get_timesteps(4).tolist()] == [749, 499, 249, -1]
    assert prev_timestep(966, 30) == 933  # not 932, the next listed timestep: the official (diffusers) rule
    assert prev_timestep(32, 30) == -1  # the official 30 steps end clean
    assert prev_timestep(142, 7) == 0  # … 7 steps end at t = 0 (documented quirk)


def test_one_step_is_a_single_x0_prediction_from_pure_noise():
    assert get_timesteps(1).tolist() == [999]
    assert prev_timestep(999, 1) == -1
    generator = torch.Generator().manual_seed(1)
    x, v = torch.randn(2, 4, 3, 2, 2, generator=generator), torch.randn(2, 4, 3, 2, 2, generator=generator)
    out = scheduler_for(1).step(v, 999, x, eta=0.0)
    assert torch.equal(out.pred_original_sample, -v) and torch.equal(out.prev_sample, out.pred_original_sample)


@pytest.mark.parametrize("steps", [0, -1, 1001, 2.5, 2.0, True, None, "4"])
def test_bad_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match="steps must be an integer"):
        get_timesteps(steps)
    with pytest.raises(ValueError, match="steps must be an integer"):
        prev_timestep(999, steps)


# ---- re-noising ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 1, 249, 500, 932, 998])
def test_renoise_is_the_forward_process_of_the_official_table(t, tensors):
    generator = torch.Generator().manual_seed(t)
    x0, noise = torch.randn(1, 4, 3, 2, 2, generator=generator), torch.randn(1, 4, 3, 2, 2, generator=generator)
    a = tensors["alphas_cumprod"].double()[t]
    out = renoise(x0.half(), noise.half(), t, make_scheduler())
    assert out.dtype == torch.float32  # half inputs are re-noised in float32
    assert (out - (a.sqrt() * x0.half().double() + (1 - a).sqrt() * noise.half().double())).abs().max() <= TOL


def test_renoise_ends():
    x0, noise = torch.randn(3, 5), torch.randn(3, 5)
    assert torch.equal(renoise(x0, noise, 999, make_scheduler()), noise)  # zero SNR: pure noise
    assert torch.equal(renoise(x0, noise, -1, make_scheduler()), x0)  # after the last step: clean


@pytest.mark.parametrize("steps", [4, 7])
def test_a_step_lands_on_the_trajectory_at_prev_timestep(steps):
    """With v computed from the true (x0, ε) of x_t, a step lands on renoise(x0, ε, prev_timestep(t))."""
    alphas, scheduler = make_scheduler().alphas_cumprod, scheduler_for(steps)
    x0, eps = torch.randn(4, 6), torch.randn(4, 6)
    for t in get_timesteps(steps).tolist():
        a = alphas[t]
        x = renoise(x0, eps, t, scheduler)
        out = scheduler.step(a.sqrt() * eps - (1 - a).sqrt() * x0, t, x, eta=0.0)
        assert (out.pred_original_sample - x0).abs().max() <= 1e-5
        assert (out.prev_sample - renoise(x0, eps, prev_timestep(t, steps), scheduler)).abs().max() <= 1e-5
