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
- The encoders' files (``vae_diffusers``, ``vae_ldm``, ``clip_vision``, ``clip_text``; loaded by ``encoders``) and
  other files that belong elsewhere (an SD checkpoint in the original ldm layout) are recognised too, so that a
  wrong file gets a clear message.

Converters rename keys only: they never read, copy or cast a tensor and never mutate their input.
"""

from __future__ import annotations

import errno
import logging
import pickle
import pickletools
import re
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from .errors import ModelFileError
from .model_files import PathLike

logger = logging.getLogger(__name__)

# ---- reading: one function per file format ------------------------------------------------------------------------


def read_state_dict(path: PathLike) -> dict[str, torch.Tensor]:
    """The tensors of one weights file, memory-mapped where the format allows, wrappers removed
    (a ``state_dict``/``module``/``model`` nesting, a ``module.`` prefix on every key, non-tensor entries)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"Model file not found: {path}")
    try:
        with open(path, "rb"):  # the system's own reason when it cannot be read (safetensors says "not found")
            pass
        sd = _read_safetensors(path) if path.suffix == ".safetensors" else _read_pickle(path)
    except OSError as exc:  # permissions, I/O errors: not a bad download
        raise ModelFileError(f"Cannot read {path}: {exc.strerror or exc}") from None
    return _unwrap(sd, path)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:  # tensors stay backed by the mapping
            return {key: f.get_tensor(key) for key in f.keys()}
    except SafetensorError as exc:
        raise ModelFileError(f"{path.name} is truncated or not a safetensors file ({exc}); download it again") from None


def _read_pickle(path: Path) -> dict:
    is_zip = False
    try:
        is_zip = zipfile.is_zipfile(path)  # torch.save's format since torch 1.6; mmap needs it
        return torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except pickle.UnpicklingError:
        unsafe = _unsafe_globals(path, is_zip)
        if unsafe:
            raise ModelFileError(
                f"{path.name} is a pickle that wants to run code when loaded ({', '.join(unsafe)}); it was refused, "
                "nothing was run. Weight files hold only tensors: get it from its original source or as .safetensors."
            ) from None
        raise ModelFileError(f"{path.name} is truncated, corrupt or a pickle with features torch's safe loader "
                             "refuses; nothing was run: download it again, or get it as .safetensors.") from None
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: torch's zip reader seeking before the start of a cut-off file
            raise  # permissions, I/O errors: read_state_dict says so
        reason = str(exc)
    except Exception as exc:  # torch's loaders fail on cut-off or damaged bytes in many ways (zip, EOF, struct, index)
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    raise ModelFileError(f"{path.name} is truncated or corrupt ({reason}); download it again") from None


# What torch's safe loader allows besides torch's own classes: the plain data a state-dict pickle may hold.
_PLAIN_DATA = {"_codecs.encode", "builtins.bytearray", "builtins.complex", "builtins.set", "collections.Counter",
               "collections.OrderedDict"}


def _unsafe_globals(path: Path, is_zip: bool) -> list[str]:
    """What a refused pickle would import and call, found without running it: torch's own list for its zip format;
    for a bare (legacy) pickle, every import its opcodes name outside torch and plain data."""
    names, strings = set(), []
    try:
        if is_zip:
            return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        with open(path, "rb") as f:
            while True:  # a legacy torch.save file is several pickles, then raw tensor bytes
                for op, arg, _ in pickletools.genops(f):
                    if op.name == "GLOBAL":
                        names.add(arg.replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        names.add(".".join(strings[-2:]))
                    elif isinstance(arg, str):
                        strings.append(arg)
    except Exception:  # the end of the file, or bytes that are no (whole) pickle: what was seen so far
        pass
    return sorted(n for n in names - _PLAIN_DATA if n.split(".")[0] != "torch")


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
    "vae_diffusers": ("encoder.down_blocks.0.resnets.0.conv1.weight",),
    "vae_ldm": ("encoder.down.0.block.0.conv1.weight",),  # in a whole SD checkpoint: under first_stage_model.
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
    "vae_diffusers": "a VAE",
    "vae_ldm": "a VAE in the original (ldm) layout",
    "clip_vision": "a CLIP image encoder",
    "clip_text": "a CLIP text encoder",
    "empty": "an empty file (no tensors)",
    "unknown": "no format this pack knows",
}


def detect_format(sd: Mapping[str, object]) -> str:
    """The format name of a state dict (a key of ``SENTINEL_KEYS``), ``"empty"`` or ``"unknown"``."""
    if not sd:
        return "empty"
    for name in SENTINEL_KEYS:
        if has_format(sd, name) and (name != "clip_fc" or len(sd) == 2):
            return name
    return "unknown"


def has_format(sd: Mapping[str, object], name: str, prefix: str = "") -> bool:
    """Whether ``sd`` holds the sentinel keys of format ``name`` (under ``prefix``)."""
    return all(prefix + key in sd for key in SENTINEL_KEYS[name])


def is_motion_key(key: str) -> bool:
    return ".motion_modules." in key


def is_positional_encoding(key: str) -> bool:
    """The motion modules' sinusoid tables: persistent buffers, computed when a file lacks them."""
    return key.endswith(".pos_encoder.pe")


# ---- converters: source keys → our (official) keys ----------------------------------------------------------------


def convert_unchanged(sd: Mapping) -> dict:
    """Files that already hold our keys: the official FYE files and the community fp16 re-export; AnimateDiff's
    ``mm_sd_v15_v2.ckpt`` (``{down,up}_blocks.i.motion_modules.j.*`` and ``mid_block.motion_modules.0.*`` are the
    UNet3D's own keys, its ``pos_encoder.pe`` tables (1, 32, C) like ours); the sd-image-variations ``unet/``
    (diffusers ``UNet2DConditionModel``: the same names as both our UNets; what a ReferenceNet has no use for is set
    aside when composing, by name: ``UNUSED_BY_REFERENCENET``)."""
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
    **dict.fromkeys(("fye_unet", "fye_unet_no_motion", "fye_referencenet", "fye_guider", "animatediff",
                     "diffusers_unet", "empty"), convert_unchanged),
    "motion_adapter": convert_motion_adapter_to_ours,
}

# Keys of a full 2-D UNet that the ReferenceNet lacks by design (it stops after norm1 of its last transformer
# block). Base and ReferenceNet files may hold them; composing sets them aside by name — nothing else is dropped.
UNUSED_BY_REFERENCENET = ("conv_norm_out.", "conv_out.", "up_blocks.3.attentions.2.transformer_blocks.0.")
