"""Full-size construction (meta device) against the official key manifests, plus checks that need no fixtures:
tiny-config shapes, the 32-frame limit, the attention processors against plain attention, the motion module."""

from __future__ import annotations

import json

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from emoji_model.networks import (
    FULL,
    MotionModuleConfig,
    NetworkConfigs,
    UNet3DConfig,
    UNetConfig,
    build_guider,
    build_referencenet,
    build_unet3d,
    motion_config_from_official,
    unet_config_from_official,
)
from emoji_model.networks.attention import ReferenceAttnProcessor, SharedContextAttnProcessor
from emoji_model.networks.motion import MotionModule

TINY_UNET = UNetConfig(block_out_channels=(32, 32, 32, 64), num_attention_heads=4, norm_num_groups=16)
TINY_UNET3D = UNet3DConfig(unet=TINY_UNET, motion=MotionModuleConfig(num_attention_heads=4))
BUILDERS = {"unet": lambda: build_unet3d(FULL.unet3d), "referencenet": lambda: build_referencenet(FULL.referencenet),
            "lmk_guider": lambda: build_guider(FULL.guider)}


def _on_meta(name: str) -> torch.nn.Module:
    with torch.device("meta"):
        return BUILDERS[name]()


# ---- full size, on the meta device --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["unet", "referencenet", "lmk_guider"])
def test_full_size_state_dict_equals_official_manifest(shared_dir, name):
    manifest = json.loads((shared_dir / "spec" / "manifests" / f"manifest_{name}.json").read_text())
    expected = {key: tuple(entry["shape"]) for key, entry in manifest["keys"].items()}
    ours = {key: tuple(t.shape) for key, t in _on_meta(name).state_dict().items()}
    missing = sorted(expected.keys() - ours.keys())
    unexpected = sorted(ours.keys() - expected.keys())
    misshaped = sorted(k for k in expected.keys() & ours.keys() if expected[k] != ours[k])
    assert (missing, unexpected, misshaped) == ([], [], [])
    assert len(ours) == manifest["summary"]["num_keys"]


def test_motion_module_keys_are_the_animatediff_subset(shared_dir):
    subset = json.loads((shared_dir / "spec" / "manifests" / "manifest_motion_module_subset.json").read_text())["keys"]
    ours = {key: tuple(t.shape) for key, t in _on_meta("unet").state_dict().items()}
    assert {k: tuple(v) for k, v in subset.items()} == {k: v for k, v in ours.items() if ".motion_modules." in k}


def test_full_size_parameter_counts():
    """SPEC: UNet3D 1,313,517,444 parameters + 42 ``pe`` buffers; ReferenceNet 857,956,480; guider 1,086,480."""
    counts = {}
    for name in BUILDERS:
        module = _on_meta(name)
        buffers = dict(module.named_buffers())
        counts[name] = (len(module.state_dict()), sum(p.numel() for p in module.parameters()), len(buffers))
        assert all(key.endswith(".pos_encoder.pe") for key in buffers)
    assert counts == {"unet": (1276, 1_313_517_444, 42), "referencenet": (666, 857_956_480, 0),
                      "lmk_guider": (16, 1_086_480, 0)}


