"""The networks' sizes for a model folder: its UNet ``config.json``, the guider's shapes in its file, the official
motion-module settings, and the pack's optional sizes file over them (``read_pack_config``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from .errors import ModelFileError
from .model_files import ModelFiles, PathLike

# configs/infer.yaml ``model.unet_additional_kwargs`` (official HEAD 8e42c5f): the motion-module settings.
OFFICIAL_UNET_ADDITIONAL_KWARGS = {
    "use_inflated_groupnorm": True,
    "unet_use_cross_frame_attention": False,
    "unet_use_temporal_attention": False,
    "use_motion_module": True,
    "motion_module_resolutions": [1, 2, 4, 8],
    "motion_module_mid_block": True,
    "motion_module_decoder_only": False,
    "motion_module_type": "Vanilla",
    "motion_module_kwargs": {
        "num_attention_heads": 8,
        "num_transformer_block": 1,
        "attention_block_types": ["Temporal_Self", "Temporal_Self"],
        "temporal_position_encoding": True,
        "temporal_position_encoding_max_len": 32,
        "temporal_attention_dim_div": 1,
    },
    "attention_mode": "SpatialAtten",
}
_PACK_CONFIG_KEYS = ("unet", "unet_additional_kwargs", "lmk_guider")


def unet_config(config):
    """A ``UNetConfig`` from itself, a diffusers ``unet/config.json`` path or dict; ``None``: full size."""
    from .networks.config import UNetConfig, unet_config_from_official

    if config is None or isinstance(config, UNetConfig):
        return config or UNetConfig()
    if not isinstance(config, Mapping):
        try:
            config = json.loads(Path(config).read_text())
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"Cannot read the UNet config {config}: {exc}") from None
    try:
        return unet_config_from_official(config)
    except (KeyError, ValueError) as exc:
        raise ModelFileError(f"Unsupported UNet config: {exc}") from None


def guider_config_from_state_dict(sd: Mapping):
    """GuiderConfig from the shapes of a guider state dict (conv_in, the stride-2 ``blocks.{1,3,..}``, conv_out)."""
    from .networks.config import GuiderConfig

    widths = [sd["conv_in.weight"].shape[0]]
    i = 1
    while f"blocks.{i}.weight" in sd:
        widths.append(sd[f"blocks.{i}.weight"].shape[0])
        i += 2
    return GuiderConfig(conditioning_channels=sd["conv_in.weight"].shape[1], block_out_channels=tuple(widths),
                        conditioning_embedding_channels=sd["conv_out.weight"].shape[0])


def read_pack_config(path: PathLike) -> dict:
    """Our optional sizes file: a JSON object with any of ``unet`` (a diffusers UNet config.json, replacing
    sd-image-variations-diffusers/unet/config.json), ``unet_additional_kwargs`` (infer.yaml's, merged key by key onto
    the official ones: e.g. ``{"motion_module_kwargs": {"num_attention_heads": 4}}``) and ``lmk_guider`` (the
    ``Guider`` kwargs: ``conditioning_embedding_channels``, ``block_out_channels``). Nothing in the official files
    records these, so a model trained with other sizes needs this file."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"Cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ModelFileError(f"{path} must hold a JSON object with any of: {', '.join(_PACK_CONFIG_KEYS)}")
    unknown = sorted(set(config) - set(_PACK_CONFIG_KEYS))
    if unknown:
        raise ModelFileError(f"{path}: unknown key(s) {', '.join(unknown)}; allowed: {', '.join(_PACK_CONFIG_KEYS)}")
    return config


def _merged(base: Mapping, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        out[key] = _merged(base[key], value) if isinstance(value, Mapping) and isinstance(base.get(key), Mapping) \
            else value
    return out


def configs_from_files(files: ModelFiles, guider_weights: Mapping):
    """The ``NetworkConfigs`` a folder describes; the guider's sizes are read from its weights when not given."""
    from .networks.config import NetworkConfigs, UNet3DConfig, guider_config_from_official, motion_config_from_official

    pack = read_pack_config(files.config) if files.config is not None else {}
    where = f" (from {files.config})" if files.config is not None else ""
    try:
        unet = unet_config(pack.get("unet", files.unet_config))
        motion = motion_config_from_official(_merged(OFFICIAL_UNET_ADDITIONAL_KWARGS,
                                                     pack.get("unet_additional_kwargs", {})))
        guider = (guider_config_from_official(pack["lmk_guider"]) if "lmk_guider" in pack
                  else guider_config_from_state_dict(guider_weights))
        return NetworkConfigs(referencenet=unet, unet3d=UNet3DConfig(unet=unet, motion=motion), guider=guider)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"Unsupported network sizes{where}: {exc}") from None
