"""One path: the shipped workflow in a real ComfyUI and ``python -m emoji_model animate`` give the same frames.

Both hosts call the same library functions for preparation (``framing.prepare_portrait``), detection
(``pipeline.video_landmarks``, ``pipeline.retarget``), encoding, sampling and paste-back (``framing.paste_back``); only
the encoders' implementations differ: ComfyUI's own SD VAE and CLIP vision model in the workflow, diffusers' and
transformers' in the CLI. So both run on the SAME files: the tiny Follow-Your-Emoji folder, a random full-size SD VAE
(``random_sd_vae``: ComfyUI's ``VAELoader`` builds a fixed SD VAE, a TAESD would not load in the CLI) and the random
full-size CLIP ViT-L/14, on a non-square, off-centre 1400×1000 portrait and a 7-frame carphone clip with sound.

The workflow runs as shipped (its inputs, model names, the crop size and the steps changed), plus SaveImage nodes on
Crop Portrait's portrait and Paste Back's images (lossless PNGs; SaveImage's ``255·x`` truncation is exact on
Paste Back's ``k / 255`` floats); the CLI writes its pasted frames with ``--save-frames``.
Required: the same crop, the same frame count and size, frames within 1 level everywhere, and outside the paste-back
mask exactly the portrait in both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from comfyui_host import ComfyUIServer
from media import astronaut_path, carphone_path, package_file, write_video
from workflow_api import ui_to_api

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "Follow-Your-Emoji animate a photo.json"
CANVAS = (1400, 1000)  # the portrait: (width, height)
FACE = 620  # the astronaut, scaled to this side, in the canvas' top-right corner
MARGIN = 24
SIZE = 64  # Crop Portrait's size and the CLI's --size: 8×8 latents for the tiny networks
STEPS = 2
FRAMES, FPS = 7, 15  # the driving clip
# Levels. Measured (CPU, fp32): the encoders' float rounding (CLIP last_hidden_state max 1.1e-5, VAE latent 2.2e-7)
# grows through 2 guided steps to 4.7e-4 in the latents and 0.043 levels in the decoded 64² frames. Paste-back must
# round those floats once, after its Lanczos upscale and blend; rounding the 64² frames to uint8 first (today's
# framing.paste_back: to_rgb_uint8 per frame; the CLI's decode) lets two neighbouring 1-level flips overshoot to
# 1.13 levels in the upscale and 2 levels after the second rounding (1 value in 29.4 M).
TOLERANCE = 1


def make_portrait(path: Path) -> np.ndarray:
    """The astronaut at FACE², top-right on scikit-image's coffee scaled to CANVAS: (H, W, 3) uint8, also saved."""
    with Image.open(package_file("skimage", "data/coffee.png")) as coffee:
        canvas = coffee.convert("RGB").resize(CANVAS, Image.LANCZOS)
    with Image.open(astronaut_path()) as astronaut:
        canvas.paste(astronaut.convert("RGB").resize((FACE, FACE), Image.LANCZOS), (CANVAS[0] - FACE - MARGIN, MARGIN))
    canvas.save(path)
    return np.asarray(canvas)


def read_pngs(paths) -> np.ndarray:
    frames = []
    for path in paths:
        with Image.open(path) as image:
            assert image.mode == "RGB", f"{path}: {image.mode}"
            frames.append(np.asarray(image))
    return np.stack(frames)


def level_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


@pytest.fixture(scope="module")
def one_path(comfyui_server: ComfyUIServer, animation_models, random_sd_vae, random_clip_vit_l14, tmp_path_factory):
    """The portrait and the driving clip in the server's input folder, the random SD VAE in its models/vae."""
    work = tmp_path_factory.mktemp("one_path")
    portrait = make_portrait(comfyui_server.input_dir / "fye_one_path_portrait.png")
    from emoji_model.video import iter_video_frames

    frames = np.stack(list(iter_video_frames(carphone_path(), max_frames=FRAMES)))
    write_video(comfyui_server.input_dir / "fye_one_path_driving.mp4", frames, fps=FPS, audio_seconds=FRAMES / FPS)
    vae = comfyui_server.models_dir / "vae" / random_sd_vae.name
    vae.parent.mkdir(parents=True, exist_ok=True)
    if not vae.exists():
        vae.symlink_to(random_sd_vae)
    return {
        "work": work,
        "portrait": portrait,
        "portrait_name": "fye_one_path_portrait.png",
        "driving_name": "fye_one_path_driving.mp4",
        "weights": comfyui_server.models_dir / "followyouremoji" / animation_models.model,
        "vae": random_sd_vae,
        "clip": random_clip_vit_l14,
    }


