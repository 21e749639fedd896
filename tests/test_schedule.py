"""The official DDIM zero-SNR schedule: parity with the golden tables and step checks, the pure step and re-noising."""

from __future__ import annotations

import json

import pytest
import torch

from emoji_model.sampling.schedule import (
    OFFICIAL_SCHEDULER_CONFIG,
    ddim_step,
    get_timesteps,
    make_scheduler,
    official_alphas_cumprod,
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
    alphas = official_alphas_cumprod()
    assert alphas.dtype == torch.float32 and alphas.shape == (1000,)
    assert torch.allclose(alphas, tensors["alphas_cumprod"], atol=TOL, rtol=0)
    assert torch.allclose(make_scheduler().betas, tensors["betas"], atol=TOL, rtol=0)
    assert alphas[999].item() == table["alphas_cumprod_at_999"] == 0.0  # zero terminal SNR
    assert make_scheduler().final_alpha_cumprod.item() == tensors["final_alpha_cumprod"].item() == 1.0


@pytest.mark.parametrize("steps", [3, 4, 30])
def test_timesteps_match(steps, table, tensors):
    timesteps = get_timesteps(steps)
    assert timesteps.dtype == torch.int64
    assert timesteps.tolist() == table["timesteps"][str(steps)] == tensors[f"timesteps_{steps}"].tolist()


@pytest.mark.parametrize("index", range(4))
def test_pure_step_matches_the_golden_step_checks(index, tensors):
    t = int(tensors[f"step{index}.t"])
    assert t == get_timesteps(4)[index]
    x_prev, x0 = ddim_step(
        tensors[f"step{index}.model_output"], t, prev_timestep(t, 4), tensors[f"step{index}.sample"],
        official_alphas_cumprod(),
    )
    assert (x_prev - tensors[f"step{index}.prev_sample"]).abs().max() <= TOL
    assert (x0 - tensors[f"step{index}.pred_original_sample"]).abs().max() <= TOL


@pytest.mark.parametrize("index", range(4))
def test_diffusers_scheduler_matches_the_golden_step_checks(index, tensors):
    scheduler = make_scheduler()
    scheduler.set_timesteps(4)
    model_output, t, sample = (tensors[f"step{index}.{key}"] for key in ("model_output", "t", "sample"))
    out = scheduler.step(model_output, t, sample, eta=0.0)
    assert (out.prev_sample - tensors[f"step{index}.prev_sample"]).abs().max() <= TOL
    assert (out.pred_original_sample - tensors[f"step{index}.pred_original_sample"]).abs().max() <= TOL


def test_pure_step_replays_the_official_pipeline_run(golden_pipeline_run):
    """Teacher forcing on run1: the guided v-prediction of each step → that step's latents."""
    _, run = golden_pipeline_run("run1_official_call")
    x = run["init_latents"]
    for index, t in enumerate(run["timesteps"].tolist()):
        x_prev, x0 = ddim_step(run[f"step{index}.model_output"], t, prev_timestep(t, 4), x, official_alphas_cumprod())
        assert (x_prev - run[f"step{index}.prev_sample"]).abs().max() <= TOL
        assert (x0 - run[f"step{index}.pred_original_sample"]).abs().max() <= TOL
        x = run[f"step{index}.prev_sample"]


# ---- the pure functions against diffusers, any step count -------------------------------------------------------


@pytest.mark.parametrize("steps", [1, 2, 6, 7, 10, 25, 30, 50, 999, 1000])
def test_pure_step_equals_diffusers_step(steps):
    scheduler = make_scheduler()
    scheduler.set_timesteps(steps)
    assert torch.equal(scheduler.timesteps, get_timesteps(steps))
    alphas = official_alphas_cumprod()
    generator = torch.Generator().manual_seed(steps)
    x = torch.randn(1, 4, 3, 2, 2, generator=generator)
    for t in scheduler.timesteps[:: max(1, steps // 7)].tolist() + [scheduler.timesteps[-1].item()]:
        v = torch.randn(x.shape, generator=generator)
        expected = scheduler.step(v, t, x, eta=0.0)
        x_prev, x0 = ddim_step(v, t, prev_timestep(t, steps), x, alphas)
        assert (x_prev - expected.prev_sample).abs().max() <= TOL
        assert (x0 - expected.pred_original_sample).abs().max() <= TOL


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
    x_prev, x0 = ddim_step(v, 999, -1, x, official_alphas_cumprod())
    assert torch.equal(x0, -v) and torch.equal(x_prev, x0)


@pytest.mark.parametrize("steps", [0, -1, 1001, 2.5, 2.0, True, None, "4"])
def test_bad_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match="steps must be an integer"):
        get_timesteps(steps)
    with pytest.raises(ValueError, match="steps must be an integer"):
        prev_timestep(999, steps)


def test_step_computes_in_float32_for_half_inputs():
    x = torch.randn(1, 4, 2, 2, 2)
    v = torch.randn(1, 4, 2, 2, 2)
    x_prev, x0 = ddim_step(v.half(), 749, 499, x.half(), official_alphas_cumprod())
    assert x_prev.dtype == x0.dtype == torch.float32
    reference, _ = ddim_step(v.half().float(), 749, 499, x.half().float(), official_alphas_cumprod())
    assert torch.equal(x_prev, reference)


# ---- re-noising ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0, 1, 249, 500, 932, 998, 999])
def test_renoise_equals_add_noise(t):
    generator = torch.Generator().manual_seed(t)
    x0, noise = torch.randn(1, 4, 3, 2, 2, generator=generator), torch.randn(1, 4, 3, 2, 2, generator=generator)
    expected = make_scheduler().add_noise(x0, noise, torch.tensor([t]))
    assert (renoise(x0, noise, t, official_alphas_cumprod()) - expected).abs().max() <= TOL


def test_renoise_ends():
    x0, noise = torch.randn(3, 5), torch.randn(3, 5)
    alphas = official_alphas_cumprod()
    assert torch.equal(renoise(x0, noise, 999, alphas), noise)  # zero SNR: pure noise
    assert torch.equal(renoise(x0, noise, -1, alphas), x0)  # after the last step: clean


def test_ddim_step_keeps_a_consistent_trajectory():
    """With v computed from the true (x0, ε) of x_t, a step lands exactly on renoise(x0, ε, t_prev)."""
    alphas = official_alphas_cumprod()
    x0, eps = torch.randn(4, 6), torch.randn(4, 6)
    for t, t_prev in [(999, 749), (749, 499), (500, 3), (249, -1)]:
        a = alphas[t]
        x = renoise(x0, eps, t, alphas)
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        x_prev, pred_x0 = ddim_step(v, t, t_prev, x, alphas)
        assert (pred_x0 - x0).abs().max() <= 1e-5
        assert (x_prev - renoise(x0, eps, t_prev, alphas)).abs().max() <= 1e-5
