"""The opt-in downloads of the files ``model_files`` names: the face landmarker (checksum verified) and the
Follow-Your-Emoji weights from Hugging Face. Nothing is downloaded unless a host asks (ComfyUI's
``download_if_missing``, the command line's ``--download``)."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

from . import model_files as mf
from .errors import ModelFileError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total)
SOURCES = ("official", "community")  # what download_weights can fetch


def download_model_file(
    model: mf.ModelFile, dest_dir: mf.PathLike, progress: Progress | None = None, urls: Iterable[str] | None = None
) -> Path:
    """Download ``model`` into ``dest_dir`` (opt-in only), verify size and sha256, then move it in place atomically."""
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / model.name
    errors = []
    for url in urls if urls is not None else model.urls:
        logger.info("Downloading %s from %s", model.name, url)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{model.name}.", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out:
                _copy_url(url, out, model.size, progress)
            digest = mf.sha256_of(tmp_name)
            if digest != model.sha256:
                raise ModelFileError(f"checksum mismatch: got sha256 {digest}, expected {model.sha256}")
            os.replace(tmp_name, target)
            return target
        except (OSError, ModelFileError) as exc:  # URLError is an OSError
            errors.append(f"{url}: {exc}")
        finally:
            if os.path.exists(tmp_name):
                os.unlink(tmp_name)
    raise ModelFileError(f"Could not download {model.name}:\n" + "\n".join(errors))


def _copy_url(url: str, out, expected_size: int, progress: Progress | None, chunk: int = 1 << 16) -> None:
    """Stream ``url`` into the open file ``out``, reporting bytes done against the size."""
    with urllib.request.urlopen(url, timeout=60) as response:
        total = int(response.headers.get("Content-Length") or expected_size)
        done = 0
        while block := response.read(chunk):
            out.write(block)
            done += len(block)
            if progress is not None:
                progress(done, total)


def download_weights(folder: mf.PathLike, *, source: str = "official") -> mf.ModelFiles:
    """Download what ``folder`` lacks from Hugging Face (``huggingface_hub``), in the official layout or the
    community fp16 files, and return its ``ModelFiles``."""
    if source not in SOURCES:
        raise ValueError(f"Unknown weights source {source!r}; choose one of {', '.join(SOURCES)}")
    from huggingface_hub import hf_hub_download, list_repo_files, snapshot_download

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    files, _ = mf.missing_parts(folder)
    if files is None and source == "official":
        staging = folder / ".download"
        snapshot_download(mf.FYE_REPO, allow_patterns=["ckpts/*"], local_dir=staging)
        target = folder / "follow-your-emoji"
        target.mkdir(exist_ok=True)
        for path in sorted((staging / "ckpts").glob("*")):
            if path.is_file():
                shutil.move(str(path), target / path.name)
        shutil.rmtree(staging, ignore_errors=True)
    elif files is None:
        for name in mf.COMMUNITY.values():
            hf_hub_download(mf.COMMUNITY_REPO, name, local_dir=folder)
    files, _ = mf.missing_parts(folder)
    if files is None:
        raise ModelFileError(f"The download did not complete the folder {folder}; see {mf.where_to_get()}")
    if files.layout == "official" and (files.image_encoder is None or files.unet_config is None):
        names = list_repo_files(mf.SD_VARIATIONS_REPO)
        weights = [n for n in names if n.startswith("image_encoder/") and n.endswith(".safetensors")] or \
                  [n for n in names if n.startswith("image_encoder/") and n.endswith(".bin")]
        for name in ["unet/config.json", "image_encoder/config.json", *weights[:1]]:
            hf_hub_download(mf.SD_VARIATIONS_REPO, name, local_dir=folder / mf.SD_VARIATIONS)
    if files.vae is None:
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            hf_hub_download(mf.VAE_REPO, name, local_dir=folder / mf.VAE_FOLDER)
    files = mf.find_model_files(folder)
    if files.layout == "official" and files.motion_module is None and not _has_motion_module(files.unet):
        hf_hub_download(mf.ANIMATEDIFF_REPO, mf.MOTION_MODULE, local_dir=folder / "AnimateDiff")
    return mf.require_weights(folder)


def _has_motion_module(path: Path) -> bool:
    from .checkpoint_formats import is_motion_key, read_state_dict

    return any(is_motion_key(key) for key in read_state_dict(path))
