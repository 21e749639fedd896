"""Weight-file formats: reading each kind of file, recognising it (``SENTINEL_KEYS``), renaming it to our keys.

Our keys are the official Follow-Your-Emoji state-dict keys (``spec/manifests``). Formats:

- ``fye_unet`` / ``fye_unet_no_motion`` / ``fye_referencenet`` / ``fye_guider``: the official ``unet.pth``,
  ``referencenet.pth``, ``lmk_guider.pth``. The community fp16 re-export (kijai's ``FYE_unet-fp16.safetensors``,
  ``FYE_referencenet-fp16.safetensors``, ``FYE_lmk_guider.safetensors``) holds the same keys, unprefixed, in fp16:
  it is the same format, so it has no converter of its own.
- ``animatediff``: an AnimateDiff motion module (``mm_sd_v15_v2.ckpt``, the community
  ``fye_motion_module-fp16.safetensors``): exactly our ``*.motion_modules.*`` keys.
- ``motion_adapter``: the same module in diffusers' ``MotionAdapter`` layout.
- ``diffusers_unet``: an SD-1.x ``UNet2DConditionModel`` (sd-image-variations ``unet/``): the base of both UNets.
- ``clip_fc``: a lone ``Linear(1024, 768)`` (the community ``FYE_clip_fc.safetensors``); not needed, the UNet and
  ReferenceNet files hold their own.
- Files that belong elsewhere (VAE, CLIP, an SD checkpoint in the original ldm layout) are recognised so that
  a wrong file gets a clear message.

Converters rename keys only: they never read, copy or cast a tensor and never mutate their input.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .errors import ModelFileError

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike

# ---- reading: one function per file format ------------------------------------------------------------------------


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The tensors of one weights file, memory-mapped where the format allows, wrappers removed
    (a ``state_dict``/``module``/``model`` nesting, a ``module.`` prefix on every key, non-tensor entries)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    sd = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pickle(path)
    return _unwrap(sd, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # tensors stay backed by the mapping
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as exc:  # SafetensorError has no public base class
        raise ModelFileError(f"{path.name} is truncated or not a safetensors file ({exc}); download it again") from None


def _read_pickle(path: Path) -> dict:
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap can only be used" not in str(exc):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (pre-zip) torch.save format
    except pickle.UnpicklingError as exc:
        if "truncated" in str(exc):
            raise ModelFileError(f"{path.name} is truncated ({exc}); download it again") from None
        code = re.search(r"GLOBAL (\S+)", str(exc))
        other = re.search(r"Unsupported[^\n]*", str(exc))
        why = (f"wants to run code when loaded ({code.group(1)})" if code
               else f"uses pickle features torch's safe loader does not allow ({other.group(0) if other else exc})")
        raise ModelFileError(
            f"{path.name} is a pickle that {why}; it was refused, nothing was run. "
            "Weight files hold only tensors: get it from its original source or as .safetensors."
        ) from None
    except Exception as exc:  # zip, EOF, struct and unpickler errors: all mean the bytes are not a whole checkpoint
        raise ModelFileError(f"{path.name} is truncated or corrupt ({str(exc).splitlines()[0]}); download it again") \
            from None


def _unwrap(sd: object, path: Path) -> dict[str, torch.Tensor]:
    # {"state_dict": {...}, "global_step": …} (Lightning, some AnimateDiff files), {"module": {...}} (DeepSpeed)
    while isinstance(sd, Mapping) and not any(isinstance(v, torch.Tensor) for v in sd.values()):
        nested = [sd[k] for k in ("state_dict", "module", "model") if isinstance(sd.get(k), Mapping)]
        if not nested:
            break
        sd = nested[0]
    if not isinstance(sd, Mapping):
        raise ModelFileError(f"{path.name} does not hold a state dict (found {type(sd).__name__})")
    tensors = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if len(tensors) < len(sd):
        logger.debug("%s: ignored %d non-tensor entries", path.name, len(sd) - len(tensors))
    if tensors and all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


# ---- recognising: which kind of file this is ----------------------------------------------------------------------

MOTION_SENTINEL = "down_blocks.0.motion_modules.0.temporal_transformer.proj_in.weight"

# format → keys that must all be present. Checked in this order; the first match names the file.
SENTINEL_KEYS: dict[str, tuple[str, ...]] = {
    "ldm_checkpoint": ("model.diffusion_model.input_blocks.0.0.weight",),
    "ldm_unet": ("input_blocks.0.0.weight",),
    "vae": ("encoder.conv_in.weight", "decoder.conv_in.weight"),
    "clip_vision": ("vision_model.embeddings.patch_embedding.weight",),
    "clip_text": ("text_model.embeddings.token_embedding.weight",),
    "fye_unet": ("clip_fc.weight", "conv_in.weight", MOTION_SENTINEL),
    "fye_unet_no_motion": ("clip_fc.weight", "conv_in.weight", "conv_out.weight"),
    "fye_referencenet": ("clip_fc.weight", "conv_in.weight"),
    "diffusers_unet": ("conv_in.weight", "time_embedding.linear_1.weight"),
    "animatediff": (MOTION_SENTINEL,),
    "motion_adapter": ("down_blocks.0.motion_modules.0.proj_in.weight",),
    "fye_guider": ("conv_in.weight", "blocks.0.weight", "conv_out.weight"),
    "clip_fc": ("weight", "bias"),
}

# How a format is named to users.
DESCRIPTIONS: dict[str, str] = {
    "fye_unet": "a Follow-Your-Emoji denoising UNet (unet.pth / FYE_unet-fp16.safetensors)",
    "fye_unet_no_motion": "a Follow-Your-Emoji denoising UNet without motion-module weights",
    "fye_referencenet": "a Follow-Your-Emoji ReferenceNet (referencenet.pth / FYE_referencenet-fp16.safetensors)",
    "fye_guider": "a Follow-Your-Emoji landmark guider (lmk_guider.pth / FYE_lmk_guider.safetensors)",
    "animatediff": "an AnimateDiff motion module (mm_sd_v15_v2.ckpt)",
    "motion_adapter": "an AnimateDiff motion module in diffusers' MotionAdapter layout",
    "diffusers_unet": "a Stable Diffusion UNet in diffusers layout (sd-image-variations-diffusers/unet)",
    "clip_fc": "a lone clip_fc layer (FYE_clip_fc.safetensors; the UNet and ReferenceNet files hold their own)",
    "ldm_checkpoint": "a whole Stable Diffusion checkpoint in the original (ldm) layout",
    "ldm_unet": "a Stable Diffusion UNet in the original (ldm) layout",
    "vae": "a VAE",
    "clip_vision": "a CLIP image encoder",
    "clip_text": "a CLIP text encoder",
    "empty": "an empty file (no tensors)",
    "unknown": "no format this pack knows",
}


def detect_format(sd: Mapping[str, object]) -> str:
    """The format name of a state dict (a key of ``SENTINEL_KEYS``), ``"empty"`` or ``"unknown"``."""
    if not sd:
        return "empty"
    for name, sentinels in SENTINEL_KEYS.items():
        if all(key in sd for key in sentinels):
            if name == "clip_fc" and len(sd) != 2:
                continue
            return name
    return "unknown"


def is_motion_key(key: str) -> bool:
    return ".motion_modules." in key


def is_positional_encoding(key: str) -> bool:
    """The motion modules' sinusoid tables: persistent buffers, computed when a file lacks them."""
    return key.endswith(".pos_encoder.pe")


