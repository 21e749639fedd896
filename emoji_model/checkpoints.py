"""Loading the three Follow-Your-Emoji networks from their weight files, strictly and without a second copy.

Files are read by ``checkpoint_formats`` (memory-mapped; a pickle that carries code is refused, never run), which
also names each file's format and renames its keys to ours. Composition follows the official order — base SD UNet
weights, then the AnimateDiff motion module (UNet3D only), then the Follow-Your-Emoji file on top — and then
every key is accounted for: anything missing, unexpected or mis-shaped is one ``ModelFileError`` naming the files
(the official loader drops such keys silently). Networks are built on the meta device and filled with
``assign=True``, each tensor cast to the chosen dtype on its way in, so a load holds one copy of the weights.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .checkpoint_formats import (
    CONVERTERS,
    DESCRIPTIONS,
    PathLike,
    UNUSED_BY_REFERENCENET,
    detect_format,
    is_motion_key,
    is_positional_encoding,
    read_state_dict,
)
from .errors import ModelFileError

logger = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}

# ---- composing ----------------------------------------------------------------------------------------------------

BASE, MOTION, FYE = 0, 1, 2  # composition order: later files override earlier ones


@dataclass(frozen=True)
class _Network:
    title: str
    roles: Mapping[str, int]  # accepted file format → its place in the composition
    unused: tuple[str, ...] = ()  # key prefixes this network lacks by design (set aside, by name)
    expects: str = ""  # what to give, for messages


NETWORKS = {
    "referencenet": _Network(
        "ReferenceNet",
        {"empty": BASE, "diffusers_unet": BASE, "fye_referencenet": FYE, "fye_unet_no_motion": FYE},
        UNUSED_BY_REFERENCENET,
        "referencenet.pth / FYE_referencenet-fp16.safetensors (optionally over sd-image-variations-diffusers/unet)",
    ),
    "unet3d": _Network(
        "UNet3D",
        {"empty": BASE, "diffusers_unet": BASE, "animatediff": MOTION, "motion_adapter": MOTION,
         "fye_unet": FYE, "fye_unet_no_motion": FYE},
        (),
        "unet.pth / FYE_unet-fp16.safetensors (optionally over sd-image-variations-diffusers/unet and "
        "mm_sd_v15_v2.ckpt)",
    ),
    "guider": _Network("landmark guider", {"fye_guider": FYE}, (), "lmk_guider.pth / FYE_lmk_guider.safetensors"),
}


@dataclass(frozen=True)
class Source:
    """One file's contribution, converted to our keys."""

    path: Path
    format: str
    role: int
    tensors: dict[str, torch.Tensor]


def read_sources(network: str, files: Sequence[PathLike | None]) -> list[Source]:
    """Read, recognise and convert each file (``None`` entries are skipped), in composition order."""
    spec = NETWORKS[network]
    sources = []
    for path in (Path(f) for f in files if f is not None):
        raw = read_state_dict(path)
        fmt = detect_format(raw)
        if fmt not in spec.roles:
            first = f" Its first keys: {', '.join(list(raw)[:3])}" if fmt == "unknown" else ""
            raise ModelFileError(
                f"{path.name} looks like {DESCRIPTIONS[fmt]}, not a {spec.title} file. Expected {spec.expects}.{first}")
        if network == "referencenet" and fmt == "fye_unet_no_motion":
            logger.warning("%s holds conv_out, which a ReferenceNet does not use: is it the UNet file?", path.name)
        sources.append(Source(path, fmt, spec.roles[fmt], CONVERTERS[fmt](raw)))
    if not sources:
        raise ModelFileError(f"No weights file given for the {spec.title}; expected {spec.expects}.")
    return sorted(sources, key=lambda s: s.role)  # stable: files of one role keep their given order


