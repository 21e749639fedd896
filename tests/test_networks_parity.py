"""Our networks, filled with the tiny official weights (``.pth`` and ``.safetensors``, strict), against the official
code's module goldens (fp32, CPU).

Bounds: ``golden_atol(network)`` = 4 × the network's worst fp32-vs-fp64 error in the goldens' summary.json (see
conftest): guider 7.1e-8, ReferenceNet 2.7e-5, UNet3D 1.2e-5.
Measured max abs errors, identical for both file formats (Intel Xeon, AVX-512, torch 2.14.1 and 2.13.0; an AMD EPYC
gave ReferenceNet features up to 1.2e-5):
- guider: 1.5e-8 (landmark frames), 0 (random input);
- ReferenceNet: 0 on all 16 features, referencenet_cfg and referencenet_t321;
- UNet3D: unet_cfg 1.0e-6 (batch-2 or batch-1 reference), unet_nocfg_8x8 2.4e-6, unet_noref 1.4e-6;
  unet_cfg intermediates: time_embedding and clip_fc 0, block outputs 1.1e-6 .. 3.5e-6 (mid_block).
"""

from __future__ import annotations

import pytest
import torch

from emoji_model.networks import build_guider, build_referencenet, build_unet3d

FEATURE_NAMES = [f"down.{i}" for i in range(6)] + ["mid.0"] + [f"up.{i}" for i in range(9)]


def _read(path) -> dict[str, torch.Tensor]:
    if path.suffix == ".pth":
        return torch.load(path, map_location="cpu", weights_only=True)
    from safetensors.torch import load_file

    return load_file(str(path))


def _filled(module: torch.nn.Module, path) -> torch.nn.Module:
    """Strict load, fp16 values upcast to fp32 (exact)."""
    module.load_state_dict({k: v.float() for k, v in _read(path).items()}, strict=True)
    return module


_BUILT: dict[str, dict[str, torch.nn.Module]] = {}


def _tiny_networks(fmt: str, cfg, weights_dir) -> dict[str, torch.nn.Module]:
    """The three tiny networks with the official weights from one file format (built once per format)."""
    if fmt not in _BUILT:
        _BUILT[fmt] = {
            "guider": _filled(build_guider(cfg.guider), weights_dir / f"lmk_guider.{fmt}"),
            "referencenet": _filled(build_referencenet(cfg.referencenet), weights_dir / f"referencenet.{fmt}"),
            "unet": _filled(build_unet3d(cfg.unet3d), weights_dir / f"unet.{fmt}"),
        }
    return _BUILT[fmt]


@pytest.fixture(scope="module", params=["pth", "safetensors"])
def tiny(request, tiny_network_configs, tiny_weights_dir):
    """Every golden is checked with the weights of both file formats."""
    return _tiny_networks(request.param, tiny_network_configs, tiny_weights_dir)


@pytest.fixture(scope="module")
def tiny_st(tiny_network_configs, tiny_weights_dir):
    """One format suffices for the debugging intermediates and the chained call."""
    return _tiny_networks("safetensors", tiny_network_configs, tiny_weights_dir)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


@torch.no_grad()
def test_guider_matches_golden(tiny, module_golden, golden_atol):
    g, atol = module_golden("guider"), golden_atol("guider")
    assert _max_err(tiny["guider"](g["in_landmarks_uint8"].float() / 255), g["out_landmarks"]) <= atol
    assert _max_err(tiny["guider"](g["in_random"]), g["out_random"]) <= atol
    chunked = tiny["guider"](g["in_random"], frames_per_chunk=3)
    assert _max_err(chunked, g["out_random"]) <= atol


@pytest.mark.parametrize("case", ["referencenet_cfg", "referencenet_t321"])
@torch.no_grad()
def test_referencenet_matches_golden(tiny, module_golden, golden_atol, case):
    g = module_golden(case)
    features = tiny["referencenet"](g["in_sample"], g["in_timestep"], g["in_encoder_hidden_states"])
    assert len(features) == 16
    errors = {name: _max_err(f, g[f"out.{name}"]) for f, name in zip(features, FEATURE_NAMES)}
    assert max(errors.values()) <= golden_atol("referencenet"), errors


def _references(golden: dict, prefix: str = "out.") -> list[torch.Tensor]:
    return [golden[prefix + name] for name in FEATURE_NAMES]


