"""Loading the three Follow-Your-Emoji networks from their weight files, strictly and without a second copy.

Files are read by ``checkpoint_formats`` (memory-mapped; a pickle that carries code is refused, never run), which
also names each file's format and renames its keys to ours. Composition follows the official order — base SD UNet
weights, then the AnimateDiff motion module (UNet3D only), then the Follow-Your-Emoji file on top — and then
every key is accounted for: anything missing, unexpected or mis-shaped is one ``ModelFileError`` naming the files
(the official loader drops such keys silently). Networks are built on the meta device and filled with
``assign=True``, each tensor cast to the chosen dtype on its way in, so a load holds one copy of the weights.
"""

from __future__ import annotations

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
from .model_config import configs_from_files, guider_config_from_state_dict, unet_config
from .model_files import ModelFiles, find_model_files

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
    bad = account_keys(sd, expected, may_lack=is_positional_encoding)
    if any(bad.values()):
        raise ModelFileError(_report(spec, sources, sd, origin, expected, bad))
    return sd


def account_keys(sd: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor],
                 may_lack: Callable[[str], bool] = lambda key: False) -> dict[str, list[str]]:
    """The ``missing``, ``unexpected`` and ``mis-shaped`` keys of ``sd`` against a model's ``expected`` state dict
    (a mis-shaped value has another shape, or is floating point where the model's is not, or the reverse)."""
    return {"missing": [k for k in expected if k not in sd and not may_lack(k)],
            "unexpected": [k for k in sd if k not in expected],
            "mis-shaped": [k for k in sd if k in expected and _incompatible(sd[k], expected[k])]}


def _incompatible(value: torch.Tensor, like: torch.Tensor) -> bool:
    return value.shape != like.shape or value.is_floating_point() != like.is_floating_point()


def key_report(what: str, bad: Mapping[str, Sequence[str]], notes: Sequence[str] = (), limit: int = 5) -> str:
    """``"{what}: 2 missing, 1 unexpected key(s)."``, then ``notes``, then the first keys of each kind (``bad``:
    kind → keys, as ``account_keys`` gives them, or described)."""
    counts = ", ".join(f"{len(keys)} {kind}" for kind, keys in bad.items() if keys)
    lines = [f"{what}: {counts} key(s).", *notes]
    for kind, keys in bad.items():
        if keys:
            more = f", … (+{len(keys) - limit} more)" if len(keys) > limit else ""
            lines.append(f"  {kind} ({len(keys)}): {', '.join(map(str, keys[:limit]))}{more}")
    return "\n".join(lines)


def _report(spec, sources, sd, origin, expected, bad) -> str:
    names = " + ".join(s.path.name for s in sources)
    missing, misshaped = bad["missing"], bad["mis-shaped"]
    notes = []
    fye = [s.path.name for s in sources if s.role == FYE]
    if any(is_motion_key(k) for k in missing) and not any(s.role == MOTION for s in sources):
        notes.append(f"{' / '.join(fye) or names} has no motion-module weights; give the AnimateDiff motion module "
                     "mm_sd_v15_v2.ckpt (or fye_motion_module-fp16.safetensors) as well.")
    elif any(is_motion_key(k) for k in missing):
        notes.append("The motion module lacks some modules (AnimateDiff v1 has no mid-block module; Follow-Your-Emoji "
                     "uses mm_sd_v15_v2).")
    if any(is_positional_encoding(k) and sd[k].dim() == 3 and sd[k].shape[1] == 24 for k in misshaped):
        notes.append("An AnimateDiff v1 module has 24 positions; Follow-Your-Emoji uses mm_sd_v15_v2 with 32.")
    described = {
        "missing": missing,
        "unexpected": [f"{k} [{origin[k].name}]" for k in bad["unexpected"]],
        "mis-shaped": [f"{k}: {tuple(sd[k].shape)} {sd[k].dtype} in {origin[k].name}, the model has "
                       f"{tuple(expected[k].shape)}" for k in misshaped],
    }
    return key_report(f"Cannot load the {spec.title} from {names}", described, notes)


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

    cfg = unet_config(config)
    return load_weights(lambda: build_referencenet(cfg), "referencenet", [base, path], dtype=dtype, device=device)


