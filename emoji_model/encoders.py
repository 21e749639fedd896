"""The frozen encoders: CLIP ViT-L/14 vision (reference tokens) and the SD VAE (reference latent, frame decoding).

Loaded through transformers / diffusers from local files only. Pixel preprocessing lives in ``reference.py``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from .checkpoint_formats import DESCRIPTIONS, detect_format, has_format, read_state_dict
from .checkpoints import account_keys, key_report
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


def _from_folder(cls, path: Path, subfolder: str, what: str, config, **kwargs):
    """``cls.from_pretrained`` from local files only: ``path`` or ``path/subfolder`` (a whole repo), the one holding
    ``config.json``."""
    folder = next((c for c in (path, path / subfolder) if (c / "config.json").is_file()), None)
    if folder is None:
        raise ModelFileError(f"{what} not found at {path}: give a folder with config.json or a single weights file")
    if config is not None:
        raise ValueError("config applies to single weight files; a folder brings its own config.json")
    try:
        return cls.from_pretrained(folder, local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelFileError(f"Cannot load the {what} from {folder}: {exc}") from None


# ---- CLIP image encoder -------------------------------------------------------------------------------------------


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
        model = _from_folder(CLIPVisionModelWithProjection, path, "image_encoder", "CLIP image encoder", config,
                             **dtype_kw)
    else:
        sd = read_state_dict(path)
        if has_format(sd, "clip_text"):
            logger.info("%s: a whole CLIP model, keeping its vision tower", path.name)
            sd = {k: v for k, v in sd.items() if k.startswith(("vision_model.", "visual_projection."))}
        if not has_format(sd, "clip_vision"):
            raise ModelFileError(f"{path} is not a CLIP vision model: it looks like {DESCRIPTIONS[detect_format(sd)]}")
        # Older exports carry the non-persistent position_ids buffer; it is arange(num_positions) by construction.
        sd = {k: v for k, v in sd.items() if not k.endswith("embeddings.position_ids")}
        cfg = CLIPVisionConfig.from_dict(_config_dict(config, VIT_L14_CONFIG))
        try:
            model, info = CLIPVisionModelWithProjection.from_pretrained(
                None, config=cfg, state_dict=sd, output_loading_info=True, **dtype_kw)
        except (RuntimeError, ValueError) as exc:  # shape mismatches
            raise ModelFileError(f"{path} does not match the CLIP config: {exc}") from None
        bad = {kind: sorted(map(str, info.get(key) or ())) for kind, key in
               (("missing", "missing_keys"), ("unexpected", "unexpected_keys"), ("mis-shaped", "mismatched_keys"))}
        if any(bad.values()):
            raise ModelFileError(key_report(f"{path} does not match the CLIP config (hidden {cfg.hidden_size}, "
                                            f"{cfg.num_hidden_layers} layers)", bad))
    return model.to(dtype).eval().requires_grad_(False)


@torch.no_grad()
def encode_clip(model, pixel_values: torch.Tensor) -> torch.Tensor:
    """(B, tokens, hidden) CLIP states for the cross-attention: the vision encoder's ``last_hidden_state``.

    That is the encoder output **before** ``post_layernorm`` (only the pooled token gets it), all 257 tokens for
    ViT-L/14 at 224 px; the projection head is not used. Pixel values come from ``reference.clip_input``.
    """
    param = next(model.parameters())
    return model(pixel_values.to(param.device, param.dtype)).last_hidden_state


def _transformers_dtype_kwarg(dtype: torch.dtype) -> dict:
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}


# ---- VAE ----------------------------------------------------------------------------------------------------------


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
        return _from_folder(AutoencoderKL, path, "vae", "VAE", config, torch_dtype=dtype).eval().requires_grad_(False)

    from diffusers.loaders.single_file_utils import LDM_VAE_KEYS, convert_ldm_vae_checkpoint

    cfg = {k: v for k, v in _config_dict(config, SD_VAE_FT_MSE_CONFIG).items() if not k.startswith("_")}
    sd = read_state_dict(path)
    with torch.device("meta"):  # no random init: every tensor comes from the file (AutoencoderKL has no buffers)
        model = AutoencoderKL.from_config(cfg)
    if any(has_format(sd, "vae_ldm", prefix) for prefix in ("", *LDM_VAE_KEYS)):
        logger.info("%s: original LDM VAE layout, converting", path.name)
        sd = convert_ldm_vae_checkpoint(sd, cfg)  # training leftovers (loss.*, model_ema.*) are left out
    elif has_format(sd, "vae_diffusers"):  # diffusers' own renaming of pre-0.14 attention names, as from_pretrained's
        sd = dict(sd)  # (query/key/value/proj_attn → to_q/…/to_out.0; named _convert_deprecated_… before 0.3x)
        (getattr(model, "_fix_state_dict_keys_on_load", None) or model._convert_deprecated_attention_blocks)(sd)
    else:
        raise ModelFileError(f"{path} is not an SD VAE: it looks like {DESCRIPTIONS[detect_format(sd)]}")
    bad = account_keys(sd, model.state_dict())
    if any(bad.values()):
        raise ModelFileError(key_report(f"{path} does not match the VAE config "
                                        f"(block_out_channels {cfg.get('block_out_channels')})", bad))
    # Cast the tensors, not the module: diffusers' ModelMixin.to(dtype) warns about fp32-pinned modules.
    model.load_state_dict({k: v.to(dtype) for k, v in sd.items()}, strict=True, assign=True)
    logger.info("VAE loaded from %s (%d tensors)", path, len(sd))
    return model.eval().requires_grad_(False)
