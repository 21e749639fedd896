"""The frozen encoders: CLIP ViT-L/14 vision (reference tokens) and the SD VAE (reference latent, frame decoding).

Loaded through transformers / diffusers from local files only. Pixel preprocessing lives in ``reference.py``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch

from .checkpoint_formats import read_state_dict
from .errors import ModelFileError

logger = logging.getLogger(__name__)

# lambdalabs/sd-image-variations-diffusers image_encoder/config.json: the CLIP ViT-L/14 vision tower.
VIT_L14_CONFIG = {
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "image_size": 224,
    "patch_size": 14,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "num_channels": 3,
}

# stabilityai/sd-vae-ft-mse config.json (scaling_factor is diffusers' default, written out).
SD_VAE_FT_MSE_CONFIG = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [128, 256, 512, 512],
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 256,
    "scaling_factor": 0.18215,
}

# Sentinel keys of the single-file formats (LDM ones may sit under first_stage_model. / vae.).
SENTINEL_KEYS = {
    "clip_hf": "vision_model.embeddings.patch_embedding.weight",
    "clip_full_hf": "text_model.embeddings.token_embedding.weight",
    "vae_diffusers": "encoder.down_blocks.0.resnets.0.conv1.weight",
    "vae_ldm": "encoder.down.0.block.0.conv1.weight",
}
_VAE_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
_LDM_VAE_ATTENTION = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_LDM_VAE_PREFIXES = ("first_stage_model.", "vae.")


# ---- reading ------------------------------------------------------------------------------------------------------


def _config_dict(config: dict | str | os.PathLike | None, default: dict) -> dict:
    """A config given as a dict, a ``config.json`` path or a folder holding one; ``default`` when None."""
    if config is None:
        return dict(default)
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    path = path / "config.json" if path.is_dir() else path
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"Cannot read the model config {path}: {exc}") from None


def _model_dir(path: Path, subfolder: str) -> Path | None:
    """The folder holding ``config.json``: ``path`` itself or ``path/subfolder`` (a whole diffusers repo)."""
    for candidate in (path, path / subfolder):
        if (candidate / "config.json").is_file():
            return candidate
    return None


def _missing(path: Path, what: str) -> ModelFileError:
    return ModelFileError(f"{what} not found at {path}: give a folder with config.json or a single weights file")


# ---- CLIP image encoder -------------------------------------------------------------------------------------------


def convert_clip_full_to_ours(sd: dict) -> dict:
    """A whole CLIPModel (text + vision) → the vision tower and projection only."""
    return {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}


def load_clip_image_encoder(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
                            config: dict | str | os.PathLike | None = None):
    """``CLIPVisionModelWithProjection`` in eval mode, from a local folder or one weights file (never downloads).

    A folder is ``from_pretrained(local_files_only=True)`` (``path`` or ``path/image_encoder``). A single file
    (e.g. the community ``sd-image-variations-encoder-fp16.safetensors``) is built from ``config`` (dict, config.json
    or folder; default ViT-L/14) and must match it key for key.
    """
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    path = Path(path)
    dtype_kw = _transformers_dtype_kwarg(dtype)  # explicit: transformers 5 would otherwise use the config's dtype
    if path.is_dir():
        folder = _model_dir(path, "image_encoder")
        if folder is None:
            raise _missing(path, "CLIP image encoder")
        if config is not None:
            raise ValueError("config applies to single weight files; a folder brings its own config.json")
        try:
            model = CLIPVisionModelWithProjection.from_pretrained(folder, local_files_only=True, **dtype_kw)
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"Cannot load the CLIP image encoder from {folder}: {exc}") from None
    else:
        sd = read_state_dict(path)
        if SENTINEL_KEYS["clip_full_hf"] in sd:
            logger.info("%s: a whole CLIP model, keeping its vision tower", path.name)
            sd = convert_clip_full_to_ours(sd)
        if SENTINEL_KEYS["clip_hf"] not in sd:
            raise ModelFileError(f"{path} is not a CLIP vision model (no '{SENTINEL_KEYS['clip_hf']}')")
        # Older exports carry the non-persistent position_ids buffer; it is arange(num_positions) by construction.
        sd = {k: v for k, v in sd.items() if not k.endswith("embeddings.position_ids")}
        cfg = CLIPVisionConfig.from_dict(_config_dict(config, VIT_L14_CONFIG))
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                None, config=cfg, state_dict=sd, output_loading_info=True, **dtype_kw)
        except (RuntimeError, ValueError) as exc:  # shape mismatches
            raise ModelFileError(f"{path} does not match the CLIP config: {exc}") from None
        bad = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        if any(bad.values()):
            raise ModelFileError(f"{path} does not match the CLIP config "
                                 f"(hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers): {_key_report(bad)}")
    return model.to(dtype).eval().requires_grad_(False)


@torch.no_grad()
def encode_clip(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, tokens, hidden) CLIP states for the cross-attention: the vision encoder's ``last_hidden_state``.

    That is the encoder output **before** ``post_layernorm`` (only the pooled token gets it), all 257 tokens for
    ViT-L/14 at 224 px; the projection head is not used. Pixel values come from ``reference.clip_input``.
    """
    param = next(model.parameters())
    return model(pixel_values.to(param.device, param.dtype)).last_hidden_state