def compose_state_dict(network: str, sources: Sequence[Source], expected: Mapping[str, torch.Tensor]) -> dict:
    """Overlay the sources in order and account for every key against ``expected`` (the model's state dict, meta
    tensors are fine). Motion-module positional tables may be absent (they are computed); anything else missing,
    unexpected or mis-shaped raises one ModelFileError."""
    spec = NETWORKS[network]
    sd: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    for source in sources:
        for key, value in source.tensors.items():
            sd[key], origin[key] = value, source.path
    unused = [k for k in sd if k not in expected and k.startswith(spec.unused)]
    if unused:
        logger.debug("%s: %d keys a %s does not have, set aside (%s…)", network, len(unused), spec.title, unused[0])
    for key in unused:
        del sd[key]
    missing = [k for k in expected if k not in sd and not is_positional_encoding(k)]
    unexpected = [k for k in sd if k not in expected]
    misshaped = [k for k in sd if k in expected and _incompatible(sd[k], expected[k])]
    if missing or unexpected or misshaped:
        raise ModelFileError(_report(spec, sources, sd, origin, expected, missing, unexpected, misshaped))
    return sd


def _incompatible(value: torch.Tensor, like: torch.Tensor) -> bool:
    return value.shape != like.shape or value.is_floating_point() != like.is_floating_point()


def _report(spec, sources, sd, origin, expected, missing, unexpected, misshaped, limit: int = 5) -> str:
    names = " + ".join(s.path.name for s in sources)
    counts = ", ".join(f"{len(keys)} {kind}" for kind, keys in
                       (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped)) if keys)
    lines = [f"Cannot load the {spec.title} from {names}: {counts} key(s)."]
    fye = [s.path.name for s in sources if s.role == FYE]
    if any(is_motion_key(k) for k in missing) and not any(s.role == MOTION for s in sources):
        lines.append(f"{' / '.join(fye) or names} has no motion-module weights; give the AnimateDiff motion module "
                     "mm_sd_v15_v2.ckpt (or fye_motion_module-fp16.safetensors) as well.")
    elif any(is_motion_key(k) for k in missing):
        lines.append("The motion module lacks some modules (AnimateDiff v1 has no mid-block module; Follow-Your-Emoji "
                     "uses mm_sd_v15_v2).")
    if missing:
        lines.append(f"  missing ({len(missing)}): {_first(missing, limit)}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): " + _first(
            [f"{k} [{origin[k].name}]" for k in unexpected], limit))
    if misshaped:
        lines.append(f"  mis-shaped ({len(misshaped)}): " + _first(
            [f"{k}: {tuple(sd[k].shape)} {sd[k].dtype} in {origin[k].name}, the model has {tuple(expected[k].shape)}"
             for k in misshaped], limit))
        if any(is_positional_encoding(k) and sd[k].dim() == 3 and sd[k].shape[1] == 24 for k in misshaped):
            lines.append("  (an AnimateDiff v1 module has 24 positions; Follow-Your-Emoji uses mm_sd_v15_v2 with 32)")
    return "\n".join(lines)


def _first(keys: Sequence[str], limit: int) -> str:
    return ", ".join(keys[:limit]) + (f", … (+{len(keys) - limit} more)" if len(keys) > limit else "")


# ---- loading into a network ---------------------------------------------------------------------------------------


def load_weights(
    build: Callable[[], nn.Module],
    network: str,
    files: Sequence[PathLike | None],
    *,
    dtype: torch.dtype | str = torch.float32,
    device: torch.device | str = "cpu",
    sources: Sequence[Source] | None = None,
) -> nn.Module:
    """Build a network on the meta device, compose its files and assign the weights (strictly), cast to ``dtype``
    on ``device``. Returns it in eval mode without gradients. ``network`` is "referencenet", "unet3d" or "guider"."""
    dtype = _dtype(dtype)
    sources = list(sources) if sources is not None else read_sources(network, files)
    with torch.device("meta"):
        module = build()
    expected = module.state_dict(keep_vars=True)
    sd = compose_state_dict(network, sources, expected)
    computed = [k for k in expected if k not in sd]  # only positional tables get here
    for key in computed:
        sd[key] = _sinusoid(expected[key].shape)
    if computed:
        logger.info("%s: computed %d positional-encoding tables absent from the files", network, len(computed))
    sd = {k: _cast(v, dtype, device) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=True)
    _materialise_buffers(module, dtype, device)
    return module.requires_grad_(False).eval()


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def _cast(t: torch.Tensor, dtype: torch.dtype, device) -> torch.Tensor:
    # Same dtype and device: no copy (the parameter stays backed by the file mapping, copy-on-write).
    return t.to(device=device, dtype=dtype if t.is_floating_point() else t.dtype).contiguous()


