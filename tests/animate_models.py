"""Random and tiny weights that real ComfyUI loaders accept, written at test time (nothing is downloaded).

- ``write_tiny_follow_your_emoji``: the three networks at a tiny size, in the official ``pretrained_models/`` layout
  (``follow-your-emoji/{referencenet,unet,lmk_guider}``, ``sd-image-variations-diffusers/unet/config.json``): a copy
  of ``../shared/golden/tiny_pretrained_models`` when given, else built from the networks' builders; plus the pack's
  sizes file ``follow-your-emoji/config.json`` for what no official file records (the tiny motion modules' 4 heads).
- ``write_random_taesd``: ``taesd_encoder`` / ``taesd_decoder`` for ComfyUI's ``VAELoader`` ("taesd"), with the
  keys of ComfyUI's own ``comfy/taesd/taesd.py`` module (imported by path, its two ComfyUI imports stubbed).
- ``write_random_sd_vae``: a full-size SD VAE (random, diffusers keys) that both ComfyUI's ``VAELoader`` and the
  library's ``encoders.load_vae`` load, for comparing the two paths on the same weights.
- ``write_random_clip_vit_l14``: a full-size CLIP ViT-L/14 vision tower, random fp16 values (~0.6 GB), for
  ``CLIPVisionLoader`` (which picks the architecture by counting layers, so a tiny CLIP does not load there).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import torch
from safetensors.torch import save_file


@dataclass(frozen=True)
class AnimationModels:
    """What the conftest installed: the names to put in the graph's loader widgets."""

    model: str  # FYE_LoadModel: a folder in models/followyouremoji
    vae: str  # VAELoader
    clip_vision: str  # CLIPVisionLoader
    source: str  # where the tiny networks came from


# The golden tiny models' configs (../shared/golden/tiny_configs.json), for building them without ../shared.
TINY_UNET_CONFIG = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 4,
    "block_out_channels": [32, 32, 32, 64],
    "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "in_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 16,
    "out_channels": 4,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}
TINY_GUIDER = {"conditioning_embedding_channels": 32, "conditioning_channels": 3, "block_out_channels": [8, 16, 24, 32]}
TINY_MOTION_HEADS = 4  # the official's 8 does not divide the tiny widths the same way; the golden used 4
# follow-your-emoji/config.json (emoji_model.model_config.read_pack_config): sizes no official file records.
TINY_PACK_CONFIG = {"unet_additional_kwargs": {"motion_module_kwargs": {"num_attention_heads": TINY_MOTION_HEADS}}}


def write_tiny_follow_your_emoji(dest: Path, golden: Path | None = None) -> Path:
    """A tiny official-format model folder at ``dest`` (a copy of ``golden`` if given)."""
    if golden is not None:
        shutil.copytree(golden, dest, copy_function=shutil.copyfile)
        for folder in (dest, *(p for p in dest.rglob("*") if p.is_dir())):
            folder.chmod(0o755)  # copytree copies the golden folders' read-only modes
    else:
        _build_tiny_networks(dest)
    (dest / "follow-your-emoji" / "config.json").write_text(json.dumps(TINY_PACK_CONFIG))
    return dest


def _build_tiny_networks(dest: Path) -> None:
    from emoji_model.networks import (
        MotionModuleConfig,
        UNet3DConfig,
        build_guider,
        build_referencenet,
        build_unet3d,
        guider_config_from_official,
        unet_config_from_official,
    )

    unet = unet_config_from_official(TINY_UNET_CONFIG)
    torch.manual_seed(0)
    networks = {
        "referencenet": build_referencenet(unet),
        "unet": build_unet3d(UNet3DConfig(unet=unet, motion=MotionModuleConfig(num_attention_heads=TINY_MOTION_HEADS))),
        "lmk_guider": build_guider(guider_config_from_official(TINY_GUIDER)),
    }
    (dest / "follow-your-emoji").mkdir(parents=True)
    for name, network in networks.items():
        state = {
            k: v.detach().to(torch.float16 if v.is_floating_point() and not k.endswith(".pe") else v.dtype).contiguous()
            for k, v in network.state_dict().items()
        }
        save_file(state, str(dest / "follow-your-emoji" / f"{name}.safetensors"))
    (dest / "sd-image-variations-diffusers" / "unet").mkdir(parents=True)
    (dest / "sd-image-variations-diffusers" / "unet" / "config.json").write_text(json.dumps(TINY_UNET_CONFIG))


