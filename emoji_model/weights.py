"""Where the Follow-Your-Emoji weights come from, what a folder lacks, and the opt-in download (Hugging Face).

Two layouts are understood (``checkpoints.find_model_files``):

- the official ``pretrained_models/`` folder: ``follow-your-emoji/{referencenet,unet,lmk_guider}.pth`` (the release
  ``YueMafighting/FollowYourEmoji``, folder ``ckpts/``), ``sd-image-variations-diffusers/{unet/config.json,
  image_encoder/}`` (``lambdalabs/sd-image-variations-diffusers``), ``sd-vae-ft-mse/``
  (``stabilityai/sd-vae-ft-mse``) and, when ``unet.pth`` has no motion-module weights,
  ``AnimateDiff/mm_sd_v15_v2.ckpt`` (``guoyww/animatediff``);
- the community fp16 re-export (``Kijai/FollowYourEmoji-safetensors``): ``FYE_*.safetensors``,
  ``fye_motion_module-fp16.safetensors``, ``sd-image-variations-encoder-fp16.safetensors`` in the folder itself,
  plus ``sd-vae-ft-mse/``.

Nothing is downloaded unless ``download_weights`` is called (the command line's ``--download``).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from .checkpoints import ModelFiles, find_model_files
from .errors import ModelFileError

logger = logging.getLogger(__name__)

FYE_REPO = "YueMafighting/FollowYourEmoji"  # ckpts/{referencenet,unet,lmk_guider}.pth
SD_VARIATIONS_REPO = "lambdalabs/sd-image-variations-diffusers"  # unet/config.json, image_encoder/
VAE_REPO = "stabilityai/sd-vae-ft-mse"
ANIMATEDIFF_REPO = "guoyww/animatediff"  # mm_sd_v15_v2.ckpt
COMMUNITY_REPO = "Kijai/FollowYourEmoji-safetensors"
COMMUNITY_FILES = ("FYE_referencenet-fp16.safetensors", "FYE_unet-fp16.safetensors", "FYE_lmk_guider.safetensors",
                   "fye_motion_module-fp16.safetensors", "sd-image-variations-encoder-fp16.safetensors")
SOURCES = ("official", "community")

WHERE_TO_GET_THEM = f"""Where to get them (Hugging Face):
  official layout:
    https://huggingface.co/{FYE_REPO}  ckpts/*.pth → follow-your-emoji/
    https://huggingface.co/{SD_VARIATIONS_REPO}  unet/config.json and image_encoder/ → sd-image-variations-diffusers/
    https://huggingface.co/{VAE_REPO}  config.json + diffusion_pytorch_model.safetensors → sd-vae-ft-mse/
    https://huggingface.co/{ANIMATEDIFF_REPO}  mm_sd_v15_v2.ckpt → AnimateDiff/ (if unet.pth lacks the motion module)
  or the community fp16 files:
    https://huggingface.co/{COMMUNITY_REPO}  {', '.join(COMMUNITY_FILES)} → the folder itself,
    plus https://huggingface.co/{VAE_REPO} → sd-vae-ft-mse/"""


def missing_parts(folder: str | os.PathLike) -> tuple[ModelFiles | None, list[str]]:
    """The folder's files (None if not even the networks are there) and what an animation still needs."""
    try:
        files = find_model_files(folder)
    except ModelFileError as exc:
        return None, [str(exc)]
    missing = []
    if files.image_encoder is None:
        missing.append("the CLIP image encoder (sd-image-variations-diffusers/image_encoder/ or "
                       "sd-image-variations-encoder-fp16.safetensors)")
    if files.vae is None:
        missing.append("the VAE (sd-vae-ft-mse/ with config.json and diffusion_pytorch_model.safetensors)")
    return files, missing


def require_weights(folder: str | os.PathLike, *, download_hint: str = "") -> ModelFiles:
    """The folder's ``ModelFiles`` if it holds all an animation needs, else ``ModelFileError`` naming the folder, what
    is missing and where to get it (``download_hint``: how to download instead, e.g. the command-line flag)."""
    files, missing = missing_parts(folder)
    if not missing:
        return files
    lacks = "\n".join(f"  - {item}" for item in missing)
    hint = f"\n{download_hint}" if download_hint else ""
    raise ModelFileError(f"The model folder {Path(folder).resolve()} is incomplete:\n{lacks}\n{WHERE_TO_GET_THEM}{hint}")


def download_weights(folder: str | os.PathLike, *, source: str = "official") -> ModelFiles:
    """Download what ``folder`` lacks from Hugging Face (``huggingface_hub``), in the official layout or the
    community fp16 files, and return its ``ModelFiles``. Only called when the user asks for it."""
    if source not in SOURCES:
        raise ValueError(f"Unknown weights source {source!r}; choose one of {', '.join(SOURCES)}")
    from huggingface_hub import hf_hub_download, list_repo_files, snapshot_download

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files, _ = missing_parts(folder)
    if files is None and source == "official":
        staging = folder / ".download"
        snapshot_download(FYE_REPO, allow_patterns=["ckpts/*"], local_dir=staging)
        target = folder / "follow-your-emoji"
        target.mkdir(exist_ok=True)
        for path in sorted((staging / "ckpts").glob("*")):
            if path.is_file():
                shutil.move(str(path), target / path.name)
        shutil.rmtree(staging, ignore_errors=True)
    elif files is None:
        for name in COMMUNITY_FILES:
            hf_hub_download(COMMUNITY_REPO, name, local_dir=folder)
    files, _ = missing_parts(folder)
    if files is None:
        raise ModelFileError(f"The download did not complete the folder {folder}; see {WHERE_TO_GET_THEM}")
    if files.layout == "official" and (files.image_encoder is None or files.unet_config is None):
        names = list_repo_files(SD_VARIATIONS_REPO)
        weights = [n for n in names if n.startswith("image_encoder/") and n.endswith(".safetensors")] or \
                  [n for n in names if n.startswith("image_encoder/") and n.endswith(".bin")]
        for name in ["unet/config.json", "image_encoder/config.json", *weights[:1]]:
            hf_hub_download(SD_VARIATIONS_REPO, name, local_dir=folder / "sd-image-variations-diffusers")
    if files.vae is None:
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            hf_hub_download(VAE_REPO, name, local_dir=folder / "sd-vae-ft-mse")
    files = find_model_files(folder)
    if files.layout == "official" and files.motion_module is None and not _has_motion_module(files.unet):
        hf_hub_download(ANIMATEDIFF_REPO, "mm_sd_v15_v2.ckpt", local_dir=folder / "AnimateDiff")
    return require_weights(folder)


def _has_motion_module(path: Path) -> bool:
    from .checkpoint_formats import is_motion_key, read_state_dict

    return any(is_motion_key(key) for key in read_state_dict(path))