def _sinusoid(shape: torch.Size) -> torch.Tensor:
    from .networks.motion import sinusoid_table

    return sinusoid_table(shape[1], shape[2])  # (1, max_frames, C), the official table


def _materialise_buffers(module: nn.Module, dtype: torch.dtype, device) -> None:
    """Buffers that no file holds (non-persistent ones built on meta) get their values; any other meta tensor left
    is a bug in this pack, not in the files."""
    for name, buffer in list(module.named_buffers()):
        if not buffer.is_meta:
            continue
        owner_name, _, leaf = name.rpartition(".")
        owner = module.get_submodule(owner_name)
        if leaf != "pe":
            raise RuntimeError(f"buffer {name} has no value after loading and no known way to compute it")
        owner._buffers[leaf] = _sinusoid(buffer.shape).to(device=device, dtype=dtype)
    left = [n for n, p in module.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"parameters left on the meta device after loading: {left[:5]}")


# ---- the three networks -------------------------------------------------------------------------------------------


def load_referencenet(path: PathLike, *, base: PathLike | None = None, config=None,
                      dtype: torch.dtype | str = torch.float32, device="cpu") -> nn.Module:
    """The ReferenceNet from ``referencenet.pth`` / ``FYE_referencenet-fp16.safetensors`` (over the base UNet
    ``base`` if given). ``config``: a ``UNetConfig``, a diffusers ``unet/config.json`` path or dict; default: full
    size."""
    from .networks import build_referencenet

    cfg = _unet_config(config)
    return load_weights(lambda: build_referencenet(cfg), "referencenet", [base, path], dtype=dtype, device=device)


def load_unet3d(path: PathLike, *, base: PathLike | None = None, motion_module: PathLike | None = None, config=None,
                dtype: torch.dtype | str = torch.float32, device="cpu") -> nn.Module:
    """The denoising UNet3D from ``unet.pth`` / ``FYE_unet-fp16.safetensors``, over the base UNet and the AnimateDiff
    motion module (required when the UNet file has no motion-module weights). ``config``: a ``UNet3DConfig``, or
    what ``load_referencenet`` takes (then the official motion-module settings); default full size."""
    from .networks import build_unet3d
    from .networks.config import UNet3DConfig

    cfg = config if isinstance(config, UNet3DConfig) else UNet3DConfig(unet=_unet_config(config))
    return load_weights(lambda: build_unet3d(cfg), "unet3d", [base, motion_module, path], dtype=dtype, device=device)


def load_guider(path: PathLike, *, config=None, dtype: torch.dtype | str = torch.float32, device="cpu") -> nn.Module:
    """The landmark guider from ``lmk_guider.pth`` / ``FYE_lmk_guider.safetensors``; its sizes are read from the
    file unless ``config`` (a ``GuiderConfig``) is given."""
    from .networks import build_guider

    sources = read_sources("guider", [path])
    cfg = config or guider_config_from_state_dict(sources[0].tensors)
    return load_weights(lambda: build_guider(cfg), "guider", [path], dtype=dtype, device=device, sources=sources)