def comfyui_taesd_class(comfyui_dir: Path) -> type[torch.nn.Module]:
    """``TAESD`` from ComfyUI's ``comfy/taesd/taesd.py``, imported by path; its ``comfy.ops`` / ``comfy.utils``
    imports are stubbed for the import only (plain ``nn.Conv2d``: same parameters, default init)."""
    comfy = types.ModuleType("comfy")
    comfy.ops = types.ModuleType("comfy.ops")
    comfy.ops.disable_weight_init = types.SimpleNamespace(Conv2d=torch.nn.Conv2d)
    comfy.utils = types.ModuleType("comfy.utils")
    path = comfyui_dir / "comfy" / "taesd" / "taesd.py"
    spec = importlib.util.spec_from_file_location("comfyui_taesd_for_tests", path)
    module = importlib.util.module_from_spec(spec)
    with mock.patch.dict(sys.modules, {"comfy": comfy, "comfy.ops": comfy.ops, "comfy.utils": comfy.utils}):
        spec.loader.exec_module(module)
    return module.TAESD


def write_random_taesd(comfyui_dir: Path, vae_approx_dir: Path) -> list[Path]:
    """``taesd_encoder.safetensors`` and ``taesd_decoder.safetensors`` (random weights) in ``vae_approx_dir``."""
    torch.manual_seed(0)
    taesd = comfyui_taesd_class(comfyui_dir)()
    vae_approx_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for part in ("taesd_encoder", "taesd_decoder"):
        path = vae_approx_dir / f"{part}.safetensors"
        save_file({k: v.contiguous() for k, v in getattr(taesd, part).state_dict().items()}, str(path))
        paths.append(path)
    return paths


def write_random_clip_vit_l14(path: Path, std: float = 0.02) -> Path:
    """A full-size CLIP ViT-L/14 vision model with projection (transformers keys, fp16, random values)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    from emoji_model.encoders import VIT_L14_CONFIG

    with torch.device("meta"):  # shapes only: the values are drawn below, a tensor at a time
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14_CONFIG))
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, meta in model.state_dict().items():
        if key.endswith("position_ids"):
            continue
        if "norm" in key or "layrnorm" in key:  # LayerNorms: identity
            value = torch.ones(meta.shape) if key.endswith("weight") else torch.zeros(meta.shape)
        else:
            value = torch.randn(meta.shape, generator=generator) * std
        state[key] = value.to(torch.float16)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))
    return path


def write_random_sd_vae(path: Path, seed: int = 0, dtype: torch.dtype = torch.float32) -> Path:
    """A full-size SD 1.x VAE (diffusers ``AutoencoderKL`` with sd-vae-ft-mse's config, diffusers keys, torch's
    default init under ``seed``) as one ``.safetensors`` (~335 MB in fp32): loaded by ComfyUI's ``VAELoader`` (its
    fixed SD VAE, converted from diffusers keys) and by the library's ``encoders.load_vae`` alike, unlike a TAESD."""
    from diffusers import AutoencoderKL

    from emoji_model.encoders import SD_VAE_FT_MSE_CONFIG

    torch.manual_seed(seed)
    vae = AutoencoderKL(**SD_VAE_FT_MSE_CONFIG)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().to(dtype).contiguous() for k, v in vae.state_dict().items()}, str(path))
    return path
