"""The exact speed-ups (``networks.SpeedOptions``) give the same function, each on its own and all together, and the
optional ``torch.compile`` falls back to eager with one warning when it fails.

Tiny random networks (every official block), fp32, CPU; bounds are fp32 rounding (outputs ~1). The golden parity
tests (tests/test_networks_parity.py, tests/test_sampling_parity.py) run with the default speed-ups on; here the
goldens are also checked with every exact speed-up on, and with none. Channels-last is close, not exact.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pytest
import torch
from torch import nn

from emoji_model.checkpoints import FollowYourEmojiNetworks
from emoji_model.networks import (
    GuiderConfig,
    MotionModuleConfig,
    SpeedOptions,
    UNet3DConfig,
    UNetConfig,
    build_guider,
    build_referencenet,
    build_unet3d,
)
from emoji_model.networks.attention import (
    ProjectedContext,
    ProjectedReference,
    ReferenceAttnProcessor,
    SharedContextAttnProcessor,
)
from emoji_model.networks.speed import CompiledOrEager, cpu_heap, use_channels_last
from emoji_model.sampling.animate import Reference, SamplingOptions, sample
from emoji_model.sampling.denoiser import build_denoiser

pytestmark = pytest.mark.usefixtures("one_torch_thread")

UNET = UNetConfig(block_out_channels=(32, 32, 32, 64), num_attention_heads=4, norm_num_groups=16,
                  cross_attention_dim=32, clip_dim=16)
EVERY = dataclasses.replace(SpeedOptions(), cache_landmarks=True)  # every exact one
ALONE = {name: dataclasses.replace(SpeedOptions.none(), **{name: True})
         for name in ("project_once", "constant_uncond", "matmul_projections", "cpu_heap")}


@pytest.fixture(scope="module")
def networks() -> FollowYourEmojiNetworks:
    torch.manual_seed(0)
    guider = build_guider(GuiderConfig(block_out_channels=(8, 16, 24, 32), conditioning_embedding_channels=32))
    nn.init.normal_(guider.conv_out.weight, std=0.05)
    unet = build_unet3d(UNet3DConfig(UNET, MotionModuleConfig(num_attention_heads=4)))
    with torch.no_grad():  # non-zero biases: the uncond row's constant cross-attention is then a real vector
        for module in unet.modules():
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.normal_(0, 0.1)
    return FollowYourEmojiNetworks(build_referencenet(UNET), unet, guider, files=None).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def conditions(networks):
    gen = torch.Generator().manual_seed(1)
    clip = torch.randn(1, 9, 16, generator=gen)
    latent = torch.randn(1, 4, 8, 8, generator=gen)
    with torch.no_grad():
        features = networks.referencenet(latent, 0, clip)
    return {
        "states": torch.cat([torch.zeros_like(clip), clip]),
        "features": features,
        "sample": torch.randn(1, 4, 5, 8, 8, generator=gen).expand(2, -1, -1, -1, -1),
        "lmk": 0.1 * torch.randn(1, 32, 5, 8, 8, generator=gen),
        "reference": Reference(latent, clip, tuple(features), 64, 64),
        "drawings": (torch.rand(7, 64, 64, 3, generator=gen) < 0.05).float(),
    }


def _cfg_call(unet, c, speed: SpeedOptions, prepared: bool = True) -> torch.Tensor:
    use_channels_last(unet, unet.conv_in.weight, speed.channels_last)
    try:
        with torch.no_grad(), cpu_heap(speed.cpu_heap):
            conditions = unet.prepare(c["states"], c["features"], (False, True), speed, project=prepared)
            return unet(c["sample"], 749, landmark_features=c["lmk"], conditions=conditions)
    finally:
        use_channels_last(unet, unet.conv_in.weight, False)


@pytest.mark.parametrize("name", ["all", "every", "none", *ALONE])
def test_each_speed_up_gives_the_plain_call(networks, conditions, name):
    """Against the plain call (the original argument form, nothing prepared) with the same token projections
    (``matmul_projections`` changes the memory format, see the next test)."""
    speed = {"all": SpeedOptions(), "every": EVERY, "none": SpeedOptions.none(), **ALONE}[name]
    plain = _plain(networks.unet, conditions, speed.matmul_projections)
    out = _cfg_call(networks.unet, conditions, speed, prepared=speed.project_once)
    assert out.shape == plain.shape and (out - plain).abs().max() <= 2e-6 * plain.abs().max()


def _plain(unet, c, matmul_projections: bool, dtype=torch.float32) -> torch.Tensor:
    default = unet.speed
    unet.speed = dataclasses.replace(SpeedOptions.none(), matmul_projections=matmul_projections)
    try:
        with torch.no_grad():
            return unet.to(dtype)(c["sample"].to(dtype), 749, c["states"].to(dtype), c["lmk"].to(dtype),
                                  [f.to(dtype) for f in c["features"]], (False, True))
    finally:
        unet.speed = default
        unet.float()


def test_matmul_projections_keep_nchw_and_the_precise_group_norm(networks, conditions):
    """With the 1×1 convolutions on the token view (off), every activation after the first transformer is
    channels-last-strided and torch's NHWC GroupNorm (one-pass variance) moves the output by ~1e-4; the matrix
    products keep NCHW and are closer to float64."""
    exact = _plain(networks.unet, conditions, True, torch.float64)
    on, off = (_plain(networks.unet, conditions, flag) for flag in (True, False))
    error_on, error_off = (on - exact).abs().max(), (off - exact).abs().max()
    assert error_on < error_off <= 1e-3 * exact.abs().max(), (error_on, error_off)


def test_channels_last_is_close_but_not_exact(networks, conditions):
    """Not among the exact ones: torch's NHWC GroupNorm kernel on the CPU takes the variance in one pass, which
    loses digits when a group's mean is large against its spread (measured 4e-4 relative here)."""
    with torch.no_grad():
        plain = networks.unet(conditions["sample"], 749, conditions["states"], conditions["lmk"],
                              conditions["features"], (False, True))
    out = _cfg_call(networks.unet, conditions, dataclasses.replace(SpeedOptions(), channels_last=True))
    assert (out - plain).abs().max() <= 2e-3 * plain.abs().max()