@pytest.mark.parametrize("reference_batch", [2, 1], ids=["ref_batch2", "ref_batch1_cond_only"])
@torch.no_grad()
def test_unet3d_cfg_matches_golden(tiny, module_golden, golden_atol, reference_batch):
    """The official CFG call: [uncond, cond], the uncond half without reference attention. Our uncond shortcut
    (mask) must give it whether the reference holds both rows or only the cond row."""
    g, ref, lmk = module_golden("unet_cfg"), module_golden("referencenet_cfg"), module_golden("guider")
    references = [r[2 - reference_batch :] for r in _references(ref)]
    out = tiny["unet"](
        g["in_sample"], g["in_timestep"], ref["in_encoder_hidden_states"],
        landmark_features=lmk["out_landmarks"].repeat(2, 1, 1, 1, 1),
        reference_features=references, reference_mask=(False, True),
    )
    assert _max_err(out, g["out_sample"]) <= golden_atol("unet3d")


@torch.no_grad()
def test_unet3d_cfg_chain_with_batch1_referencenet(tiny_st, module_golden, golden_atol):
    """The pipeline's intended use: ReferenceNet on the cond row only, landmark features broadcast over the batch."""
    g, ref, lmk = module_golden("unet_cfg"), module_golden("referencenet_cfg"), module_golden("guider")
    features = tiny_st["referencenet"](ref["in_sample"][1:], ref["in_timestep"], ref["in_encoder_hidden_states"][1:])
    out = tiny_st["unet"](
        g["in_sample"], g["in_timestep"], ref["in_encoder_hidden_states"], landmark_features=lmk["out_landmarks"],
        reference_features=features, reference_mask=torch.tensor([False, True]),
    )
    assert _max_err(out, g["out_sample"]) <= golden_atol("unet3d")


@torch.no_grad()
def test_unet3d_cfg_block_intermediates(tiny_st, module_golden, golden_atol):
    """Block outputs (official layout (B, C, F, h, w)), time embedding and clip_fc against the golden hooks."""
    g, ref, lmk = module_golden("unet_cfg"), module_golden("referencenet_cfg"), module_golden("guider")
    unet, frames = tiny_st["unet"], g["in_sample"].shape[2]
    seen: dict[str, torch.Tensor] = {}

    def keep(name):
        def hook(_module, _inputs, output):
            x = output[0] if isinstance(output, tuple) else output
            seen[name] = x.unflatten(0, (-1, frames)).transpose(1, 2) if x.ndim == 4 else x
        return hook

    names = [k.removeprefix("intermediate.") for k in g if k.startswith("intermediate.")]
    handles = [unet.get_submodule(name).register_forward_hook(keep(name)) for name in names]
    try:
        unet(g["in_sample"], g["in_timestep"], ref["in_encoder_hidden_states"],
             landmark_features=lmk["out_landmarks"], reference_features=_references(ref), reference_mask=(False, True))
    finally:
        for handle in handles:
            handle.remove()
    errors = {name: _max_err(seen[name], g[f"intermediate.{name}"]) for name in names}
    assert len(errors) >= 8 and max(errors.values()) <= golden_atol("unet3d"), errors


@torch.no_grad()
def test_unet3d_nocfg_8x8_matches_golden(tiny, module_golden, golden_atol):
    g = module_golden("unet_nocfg_8x8")
    out = tiny["unet"](
        g["in_sample"], g["in_timestep"], g["in_encoder_hidden_states"], landmark_features=g["in_lmk_cond_fea"],
        reference_features=_references(g, "in_reference."),
    )
    assert _max_err(out, g["out_sample"]) <= golden_atol("unet3d")


@torch.no_grad()
def test_unet3d_noref_matches_golden(tiny, module_golden, golden_atol):
    g = module_golden("unet_noref")
    out = tiny["unet"](g["in_sample"], g["in_timestep"], g["in_encoder_hidden_states"])
    assert _max_err(out, g["out_sample"]) <= golden_atol("unet3d")


def test_stored_positional_tables_are_the_computed_ones(tiny_weights_dir):
    """The files' ``pe`` buffers equal our freshly computed table (so files without them can be filled) to within
    float32 rounding of the official formula: sin(p · exp(−2i·ln(10⁴)/C)) for positions p < 32. exp and sin are
    vectorised differently per CPU (AVX2, AVX-512: measured 0 and 9.5e-7); an argument off by a few ulps of
    div_term, times p ≤ 31, moves the value by at most 32 × 2⁻²², which is the bound."""
    from emoji_model.networks import sinusoid_table

    sd = _read(tiny_weights_dir / "unet.safetensors")
    tables = {k: v for k, v in sd.items() if k.endswith(".pos_encoder.pe")}
    assert len(tables) == 42
    for key, table in tables.items():
        assert table.dtype == torch.float32
        computed = sinusoid_table(table.shape[1], table.shape[2])
        assert _max_err(computed, table) <= table.shape[1] * 2**-22, key