# ---- converters: source keys → our (official) keys ----------------------------------------------------------------


def convert_official_to_ours(sd: Mapping) -> dict:
    """Official FYE files and the community fp16 re-export: already our keys."""
    return dict(sd)


def convert_animatediff_to_ours(sd: Mapping) -> dict:
    """AnimateDiff ``mm_sd_v15_v2.ckpt``: ``{down,up}_blocks.i.motion_modules.j.*`` and ``mid_block.motion_modules.0.*``
    are the UNet3D's own keys; its ``pos_encoder.pe`` tables are (1, 32, C) like ours."""
    return dict(sd)


def convert_diffusers_unet_to_ours(sd: Mapping) -> dict:
    """sd-image-variations ``unet/`` (diffusers ``UNet2DConditionModel``): the same names as both our UNets.
    What a ReferenceNet has no use for (``conv_out``, most of its last transformer block) is set aside when
    composing, by name (``UNUSED_BY_REFERENCENET``)."""
    return dict(sd)


_ADAPTER_RENAMES = (
    (re.compile(r"(\.motion_modules\.\d+)\."), r"\1.temporal_transformer."),
    (re.compile(r"\.attn1\."), ".attention_blocks.0."),
    (re.compile(r"\.attn2\."), ".attention_blocks.1."),
    (re.compile(r"\.norm1\."), ".norms.0."),
    (re.compile(r"\.norm2\."), ".norms.1."),
    (re.compile(r"\.norm3\."), ".ff_norm."),
)


def convert_motion_adapter_to_ours(sd: Mapping) -> dict:
    """diffusers ``MotionAdapter`` → AnimateDiff keys (the inverse of diffusers'
    ``convert_animatediff_checkpoint_to_diffusers``). Its one ``pos_embed.pe`` per transformer block serves both
    attention blocks; the official model keeps a copy in each (``attention_blocks.{0,1}.pos_encoder.pe``)."""
    out = {}
    for key, value in sd.items():
        if key.endswith(".pos_embed.pe"):
            block = key[: -len("pos_embed.pe")]
            for target in _rename_adapter_key(block + "attn1.pos_encoder.pe"), _rename_adapter_key(
                block + "attn2.pos_encoder.pe"
            ):
                out[target] = value
            continue
        out[_rename_adapter_key(key)] = value
    return out


def _rename_adapter_key(key: str) -> str:
    for pattern, replacement in _ADAPTER_RENAMES:
        key = pattern.sub(replacement, key, count=1)
    return key


CONVERTERS: dict[str, Callable[[Mapping], dict]] = {
    "fye_unet": convert_official_to_ours,
    "fye_unet_no_motion": convert_official_to_ours,
    "fye_referencenet": convert_official_to_ours,
    "fye_guider": convert_official_to_ours,
    "animatediff": convert_animatediff_to_ours,
    "motion_adapter": convert_motion_adapter_to_ours,
    "diffusers_unet": convert_diffusers_unet_to_ours,
    "empty": dict,
}

# Keys of a full 2-D UNet that the ReferenceNet lacks by design (it stops after norm1 of its last transformer
# block). Base and ReferenceNet files may hold them; composing sets them aside by name — nothing else is dropped.
UNUSED_BY_REFERENCENET = ("conv_norm_out.", "conv_out.", "up_blocks.3.attentions.2.transformer_blocks.0.")
