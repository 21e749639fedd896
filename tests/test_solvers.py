"""Solvers other than the official DDIM, on the closed-form test model (``sampling.closed_form``): each converges to
the exact probability-flow ODE solution as its steps grow, through the pack's window sampler; the test model itself
is checked (RK4 against the closed form); bad scheduler names and incapable schedulers are refused with reasons."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

from emoji_model.sampling.animate import SamplingOptions, check_options
from emoji_model.sampling.closed_form import GaussianMixture, official_alphas_cumprod, solver_error
from emoji_model.sampling.schedule import (
    REFUSED,
    SCHEDULERS,
    SUGGESTED_STEPS,
    check_scheduler_class,
    get_timesteps,
    make_scheduler,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")
NOISE = torch.randn(1, 4, 8, 4, 4, generator=torch.Generator().manual_seed(12580))
MODELS = {"gaussian": GaussianMixture.gaussian(), "mixture": GaussianMixture.default()}


@pytest.fixture(scope="module")
def exact():
    return {name: model.exact_solution(NOISE, steps=800) for name, model in MODELS.items()}


def test_rk4_reference_is_the_closed_form_for_one_gaussian():
    model = MODELS["gaussian"]
    assert (model.rk4(NOISE, 400) - model.exact_solution(NOISE)).abs().max() <= 1e-8


def test_the_denoiser_is_exact():
    """Two identical components are one Gaussian; at ᾱ = 0 the prediction is −E[x0]; a clean sample of a narrow
    Gaussian is denoised to itself."""
    one = GaussianMixture.gaussian(0.2, 0.5)
    two = GaussianMixture(one.means.repeat(2, 1), one.stds.repeat(2, 1), torch.tensor([0.5, 0.5], dtype=torch.float64))
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    for alpha_bar in (0.01, 0.5, 0.99):
        a, s2 = alpha_bar**0.5, 1 - alpha_bar
        linear = 0.2 + a * 0.25 / (a * a * 0.25 + s2) * (x - a * 0.2)
        assert torch.allclose(one.x0_hat(x, alpha_bar), linear) and torch.allclose(two.x0_hat(x, alpha_bar), linear)
    mixture = MODELS["mixture"]
    assert torch.allclose(mixture.v_hat(x, 0.0), -(mixture.weights @ mixture.means)[None, :, None].expand_as(x))
    assert official_alphas_cumprod()[-1] == 0  # the table the denoiser reads: zero terminal SNR


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_each_solver_converges_to_the_exact_solution(name, model, exact):
    """Step counts dividing 1000 (see the next test for the others)."""
    errors = [solver_error(MODELS[model], name, steps, NOISE, exact[model])[0] for steps in (4, 20, 100, 250)]
    assert all(b < 0.75 * a for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.03, errors  # within 3 % of the data's spread (~1) at 250 steps


def test_official_ddim_drifts_when_the_steps_do_not_divide_1000(exact):
    """The official (diffusers) DDIM steps from t to t − 1000 // N, but with trailing spacing the next step runs at
    its own listed timestep, lower when N does not divide 1000: at 256 steps (t − 3, then evaluated 3.9 lower) every
    step lands off the trajectory and the error grows past that of 64 steps. Kept (official parity); the other solvers
    step between their own timesteps and do not drift."""
    model, target = MODELS["mixture"], exact["mixture"]
    assert solver_error(model, "ddim", 256, NOISE, target)[0] > solver_error(model, "ddim", 64, NOISE, target)[0]
    assert solver_error(model, "dpmpp_2m", 256, NOISE, target)[0] < solver_error(model, "dpmpp_2m", 64, NOISE,
                                                                                 target)[0]


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_windows_and_history_cover_every_frame(name, exact):
    """The fused prediction covers all frames, so a multistep solver's history on the whole tensor is right: the
    window sampler gives the one-window result, with one call per window and step."""
    model = MODELS["mixture"]
    whole, calls = solver_error(model, name, 6, NOISE, exact["mixture"])
    windowed, windowed_calls = solver_error(model, name, 6, NOISE, exact["mixture"], windows=4)
    assert calls == 6 and windowed_calls > calls
    assert abs(whole - windowed) <= 1e-6


def test_suggested_steps_match_ddim_30(exact):
    """The table's claim (bench/steps.py), at this test's noise: each solver at its suggested steps is at least as
    close to the exact solution as DDIM at 30 (both test models)."""
    for model in MODELS:
        reference = solver_error(MODELS[model], "ddim", 30, NOISE, exact[model])[0]
        for name, steps in SUGGESTED_STEPS.items():
            assert solver_error(MODELS[model], name, steps, NOISE, exact[model])[0] <= reference * 1.05, (model, name)
    assert SUGGESTED_STEPS["dpmpp_2m"] < 30 and SUGGESTED_STEPS["unipc"] < 30


def test_every_scheduler_has_the_official_config():
    for name in SCHEDULERS:
        config = make_scheduler(name).config
        assert config.prediction_type == "v_prediction" and config.timestep_spacing == "trailing"
        assert config.rescale_betas_zero_snr and config.beta_schedule == "scaled_linear"
        assert get_timesteps(10, name)[0] == 999
    assert SamplingOptions().scheduler == "ddim"  # the official stays the default


def test_unknown_scheduler_lists_the_names():
    with pytest.raises(ValueError, match="Unknown scheduler 'karras'.*ddim, dpmpp_2m, unipc, euler"):
        make_scheduler("karras")
    with pytest.raises(ValueError, match="Unknown scheduler"):
        check_options(dataclasses.replace(SamplingOptions(), scheduler="karras"))


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_schedulers_that_cannot_sample_these_weights_are_refused_with_the_reason(name):
    with pytest.raises(ValueError, match=f"scheduler '{name}'.*refused: .*(zero terminal SNR|ancestral|v-pred|trailing|"
                                         "calls the model)"):
        make_scheduler(name)


def test_check_scheduler_class_names_what_is_missing():
    class NoV:
        order = 1

        def __init__(self, rescale_betas_zero_snr=False, timestep_spacing="leading"):
            pass

    with pytest.raises(ValueError, match="v-predictions"):
        check_scheduler_class(NoV)
    assert "rescale_betas_zero_snr" in inspect.signature(make_scheduler("unipc").__class__.__init__).parameters