def shipped_prompt(server: ComfyUIServer, models, inputs: dict) -> tuple[dict, dict, dict[str, str]]:
    """The shipped workflow as an API prompt with the test's inputs, weights, size and steps, plus SaveImage nodes
    (lossless PNGs) on Crop Portrait's portrait and Paste Back's images → (prompt, workflow, {what: node id})."""
    workflow = json.loads(WORKFLOW.read_text())
    prompt = ui_to_api(workflow, server.object_info())

    def only(class_type: str) -> str:
        (node_id,) = [i for i, node in prompt.items() if node["class_type"] == class_type]
        return node_id

    ids = {t: only(t) for t in ("LoadImage", "LoadVideo", "FYE_CropPortrait", "FYE_LoadModel", "VAELoader",
                                "CLIPVisionLoader", "FYE_Sample", "VAEDecode", "FYE_PasteBack", "SaveVideo")}
    prompt[ids["LoadImage"]]["inputs"]["image"] = inputs["portrait_name"]
    prompt[ids["LoadVideo"]]["inputs"]["file"] = inputs["driving_name"]
    prompt[ids["FYE_CropPortrait"]]["inputs"]["size"] = SIZE
    prompt[ids["FYE_LoadModel"]]["inputs"]["model"] = models.model
    prompt[ids["VAELoader"]]["inputs"]["vae_name"] = inputs["vae"].name
    prompt[ids["CLIPVisionLoader"]]["inputs"]["clip_name"] = models.clip_vision
    prompt[ids["FYE_Sample"]]["inputs"]["steps"] = STEPS
    extra = {
        "crop": ("fye_one_path/crop", [ids["FYE_CropPortrait"], 0]),
        "frames": ("fye_one_path/frame", [ids["FYE_PasteBack"], 0]),
    }
    saves = {}
    for n, (what, (prefix, source)) in enumerate(extra.items()):
        node_id = str(1000 + n)
        prompt[node_id] = {"class_type": "SaveImage", "inputs": {"images": source, "filename_prefix": prefix}}
        saves[what] = node_id
    return prompt, workflow, {**ids, **saves}


def video_frames(path: Path) -> tuple[int, bool]:
    """(decoded frame count, has audio) of a video file."""
    from emoji_model.video import iter_video_frames, probe_video

    return sum(1 for _ in iter_video_frames(path)), probe_video(path).has_audio


def run_cli(inputs: dict, landmarker: Path, out_dir: Path) -> tuple[np.ndarray, float]:
    """``python -m emoji_model animate`` on the same files and settings → (its --save-frames PNGs, seconds)."""
    sample = {"steps": STEPS, "cfg": 3.5, "seed": 12580, "windows": "overlap", "window-length": 16, "overlap": 4,
              "fusion": "pyramid", "keyframe-stride": 4}  # the shipped workflow's Sampler settings
    command = [
        sys.executable, "-m", "emoji_model", "animate",
        "--reference", str(inputs["portrait_path"]), "--driving", str(inputs["driving_path"]),
        "--weights", str(inputs["weights"]), "--vae", str(inputs["vae"]), "--clip", str(inputs["clip"]),
        "--model", str(landmarker), "--out", str(out_dir / "animation.mp4"), "--save-frames", str(out_dir / "frames"),
        "--framing", "crop", "--size", str(SIZE), "--feather", "0.1", "--device", "cpu", "--dtype", "auto",
        *[arg for name, value in sample.items() for arg in (f"--{name}", str(value))],
    ]
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    seconds = time.monotonic() - started
    assert done.returncode == 0, f"CLI exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    return read_pngs(sorted((out_dir / "frames").glob("frame_*.png"))), seconds