def test_prepared_conditions_serve_many_calls(networks, conditions):
    with torch.no_grad():
        prepared = networks.unet.prepare(conditions["states"], conditions["features"], (False, True))
        once = [networks.unet(conditions["sample"], t, landmark_features=conditions["lmk"], conditions=prepared)
                for t in (999, 500, 3)]
        each = [networks.unet(conditions["sample"], t, conditions["states"], conditions["lmk"],
                              conditions["features"], (False, True)) for t in (999, 500, 3)]
    for a, b in zip(once, each):
        assert (a - b).abs().max() <= 2e-6 * b.abs().max()


def test_prepare_projects_every_layer_and_finds_the_uncond_row(networks, conditions):
    prepared = networks.unet.prepare(conditions["states"], conditions["features"], (False, True))
    contexts = [c for block in prepared.contexts for c in block]
    references = [r for block in prepared.references for r in block]
    assert len(contexts) == len(references) == UNET.num_transformers
    assert all(isinstance(c, ProjectedContext) and c.constant[0] is not None and c.constant[1] is None
               for c in contexts)
    assert all(isinstance(r, ProjectedReference) for r in references)
    plain = networks.unet.prepare(conditions["states"], conditions["features"], (False, True),
                                  SpeedOptions.none(), project=False)
    assert all(isinstance(block, torch.Tensor) for block in plain.contexts)  # the clip_fc output, shared
    with pytest.raises(ValueError, match="not both"):
        networks.unet(conditions["sample"], 1, conditions["states"], conditions=prepared)


def _attention(context_dim=None):
    from diffusers.models.attention_processor import Attention

    torch.manual_seed(3)
    attn = Attention(24, cross_attention_dim=context_dim, heads=3, dim_head=8, bias=False).eval()
    with torch.no_grad():
        attn.to_out[0].bias.normal_()
    return attn


def test_a_row_of_equal_tokens_answers_every_query_with_one_value():
    attn = _attention(context_dim=12)
    attn.set_processor(SharedContextAttnProcessor())
    x = torch.randn(2 * 3, 10, 24)  # 2 rows × 3 frames
    token = torch.randn(1, 1, 12)
    context = torch.cat([token.expand(1, 7, 12), torch.randn(1, 7, 12)])  # row 0: one token repeated (any value)
    with torch.no_grad():
        expected = attn(x, encoder_hidden_states=context)
        projected = ProjectedContext.of(attn, context, (True, False))
        out = attn(x, encoder_hidden_states=projected)
    assert projected.constant[0].shape == (1, 24) and projected.constant[1] is None
    assert (out - expected).abs().max() <= 1e-6


def test_projected_reference_is_the_reference():
    attn = _attention()
    attn.set_processor(ReferenceAttnProcessor())
    x, reference = torch.randn(2 * 3, 10, 24), torch.randn(1, 6, 24)
    with torch.no_grad():
        for mask in (None, (False, True), (True, False)):
            expected = attn(x, reference=reference, reference_mask=mask, frames=3)
            out = attn(x, reference=ProjectedReference.of(attn, reference), reference_mask=mask, frames=3)
            assert (out - expected).abs().max() <= 1e-6


def test_landmark_features_are_kept_per_frame(networks, conditions):
    calls = []
    guider = networks.guider
    handle = guider.register_forward_hook(lambda _m, inputs, _o: calls.append(inputs[0].shape[2]))
    try:
        x = torch.randn(1, 4, 5, 8, 8)
        outs = {}
        for name, speed in (("off", SpeedOptions()), ("on", dataclasses.replace(SpeedOptions(), cache_landmarks=True)),
                            ("no room", dataclasses.replace(SpeedOptions(), cache_landmarks=True,
                                                            landmark_cache_bytes=0))):
            calls.clear()
            denoise = build_denoiser(networks, conditions["reference"], conditions["drawings"], 3.5, speed)
            outs[name] = [denoise(x, 500, frames) for frames in ([0, 1, 2, 3, 4], [2, 3, 4, 5, 6], [0, 1, 2, 3, 4])]
            outs[name + " calls"] = list(calls)
    finally:
        handle.remove()
    assert outs["off calls"] == [5, 5, 5] and outs["no room calls"] == [5, 5, 5]
    assert outs["on calls"] == [5, 2]  # frames 5 and 6 were new; the third window was all kept
    for a, b in zip(outs["on"], outs["off"]):
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()


