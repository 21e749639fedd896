"""The pack's model folders inside ComfyUI's ``models/`` tree, and the opt-in download into them.

``models/mediapipe``: the face landmarker bundle. ``models/followyouremoji``: one sub-folder per set of
Follow-Your-Emoji weights (an official ``pretrained_models/`` layout or the community fp16 files), plus loose weight
files a user may pick as the base UNet or the motion module.
"""

from __future__ import annotations

import os

import comfy.utils
import folder_paths

from ..emoji_model.downloads import download_model_file
from ..emoji_model.errors import ModelFileError
from ..emoji_model.model_files import (
    COMMUNITY,
    FACE_LANDMARKER,
    LAYOUTS,
    find_model_files,
    missing_message,
    where_to_get,
)

MEDIAPIPE_FOLDER = "mediapipe"
FYE_FOLDER = "followyouremoji"
ANIMATEDIFF_FOLDER = "animatediff_models"  # registered by AnimateDiff-Evolved when it is installed
DEFAULT_FYE_MODEL = "pretrained_models"  # the official folder's name, offered when models/followyouremoji is empty
NONE = "none"


def register_folders() -> None:
    """Add ``models/mediapipe`` and ``models/followyouremoji`` (first, as the defaults) to ComfyUI's folder list;
    extra_model_paths may add more."""
    folder_paths.add_model_folder_path(MEDIAPIPE_FOLDER, os.path.join(folder_paths.models_dir, MEDIAPIPE_FOLDER), is_default=True)
    folder_paths.folder_names_and_paths[MEDIAPIPE_FOLDER][1].add(".task")
    folder_paths.add_model_folder_path(FYE_FOLDER, os.path.join(folder_paths.models_dir, FYE_FOLDER), is_default=True)
    folder_paths.folder_names_and_paths[FYE_FOLDER][1].update(folder_paths.supported_pt_extensions)


def landmarker_choices() -> list[str]:
    """The files a user can pick: what is on disk, plus the official name so a fresh install can download it."""
    return sorted(set(folder_paths.get_filename_list(MEDIAPIPE_FOLDER)) | {FACE_LANDMARKER.name})


def check_landmarker(name: str) -> str | None:
    """The graph check's message for a face landmarker that is missing and cannot be downloaded, else None. The
    official file, when missing, passes: the node downloads it if download_if_missing is on, else says so once when
    it runs (ComfyUI repeats a check's message for every input it takes, so the check takes only ``model``)."""
    if name == FACE_LANDMARKER.name or folder_paths.get_full_path(MEDIAPIPE_FOLDER, name) is not None:
        return None
    return _missing_landmarker(name) + f"\nOnly '{FACE_LANDMARKER.name}' can be downloaded by the node."


def _missing_landmarker(name: str) -> str:
    message = missing_message(FACE_LANDMARKER, folder_paths.get_folder_paths(MEDIAPIPE_FOLDER), requested=name)
    if name == FACE_LANDMARKER.name:
        message += f"\nOr switch on download_if_missing on this node to fetch it into models/{MEDIAPIPE_FOLDER}/."
    return message


def landmarker_path(name: str, download_if_missing: bool) -> str:
    """The full path of the chosen face landmarker, downloading the official file first when asked to."""
    path = folder_paths.get_full_path(MEDIAPIPE_FOLDER, name)
    if path is None and download_if_missing and name == FACE_LANDMARKER.name:
        path = str(_download_landmarker())
    if path is None:
        raise ModelFileError(_missing_landmarker(name))
    return path


def _download_landmarker():
    bar = comfy.utils.ProgressBar(FACE_LANDMARKER.size)
    dest = folder_paths.get_folder_paths(MEDIAPIPE_FOLDER)[0]
    return download_model_file(FACE_LANDMARKER, dest, progress=lambda done, total: bar.update_absolute(done, total))


# ---- models/followyouremoji ---------------------------------------------------------------------------------------


ROOT_CHOICE = f"community files in models/{FYE_FOLDER}"  # the community fp16 files right in the folder itself


def model_folder_choices() -> list[str]:
    """The sub-folders of every ``followyouremoji`` folder (each one set of weights), and ``ROOT_CHOICE`` when a folder
    itself holds the community fp16 files (where the editor's missing-models dialog downloads them); the official
    folder name when there is nothing, so that the graph check can say what to put there."""
    names = {
        entry.name
        for root in folder_paths.get_folder_paths(FYE_FOLDER) if os.path.isdir(root)
        for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")
    }
    if _community_root() is not None:
        names.add(ROOT_CHOICE)
    return sorted(names) or [DEFAULT_FYE_MODEL]


def _community_root() -> str | None:
    return next((root for root in folder_paths.get_folder_paths(FYE_FOLDER)
                 if os.path.isfile(os.path.join(root, COMMUNITY["unet"]))), None)


def check_model_folder(name: str) -> str | None:
    """A validation message for ComfyUI's graph check, or None when ``name`` holds a complete set of weights."""
    folder = _model_folder(name)
    # In a graph the VAE and the CLIP image encoder come from ComfyUI's own loaders, out of their own folders.
    sources = where_to_get(f"models/{FYE_FOLDER}/{name}/", vae_to="models/vae/", clip_to="models/clip_vision/")
    if folder is None:
        roots = "\n".join(f"  - {root}" for root in folder_paths.get_folder_paths(FYE_FOLDER))
        return (f"The Follow-Your-Emoji model folder '{name}' was not found. Looked in:\n{roots}\n"
                f"Create models/{FYE_FOLDER}/{name}/ holding {LAYOUTS}.\n{sources}")
    try:
        find_model_files(folder)
    except ModelFileError as exc:
        return f"{exc}\n{sources}"
    return None


def model_folder_path(name: str) -> str:
    """The full path of the chosen model folder (``ModelFileError`` with the graph check's message if unusable)."""
    message = check_model_folder(name)
    if message is not None:
        raise ModelFileError(message)
    return _model_folder(name)


def _model_folder(name: str) -> str | None:
    if name == ROOT_CHOICE:
        return _community_root()
    if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
        return None  # only sub-folders of the registered folders
    return next((os.path.join(root, name) for root in folder_paths.get_folder_paths(FYE_FOLDER)
                 if os.path.isdir(os.path.join(root, name))), None)


def weight_file_choices() -> list[str]:
    """``none`` and the weight files under ``models/followyouremoji`` (and ``models/animatediff_models``, if a pack
    registered it), for the optional base UNet and motion module."""
    files = set(folder_paths.get_filename_list(FYE_FOLDER))
    if ANIMATEDIFF_FOLDER in folder_paths.folder_names_and_paths:
        files |= set(folder_paths.get_filename_list(ANIMATEDIFF_FOLDER))
    return [NONE, *sorted(files)]


def weight_file_path(name: str) -> str | None:
    """The full path of an optional weight file (None for ``none``); ``ModelFileError`` if it is gone."""
    if name == NONE:
        return None
    folders = [folder for folder in (FYE_FOLDER, ANIMATEDIFF_FOLDER) if folder in folder_paths.folder_names_and_paths]
    path = next((p for p in (folder_paths.get_full_path(folder, name) for folder in folders) if p is not None), None)
    if path is None:
        raise ModelFileError(f"The weight file '{name}' is not in models/{' or models/'.join(folders)} any more.")
    return path