def test_workflow_and_cli_give_the_same_frames(comfyui_server, animation_models, one_path, landmarker_model):
    from emoji_model.framing import FramingOptions, paste_mask, prepare_portrait

    inputs = {**one_path, "portrait_path": comfyui_server.input_dir / one_path["portrait_name"],
              "driving_path": comfyui_server.input_dir / one_path["driving_name"]}
    portrait = one_path["portrait"]
    assert (portrait.shape[1], portrait.shape[0]) == CANVAS

    # ComfyUI: the shipped workflow
    prompt, workflow, ids = shipped_prompt(comfyui_server, animation_models, inputs)
    started = time.monotonic()
    result = comfyui_server.run(prompt, timeout=900, workflow=workflow)
    comfy_seconds = time.monotonic() - started
    assert result.status == "success", result.describe()
    assert "Missing VAE keys" not in comfyui_server.log_text(), "ComfyUI's VAELoader did not take every VAE weight"
    comfy = read_pngs(comfyui_server.output_path(item) for item in result.files(ids["frames"]))
    (crop_item,) = result.files(ids["crop"])
    comfy_crop = read_pngs([comfyui_server.output_path(crop_item)])[0]
    (video_item,) = result.files(ids["SaveVideo"])
    comfy_video = comfyui_server.output_path(video_item)

    # the CLI
    cli, cli_seconds = run_cli(inputs, landmarker_model, one_path["work"])

    # the same preparation: the library's prepare_portrait here gives ComfyUI's crop exactly
    prepared = prepare_portrait(portrait, landmarker_model, FramingOptions(framing="crop", size=SIZE))
    crop = prepared.crop
    np.testing.assert_array_equal(comfy_crop, prepared.image, err_msg="Crop Portrait ≠ prepare_portrait")
    x, y, w, h = crop.source
    assert x + w / 2 > CANVAS[0] * 0.6 and y + h / 2 < CANVAS[1] * 0.4, f"the face is not top right: {crop.source}"

    # the same frames
    assert len(comfy) == len(cli) == FRAMES, (len(comfy), len(cli))
    for name, video in (("ComfyUI", comfy_video), ("CLI", one_path["work"] / "animation.mp4")):
        assert video_frames(video) == (FRAMES, True), f"{name}'s video {video}: (frames, audio) {video_frames(video)}"
    assert comfy.shape[1:] == cli.shape[1:] == portrait.shape, (comfy.shape, cli.shape)
    diff = level_difference(comfy, cli)
    mask = paste_mask(crop, 0.1)
    inside = mask > 0
    print(f"\none path: {FRAMES} frames of {CANVAS[0]}×{CANVAS[1]}, crop {crop.source} → {SIZE}², {STEPS} steps; "
          f"ComfyUI {comfy_seconds:.1f} s, CLI {cli_seconds:.1f} s\n"
          f"  |ComfyUI − CLI|: max {diff.max()}, mean {diff.mean():.2e} over the frame, "
          f"{diff[:, inside].mean():.2e} inside the mask; {np.count_nonzero(diff)} values differ "
          f"({np.count_nonzero(diff > 1)} by more than 1); animation std inside the mask {cli[:, inside].std():.1f}")
    assert cli[:, inside].std() > 1, "the pasted animation is flat: the comparison would prove little"
    for name, frames in (("ComfyUI", comfy), ("CLI", cli)):
        np.testing.assert_array_equal(frames[:, ~inside], np.broadcast_to(portrait[~inside], frames[:, ~inside].shape),
                                      err_msg=f"{name}: outside the paste-back mask the frames are not the portrait")
        assert np.any(frames[:, inside] != portrait[inside]), f"{name}: nothing was pasted"
    assert diff.max() <= TOLERANCE, (
        f"ComfyUI and the CLI differ by up to {diff.max()} levels ({np.count_nonzero(diff > TOLERANCE)} values over "
        f"{TOLERANCE}; mean {diff.mean():.3g}) at {[tuple(map(int, i)) for i in np.argwhere(diff > TOLERANCE)[:5]]} "
        "(frame, y, x, channel). Over 1 level inside the mask: does paste-back round the decoded frames to uint8 "
        "before its upscale (see TOLERANCE)?")