def guider_config_from_state_dict(sd: Mapping[str, torch.Tensor]):
    """GuiderConfig from the shapes of a guider state dict (conv_in, the stride-2 ``blocks.{1,3,..}``, conv_out)."""
    from .networks.config import GuiderConfig

    widths = [sd["conv_in.weight"].shape[0]]
    i = 1
    while f"blocks.{i}.weight" in sd:
        widths.append(sd[f"blocks.{i}.weight"].shape[0])
        i += 2
    return GuiderConfig(conditioning_channels=sd["conv_in.weight"].shape[1], block_out_channels=tuple(widths),
                        conditioning_embedding_channels=sd["conv_out.weight"].shape[0])


def _unet_config(config):
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


# ---- a whole folder -----------------------------------------------------------------------------------------------

_SD_VARIATIONS = "sd-image-variations-diffusers"
_VAE_FILES = ("vae-ft-mse-840000-ema-pruned.safetensors", "sd-vae-ft-mse.safetensors")
_COMMUNITY = {"referencenet": "FYE_referencenet-fp16.safetensors", "unet": "FYE_unet-fp16.safetensors",
              "guider": "FYE_lmk_guider.safetensors", "motion_module": "fye_motion_module-fp16.safetensors",
              "image_encoder": "sd-image-variations-encoder-fp16.safetensors"}


@dataclass(frozen=True)
class ModelFiles:
    """Where each part lives in a model folder (``None``: absent, optional)."""

    layout: str  # "official" (pretrained_models/) or "community" (kijai's fp16 safetensors)
    referencenet: Path
    unet: Path
    guider: Path
    unet_config: Path | None = None  # sd-image-variations-diffusers/unet/config.json (sizes)
    base_unet: Path | None = None  # sd-image-variations-diffusers/unet weights
    motion_module: Path | None = None
    image_encoder: Path | None = None  # a folder or one file, for encoders.load_clip_image_encoder
    vae: Path | None = None  # a folder, for encoders.load_vae
    config: Path | None = None  # our optional sizes file (follow-your-emoji/config.json, FYE_config.json)


def find_model_files(folder: PathLike) -> ModelFiles:
    """The files of an official ``pretrained_models/`` folder (``follow-your-emoji/``, ``sd-image-variations-
    diffusers/``, ``AnimateDiff/``, ``sd-vae-ft-mse/``) or of a folder of the community fp16 files."""
    folder = Path(folder)
    sd_unet = folder / _SD_VARIATIONS / "unet"
    common = dict(
        unet_config=_first_file(sd_unet / "config.json"),
        base_unet=_first_file(sd_unet / "diffusion_pytorch_model.safetensors", sd_unet / "diffusion_pytorch_model.bin"),
    )
    if (folder / "follow-your-emoji").is_dir():
        fye = folder / "follow-your-emoji"
        parts = {name: _first_file(fye / f"{stem}.safetensors", fye / f"{stem}.pth")
                 for name, stem in (("referencenet", "referencenet"), ("unet", "unet"), ("guider", "lmk_guider"))}
        _require_parts(folder, parts, "follow-your-emoji/{referencenet,unet,lmk_guider}.pth or .safetensors")
        return ModelFiles(
            "official", **parts, **common,
            motion_module=_first_file(folder / "AnimateDiff" / "mm_sd_v15_v2.ckpt",
                                      folder / "AnimateDiff" / "mm_sd_v15_v2.safetensors"),
            image_encoder=_first_file(folder / _SD_VARIATIONS / "image_encoder"),
            vae=_first_file(folder / "sd-vae-ft-mse"),
            config=_first_file(fye / PACK_CONFIG_NAMES["official"]),
        )
    parts = {name: _first_file(folder / _COMMUNITY[name]) for name in ("referencenet", "unet", "guider")}
    if not any(parts.values()):
        raise ModelFileError(
            f"{folder} holds neither an official pretrained_models layout (follow-your-emoji/unet.pth, …) nor the "
            f"community files ({', '.join(_COMMUNITY[n] for n in ('unet', 'referencenet', 'guider'))})")
    _require_parts(folder, parts, ", ".join(_COMMUNITY[n] for n in ("referencenet", "unet", "guider")))
    return ModelFiles("community", **parts, **common, motion_module=_first_file(folder / _COMMUNITY["motion_module"]),
                      image_encoder=_first_file(folder / _COMMUNITY["image_encoder"]),
                      vae=_first_file(folder / "sd-vae-ft-mse", *(folder / name for name in _VAE_FILES)),
                      config=_first_file(folder / PACK_CONFIG_NAMES["community"]))


