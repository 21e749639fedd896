"""The pack's model folders inside ComfyUI's ``models/`` tree, and the opt-in download into them."""

from __future__ import annotations

import os

import comfy.utils
import folder_paths

from ..emoji_model.errors import ModelFileError
from ..emoji_model.model_files import FACE_LANDMARKER, ModelFile, download_model_file, missing_message

MEDIAPIPE_FOLDER = "mediapipe"


def register_folders() -> None:
    """Add ``models/mediapipe`` (first, as the default) to ComfyUI's folder list; extra_model_paths may add more."""
    folder_paths.add_model_folder_path(MEDIAPIPE_FOLDER, os.path.join(folder_paths.models_dir, MEDIAPIPE_FOLDER), is_default=True)
    folder_paths.folder_names_and_paths[MEDIAPIPE_FOLDER][1].add(".task")


def landmarker_choices() -> list[str]:
    """The files a user can pick: what is on disk, plus the official name so a fresh install can download it."""
    return sorted(set(folder_paths.get_filename_list(MEDIAPIPE_FOLDER)) | {FACE_LANDMARKER.name})


def check_landmarker(name: str, download_if_missing: bool) -> str | None:
    """A validation message for ComfyUI's graph check, or None when the file is there or will be downloaded."""
    if folder_paths.get_full_path(MEDIAPIPE_FOLDER, name) is not None:
        return None
    if download_if_missing and name == FACE_LANDMARKER.name:
        return None
    if download_if_missing:
        return f"Only '{FACE_LANDMARKER.name}' can be downloaded; '{name}' must be put in place by hand."
    return missing_message(FACE_LANDMARKER, folder_paths.get_folder_paths(MEDIAPIPE_FOLDER), requested=name)


def landmarker_path(name: str, download_if_missing: bool) -> str:
    """The full path of the chosen face landmarker, downloading the official file first when asked to."""
    path = folder_paths.get_full_path(MEDIAPIPE_FOLDER, name)
    if path is None and download_if_missing and name == FACE_LANDMARKER.name:
        path = str(_download(FACE_LANDMARKER))
    if path is None:
        raise ModelFileError(check_landmarker(name, download_if_missing))
    return path


def _download(model: ModelFile):
    bar = comfy.utils.ProgressBar(model.size)
    dest = folder_paths.get_folder_paths(MEDIAPIPE_FOLDER)[0]
    return download_model_file(model, dest, progress=lambda done, total: bar.update_absolute(done, total))