def unconditional_clip(states: torch.Tensor) -> torch.Tensor:
    """The CFG unconditional CLIP states: zeros of the same shape (``clip_fc`` then yields its bias alone)."""
    return torch.zeros_like(states)


def _transformers_dtype_kwarg(dtype: torch.dtype) -> dict:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


def _key_report(bad: dict[str, list[str]], limit: int = 8) -> str:
    parts = []
    for kind, keys in bad.items():
        if keys:
            more = f" … (+{len(keys) - limit})" if len(keys) > limit else ""
            parts.append(f"{kind.replace('_', ' ')} {len(keys)}: {', '.join(map(str, keys[:limit]))}{more}")
    return "; ".join(parts)


# ---- VAE ----------------------------------------------------------------------------------------------------------


def convert_vae_ldm_to_ours(sd: dict, num_levels: int = 4) -> dict:
    """Original (LDM / ComfyUI ``models/vae``) VAE keys → diffusers ``AutoencoderKL`` keys.

    Takes the ``first_stage_model.`` / ``vae.`` part of a whole SD checkpoint; training leftovers (``loss.*``,
    ``model_ema.*``) are not VAE weights and are left out. LDM numbers decoder levels bottom-up, diffusers top-down.
    """
    prefix = next((p for p in _LDM_VAE_PREFIXES if any(k.startswith(p) for k in sd)), "")
    out = {}
    for key, value in sd.items():
        if not key.startswith(prefix):
            continue
        k = key[len(prefix):]
        if not k.startswith(("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")):
            continue
        k = k.replace(".nin_shortcut.", ".conv_shortcut.").replace(".norm_out.", ".conv_norm_out.")
        k = re.sub(r"\.down\.(\d+)\.block\.(\d+)\.", r".down_blocks.\1.resnets.\2.", k)
        k = re.sub(r"\.down\.(\d+)\.downsample\.", r".down_blocks.\1.downsamplers.0.", k)
        k = re.sub(r"\.up\.(\d+)\.block\.(\d+)\.",
                   lambda m: f".up_blocks.{num_levels - 1 - int(m[1])}.resnets.{m[2]}.", k)
        k = re.sub(r"\.up\.(\d+)\.upsample\.", lambda m: f".up_blocks.{num_levels - 1 - int(m[1])}.upsamplers.0.", k)
        k = re.sub(r"\.mid\.block_(\d+)\.", lambda m: f".mid_block.resnets.{int(m[1]) - 1}.", k)
        if ".mid.attn_1." in k:
            head, _, leaf = k.rpartition(".")
            layer = head.rsplit(".", 1)[1]
            k = f"{head.split('.mid.attn_1.')[0]}.mid_block.attentions.0.{_LDM_VAE_ATTENTION[layer]}.{leaf}"
            if value.ndim == 4:  # 1×1 convs in the original, linear layers in diffusers
                value = value[:, :, 0, 0]
        out[k] = value
    return out


def convert_vae_diffusers_legacy_to_ours(sd: dict) -> dict:
    """Diffusers-format VAE with the pre-0.14 attention names (query/key/value/proj_attn) → current names."""
    out = {}
    for key, value in sd.items():
        head, _, leaf = key.rpartition(".")
        module_path, _, name = head.rpartition(".")
        if ".attentions." in key and name in _VAE_LEGACY_ATTENTION:
            key = f"{module_path}.{_VAE_LEGACY_ATTENTION[name]}.{leaf}"
        out[key] = value
    return out