def _first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def _require_parts(folder: Path, parts: Mapping[str, Path | None], wanted: str) -> None:
    absent = [name for name, path in parts.items() if path is None]
    if absent:
        raise ModelFileError(f"{folder} lacks the {', '.join(absent)} weights; expected {wanted}")


class FollowYourEmojiNetworks(nn.Module):
    """The three trained networks as one module (one unit for a host's memory manager), plus where they came from."""

    def __init__(self, referencenet: nn.Module, unet: nn.Module, guider: nn.Module, files: ModelFiles):
        super().__init__()
        self.referencenet, self.unet, self.guider = referencenet, unet, guider
        self.files = files


def load_follow_your_emoji(folder: PathLike, *, dtype: torch.dtype | str = torch.float32, device="cpu",
                           motion_module: PathLike | None = None, base_unet: PathLike | None = None,
                           configs=None) -> FollowYourEmojiNetworks:
    """ReferenceNet, UNet3D and guider from a model folder (see ``find_model_files``). Sizes: ``configs``
    (``NetworkConfigs``) if given, else ``configs_from_files``: the folder's ``unet/config.json`` (full size without
    one), the official motion-module settings and the guider's sizes from its file, each overridable by the folder's
    optional ``follow-your-emoji/config.json`` (``FYE_config.json`` in the community layout, see
    ``read_pack_config``). ``motion_module`` and ``base_unet`` (the base SD UNet weights) override the folder's.
    The CLIP encoder and the VAE are ``files.image_encoder`` / ``files.vae``, for ``encoders``."""
    files = find_model_files(folder)
    motion_module = motion_module or files.motion_module
    base_unet = base_unet or files.base_unet
    if configs is None:
        configs = configs_from_files(files)
    ref_cfg, unet_cfg, guider_cfg = configs.referencenet, configs.unet3d, configs.guider
    return FollowYourEmojiNetworks(
        referencenet=load_referencenet(files.referencenet, base=base_unet, config=ref_cfg, dtype=dtype,
                                       device=device),
        unet=load_unet3d(files.unet, base=base_unet, motion_module=motion_module, config=unet_cfg,
                         dtype=dtype, device=device),
        guider=load_guider(files.guider, config=guider_cfg, dtype=dtype, device=device),
        files=files,
    )


# ---- the optional sizes file ---------------------------------------------------------------------------------------

PACK_CONFIG_NAMES = {"official": "config.json", "community": "FYE_config.json"}  # in follow-your-emoji/ | the folder

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


def configs_from_files(files: ModelFiles):
    """The ``NetworkConfigs`` a folder describes; the guider's sizes are read from its file when not given."""
    from .networks.config import NetworkConfigs, UNet3DConfig, guider_config_from_official, motion_config_from_official

    pack = read_pack_config(files.config) if files.config is not None else {}
    where = f" (from {files.config})" if files.config is not None else ""
    try:
        unet = _unet_config(pack.get("unet", files.unet_config))
        motion = motion_config_from_official(_merged(OFFICIAL_UNET_ADDITIONAL_KWARGS,
                                                     pack.get("unet_additional_kwargs", {})))
        guider = (guider_config_from_official(pack["lmk_guider"]) if "lmk_guider" in pack
                  else guider_config_from_state_dict(read_sources("guider", [files.guider])[0].tensors))
        return NetworkConfigs(referencenet=unet, unet3d=UNet3DConfig(unet=unet, motion=motion), guider=guider)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"Unsupported network sizes{where}: {exc}") from None