def load_unet3d(path: PathLike, *, base: PathLike | None = None, motion_module: PathLike | None = None, config=None,
                dtype: torch.dtype | str = torch.float32, device="cpu") -> nn.Module:
    """The denoising UNet3D from ``unet.pth`` / ``FYE_unet-fp16.safetensors``, over the base UNet and the AnimateDiff
    motion module (required when the UNet file has no motion-module weights). ``config``: a ``UNet3DConfig``, or
    what ``load_referencenet`` takes (then the official motion-module settings); default full size."""
    from .networks import build_unet3d
    from .networks.config import UNet3DConfig

    cfg = config if isinstance(config, UNet3DConfig) else UNet3DConfig(unet=unet_config(config))
    return load_weights(lambda: build_unet3d(cfg), "unet3d", [base, motion_module, path], dtype=dtype, device=device)


def load_guider(path: PathLike, *, config=None, dtype: torch.dtype | str = torch.float32, device="cpu") -> nn.Module:
    """The landmark guider from ``lmk_guider.pth`` / ``FYE_lmk_guider.safetensors``; its sizes are read from the
    file unless ``config`` (a ``GuiderConfig``) is given."""
    from .networks import build_guider

    sources = read_sources("guider", [path])
    cfg = config or guider_config_from_state_dict(sources[0].tensors)
    return load_weights(lambda: build_guider(cfg), "guider", [path], dtype=dtype, device=device, sources=sources)


# ---- a whole folder -----------------------------------------------------------------------------------------------


class FollowYourEmojiNetworks(nn.Module):
    """The three trained networks as one module (one unit for a host's memory manager), plus where they came from."""

    def __init__(self, referencenet: nn.Module, unet: nn.Module, guider: nn.Module, files: ModelFiles):
        super().__init__()
        self.referencenet, self.unet, self.guider = referencenet, unet, guider
        self.files = files


def load_follow_your_emoji(folder: PathLike, *, dtype: torch.dtype | str = torch.float32, device="cpu",
                           motion_module: PathLike | None = None, base_unet: PathLike | None = None,
                           configs=None) -> FollowYourEmojiNetworks:
    """ReferenceNet, UNet3D and guider from a model folder (see ``model_files.find_model_files``). Sizes: ``configs``
    (``NetworkConfigs``) if given, else ``configs_from_files``: the folder's ``unet/config.json`` (full size without
    one), the official motion-module settings and the guider's sizes from its file, each overridable by the folder's
    optional ``follow-your-emoji/config.json`` (``FYE_config.json`` in the community layout, see
    ``model_config.read_pack_config``). ``motion_module`` and ``base_unet`` (the base SD UNet weights) override the
    folder's. The CLIP encoder and the VAE are ``files.image_encoder`` / ``files.vae``, for ``encoders``."""
    files = find_model_files(folder)
    motion_module = motion_module or files.motion_module
    base_unet = base_unet or files.base_unet
    if configs is None:
        configs = configs_from_files(files, read_sources("guider", [files.guider])[0].tensors)
    ref_cfg, unet_cfg, guider_cfg = configs.referencenet, configs.unet3d, configs.guider
    return FollowYourEmojiNetworks(
        referencenet=load_referencenet(files.referencenet, base=base_unet, config=ref_cfg, dtype=dtype,
                                       device=device),
        unet=load_unet3d(files.unet, base=base_unet, motion_module=motion_module, config=unet_cfg,
                         dtype=dtype, device=device),
        guider=load_guider(files.guider, config=guider_cfg, dtype=dtype, device=device),
        files=files,
    )