def test_full_config_is_the_official_one():
    """FULL = sd-image-variations' SD-1.x unet/config.json + infer.yaml's unet_additional_kwargs + infer.py's Guider."""
    sd_unet = {"block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "attention_head_dim": 8,
               "cross_attention_dim": 768, "norm_num_groups": 32, "norm_eps": 1e-5, "sample_size": 64,
               "down_block_types": ["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
               "up_block_types": ["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3}
    infer_yaml = {"use_inflated_groupnorm": True, "unet_use_cross_frame_attention": False,
                  "unet_use_temporal_attention": False, "use_motion_module": True,
                  "motion_module_resolutions": [1, 2, 4, 8], "motion_module_mid_block": True,
                  "motion_module_decoder_only": False, "motion_module_type": "Vanilla",
                  "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1,
                                           "attention_block_types": ["Temporal_Self", "Temporal_Self"],
                                           "temporal_position_encoding": True,
                                           "temporal_position_encoding_max_len": 32, "temporal_attention_dim_div": 1},
                  "attention_mode": "SpatialAtten"}
    guider = {"conditioning_embedding_channels": 320, "block_out_channels": (16, 32, 96, 256)}
    assert NetworkConfigs.from_official(sd_unet, infer_yaml, guider) == FULL
    with pytest.raises(ValueError, match="attention_mode"):
        motion_config_from_official({**infer_yaml, "attention_mode": "ReferOnlyAtten"})
    with pytest.raises(ValueError, match="use_linear_projection"):
        unet_config_from_official({**sd_unet, "use_linear_projection": True})


# ---- tiny configs, random weights ---------------------------------------------------------------------------------


@torch.no_grad()
def test_tiny_config_shapes():
    torch.manual_seed(0)
    guider = build_guider(FULL.guider.__class__(block_out_channels=(8, 16, 24, 32), conditioning_embedding_channels=32))
    referencenet, unet = build_referencenet(TINY_UNET), build_unet3d(TINY_UNET3D)
    assert (len(referencenet.state_dict()), len(unet.state_dict())) == (664, 1274)  # README: 2 conv_shortcuts fewer

    landmarks = guider(torch.rand(1, 3, 3, 128, 128))
    assert landmarks.shape == (1, 32, 3, 16, 16)
    features = referencenet(torch.randn(1, 4, 16, 16), 0, torch.randn(1, 17, 1024))
    sides = [16, 16, 8, 8, 4, 4, 2, 4, 4, 4, 8, 8, 8, 16, 16, 16]
    widths = [32] * 6 + [64] + [32] * 9
    assert [tuple(f.shape) for f in features] == [(1, s * s, c) for s, c in zip(sides, widths)]
    context = torch.cat([torch.zeros(1, 17, 1024), torch.randn(1, 17, 1024)])
    out = unet(torch.randn(2, 4, 3, 16, 16), torch.tensor(749), context, landmarks, features, (False, True))
    assert out.shape == (2, 4, 3, 16, 16) and out.is_contiguous() and torch.isfinite(out).all()


def test_window_longer_than_the_positional_table_is_refused():
    unet = build_unet3d(TINY_UNET3D)
    with pytest.raises(ValueError, match="33 frames in one window.*32"):
        unet(torch.randn(1, 4, 33, 8, 8), 1, torch.randn(1, 17, 1024))
    with pytest.raises(ValueError, match="at most 32 frames"):
        MotionModule(32, TINY_UNET3D.motion)(torch.randn(33, 32, 2, 2), frames=33)


# ---- attention processors and the motion module --------------------------------------------------------------------


def _attention(processor, dim: int = 32, heads: int = 4, context_dim: int | None = None) -> Attention:
    torch.manual_seed(1)
    return Attention(dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads, processor=processor)


@torch.no_grad()
def test_reference_processor_without_reference_is_plain_sdpa():
    attn = _attention(ReferenceAttnProcessor())
    x = torch.randn(6, 10, 32)  # B = 2 rows of F = 3 frames, 10 tokens
    attn.set_processor(AttnProcessor2_0())
    plain = attn(x)
    attn.set_processor(ReferenceAttnProcessor())
    reference = torch.randn(2, 7, 32)
    torch.testing.assert_close(attn(x, frames=3), plain, rtol=0, atol=1e-6)  # empty bank
    torch.testing.assert_close(attn(x, reference=reference, reference_mask=(False, False), frames=3), plain,
                               rtol=0, atol=1e-6)  # mask off


@pytest.mark.parametrize("reference_batch", [1, 3])
@torch.no_grad()
def test_reference_processor_matches_the_official_order(reference_batch):
    """Official: every row attends to [x; reference repeated per frame] (plain attention), then the rows off the mask
    are recomputed with plain self-attention. Ours skips the reference work of those rows."""
    batch, frames = 3, 4
    attn = _attention(AttnProcessor())
    x, reference = torch.randn(batch * frames, 10, 32), torch.randn(reference_batch, 6, 32)
    per_frame = reference.expand(batch, -1, -1).repeat_interleave(frames, dim=0)
    official = attn(x, encoder_hidden_states=torch.cat([x, per_frame], dim=1))
    mask = (True, False, True)
    off = torch.tensor(mask).repeat_interleave(frames).logical_not()
    official[off] = attn(x[off])
    attn.set_processor(ReferenceAttnProcessor())
    ours = attn(x, reference=reference, reference_mask=mask, frames=frames)
    torch.testing.assert_close(ours, official, rtol=0, atol=1e-5)
    all_rows = attn(x, reference=reference, frames=frames)
    attn.set_processor(AttnProcessor())
    torch.testing.assert_close(all_rows, attn(x, encoder_hidden_states=torch.cat([x, per_frame], 1)), rtol=0, atol=1e-5)


@torch.no_grad()
def test_shared_context_processor_equals_per_frame_context():
    attn = _attention(AttnProcessor(), context_dim=24)
    x, context = torch.randn(2 * 5, 9, 32), torch.randn(2, 7, 24)
    per_frame = attn(x, encoder_hidden_states=context.repeat_interleave(5, dim=0))
    attn.set_processor(SharedContextAttnProcessor())
    torch.testing.assert_close(attn(x, encoder_hidden_states=context), per_frame, rtol=0, atol=1e-5)


@torch.no_grad()
def test_motion_module_with_zero_proj_out_is_identity():
    torch.manual_seed(2)
    module = MotionModule(64, MotionModuleConfig(num_attention_heads=4))
    x = torch.randn(2 * 5, 64, 3, 3)
    assert not torch.equal(module(x, frames=5), x)
    torch.nn.init.zeros_(module.temporal_transformer.proj_out.weight)
    torch.nn.init.zeros_(module.temporal_transformer.proj_out.bias)
    assert torch.equal(module(x, frames=5), x)