def test_channels_last_moves_the_weights_once_and_back(networks):
    unet = networks.unet
    use_channels_last(unet, unet.conv_in.weight, True)
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    use_channels_last(unet, unet.conv_in.weight, False)
    assert unet.conv_in.weight.is_contiguous()


def test_cpu_heap_nests_and_restores():
    with cpu_heap(), cpu_heap():
        x = torch.empty(64, 2**20)  # 256 MB from the heap
        del x
    with cpu_heap(False):
        pass


# ---- golden parity with every speed-up on, and with none ------------------------------------------------------


@pytest.mark.parametrize("speed", [EVERY, SpeedOptions.none()], ids=["every", "none"])
def test_unet3d_cfg_golden_with_speed_ups(speed, module_golden, golden_atol, tiny_network_configs, tiny_weights_dir):
    from safetensors.torch import load_file

    from emoji_model.networks import build_unet3d as build

    unet = build(tiny_network_configs.unet3d)
    unet.load_state_dict(load_file(str(tiny_weights_dir / "unet.safetensors")), strict=True)
    g, ref, lmk = module_golden("unet_cfg"), module_golden("referencenet_cfg"), module_golden("guider")
    names = [f"down.{i}" for i in range(6)] + ["mid.0"] + [f"up.{i}" for i in range(9)]
    features = [ref[f"out.{name}"][1:] for name in names]
    c = {"states": ref["in_encoder_hidden_states"], "features": features, "sample": g["in_sample"],
         "lmk": lmk["out_landmarks"]}
    use_channels_last(unet, unet.conv_in.weight, speed.channels_last)
    with torch.no_grad(), cpu_heap(speed.cpu_heap):
        conditions = unet.prepare(c["states"], c["features"], (False, True), speed, project=speed.project_once)
        assert conditions.speed.matmul_projections == speed.matmul_projections
        out = unet(c["sample"], g["in_timestep"], landmark_features=c["lmk"], conditions=conditions)
    assert (out - g["out_sample"]).abs().max() <= golden_atol("unet3d")


# ---- torch.compile: optional, eager with one warning when it fails -------------------------------------------


class _Doubling(nn.Module):
    def forward(self, x):
        if x.ndim != 2:
            raise ValueError("needs a matrix")
        return 2 * x


def test_compile_failing_at_the_first_call_falls_back_once(monkeypatch, caplog):
    def broken(module, **kwargs):
        def compiled(*args, **kw):
            raise RuntimeError("backend compiler failed: no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken)
    model = CompiledOrEager(_Doubling())
    with caplog.at_level(logging.WARNING):
        assert torch.equal(model(torch.ones(2, 2)), 2 * torch.ones(2, 2))
        assert torch.equal(model(torch.ones(2, 2)), 2 * torch.ones(2, 2))
    warnings = [r for r in caplog.records if "torch.compile" in r.getMessage()]
    assert len(warnings) == 1 and "running it eagerly" in warnings[0].getMessage() and model.failed


def test_compile_failing_to_build_falls_back(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: (_ for _ in ()).throw(RuntimeError("no dynamo")))
    with caplog.at_level(logging.WARNING):
        model = CompiledOrEager(_Doubling())
        assert torch.equal(model(torch.ones(1, 3)), 2 * torch.ones(1, 3))
    assert sum("torch.compile" in r.getMessage() for r in caplog.records) == 1


def test_an_error_of_the_call_itself_is_not_a_compile_failure(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", lambda module, **kw: module)  # "compiled" = the module itself
    model = CompiledOrEager(_Doubling())
    with pytest.raises(ValueError, match="needs a matrix"):
        model(torch.ones(3))
    assert not any("torch.compile" in r.getMessage() for r in caplog.records)


def test_sample_with_a_failing_compile_is_the_eager_sample(networks, conditions, monkeypatch, caplog):
    def broken(module, **kwargs):
        return lambda *a, **k: (_ for _ in ()).throw(RuntimeError("inductor: failed"))

    options = SamplingOptions(steps=2, windows="overlap", window_length=4, overlap=1)
    drawings = conditions["drawings"]
    eager = sample(networks, conditions["reference"], drawings, options)
    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING):
        compiled = sample(networks, conditions["reference"], drawings, dataclasses.replace(options, compile=True))
    assert torch.equal(compiled, eager)
    assert sum("torch.compile" in r.getMessage() for r in caplog.records) == 1


def test_default_options_are_the_exact_ones():
    options = SamplingOptions()
    assert options.scheduler == "ddim" and options.compile is False
    assert options.speed.project_once and options.speed.constant_uncond and options.speed.cpu_heap
    assert options.speed.matmul_projections
    assert not options.speed.channels_last and not options.speed.cache_landmarks
    assert np.isfinite(options.cfg)