def load_vae(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
             config: dict | str | os.PathLike | None = None):
    """diffusers ``AutoencoderKL`` in eval mode from a local folder or one weights file (never downloads).

    A folder is ``from_pretrained(local_files_only=True)`` (``path`` or ``path/vae``). A single file in diffusers or
    original LDM layout (``vae-ft-mse-840000-ema-pruned.safetensors``) is built from ``config`` (default
    sd-vae-ft-mse) and loaded strictly.
    """
    from diffusers import AutoencoderKL

    path = Path(path)
    if path.is_dir():
        folder = _model_dir(path, "vae")
        if folder is None:
            raise _missing(path, "VAE")
        if config is not None:
            raise ValueError("config applies to single weight files; a folder brings its own config.json")
        try:
            model = AutoencoderKL.from_pretrained(folder, local_files_only=True, torch_dtype=dtype)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelFileError(f"Cannot load the VAE from {folder}: {exc}") from None
        return model.eval().requires_grad_(False)

    cfg = {k: v for k, v in _config_dict(config, SD_VAE_FT_MSE_CONFIG).items() if not k.startswith("_")}
    sd = read_state_dict(path)
    if any(k.endswith(SENTINEL_KEYS["vae_ldm"]) for k in sd):
        logger.info("%s: original LDM VAE layout, converting", path.name)
        sd = convert_vae_ldm_to_ours(sd, len(cfg["block_out_channels"]))
    elif SENTINEL_KEYS["vae_diffusers"] in sd:
        sd = convert_vae_diffusers_legacy_to_ours(sd)
    else:
        raise ModelFileError(f"{path} is not an SD VAE (neither diffusers nor original LDM keys)")
    with torch.device("meta"):  # no random init: every tensor comes from the file (AutoencoderKL has no buffers)
        model = AutoencoderKL.from_config(cfg)
    expected = model.state_dict()
    bad = {
        "missing_keys": sorted(set(expected) - set(sd)),
        "unexpected_keys": sorted(set(sd) - set(expected)),
        "mismatched_keys": sorted(k for k in set(sd) & set(expected) if sd[k].shape != expected[k].shape),
    }
    if any(bad.values()):
        raise ModelFileError(f"{path} does not match the VAE config "
                             f"(block_out_channels {cfg.get('block_out_channels')}): {_key_report(bad)}")
    # Cast the tensors, not the module: diffusers' ModelMixin.to(dtype) warns about fp32-pinned modules.
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    logger.info("VAE loaded from %s (%d tensors)", path, len(sd))
    return model.eval().requires_grad_(False)


@torch.no_grad()
def encode_reference(vae, image: torch.Tensor) -> torch.Tensor:
    """(B, 4, H/8, W/8) reference latent = ``encode(image).latent_dist.mean × scaling_factor`` (no sampling).

    ``image``: (B, 3, H, W) in [−1, 1] from ``reference.vae_input``. Returned in the VAE's dtype and device.
    """
    param = next(vae.parameters())
    return vae.encode(image.to(param.device, param.dtype)).latent_dist.mean * vae.config.scaling_factor


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor, chunk: int = 1,
                   callback: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """(N, 3, H, W) float32 frames in [0, 1] on the CPU from (N, 4, h, w) scaled latents, ``chunk`` frames per call.

    ``decode(1 / scaling_factor · latents)``, then ``(x / 2 + 0.5).clamp(0, 1)``, as the official's per-frame loop
    (``chunk=1``); larger chunks are the same computation batched. Peak activation memory depends on ``chunk``, not
    on N. ``callback(done, total)`` runs after each chunk (progress, cancel checks).
    """
    if chunk < 1:
        raise ValueError(f"chunk must be ≥ 1, got {chunk}")
    if latents.ndim != 4:
        raise ValueError(f"latents must be (N, C, h, w), got shape {tuple(latents.shape)}")
    param = next(vae.parameters())
    n = latents.shape[0]
    frames = None
    for start in range(0, n, chunk):
        z = 1.0 / vae.config.scaling_factor * latents[start:start + chunk].to(param.device, param.dtype)
        x = (vae.decode(z).sample / 2 + 0.5).clamp(0, 1).float().cpu()
        if frames is None:
            frames = torch.empty((n, *x.shape[1:]), dtype=torch.float32)
        frames[start:start + len(x)] = x
        if callback is not None:
            callback(min(start + chunk, n), n)
    if frames is None:
        raise ValueError("no latents to decode")
    return frames
