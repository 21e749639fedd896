"""End to end: portrait animation inside a real ComfyUI 0.3.75 (CPU, loopback), driven through its HTTP API.

Weights: tiny Follow-Your-Emoji networks in the official file layout, a random TAESD as the VAE and a random full-size
CLIP ViT-L/14 (the ``animation_models`` fixture in conftest.py): the numbers are meaningless, the plumbing is real —
ComfyUI's own loaders, VAE encode/decode, memory manager, progress events, Cancel and graph validation.
The shipped workflow runs on a 128×128 portrait (16×16 latents), the long runs on 64×64, 2 steps: two CPU cores.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from animate_models import AnimationModels
from comfyui_host import PACK_NAME, ComfyUIServer, PromptResult
from media import astronaut_path, carphone_path, write_video
from workflow_api import ui_to_api

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / "workflows" / "Follow-Your-Emoji animate a photo.json"
LANDMARKER = "face_landmarker_v2_with_blendshapes.task"
SIZE = 128  # the shipped workflow's portrait and video size: 16×16 latents
SMALL = 64  # the 100-frame runs: 8×8 latents

LOAD_MODEL_INPUTS = {"required": ["model", "dtype"], "optional": ["base_unet", "motion_module"]}
ENCODE_INPUTS = ["image", "vae", "clip_vision", "model"]
SAMPLE_INPUTS = [
    "model",
    "reference",
    "motion",
    "steps",
    "cfg",
    "seed",
    "windows",
    "window_length",
    "overlap",
    "fusion",
    "loop",
    "keyframe_stride",
]


@dataclass(frozen=True)
class Inputs:
    portrait: str  # file names in the server's input folder: SIZE²
    small_portrait: str  # SMALL²
    short: str  # driving clip with sound
    short_frames: int
    short_fps: int
    long: str  # 100-frame driving clip
    long_frames: int


@pytest.fixture(scope="module")
def inputs(comfyui_server: ComfyUIServer) -> Inputs:
    """The astronaut at 128² and 64²; carphone's first 10 frames at 15 fps with a tone, and its first 100 frames."""
    with Image.open(astronaut_path()) as image:
        for size, name in ((SIZE, "fye_portrait.png"), (SMALL, "fye_portrait_small.png")):
            image.convert("RGB").resize((size, size), Image.LANCZOS).save(comfyui_server.input_dir / name)
    with av.open(str(carphone_path())) as clip:
        frames = np.stack([frame.to_ndarray(format="rgb24") for _, frame in zip(range(100), clip.decode(video=0))])
    write_video(comfyui_server.input_dir / "fye_driving_short.mp4", frames[:10], fps=15, audio_seconds=10 / 15)
    write_video(comfyui_server.input_dir / "fye_driving_100.mp4", frames, fps=25)
    return Inputs(
        "fye_portrait.png", "fye_portrait_small.png", "fye_driving_short.mp4", 10, 15, "fye_driving_100.mp4", 100
    )


def api_node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def animation_graph(
    models: AnimationModels,
    portrait: str,
    driving: str,
    *,
    size: int = SIZE,
    encode_size: int | None = None,
    framing: str = "fit",
    model: str | None = None,
    **sample,
) -> dict:
    """Portrait → Crop Portrait (``framing`` at ``size``) → landmarks → motion; Load Video → driving landmarks;
    loaders → Encode Portrait (of a second crop at ``encode_size`` if given) → sampler → VAE Decode → preview #13."""
    options = {
        "steps": 2,
        "cfg": 3.5,
        "seed": 12580,
        "windows": "overlap",
        "window_length": 16,
        "overlap": 4,
        "fusion": "pyramid",
        "loop": False,
        "keyframe_stride": 4,
        **sample,
    }
    detector = {"model": LANDMARKER, "download_if_missing": False}

    def crop(crop_size: int) -> dict:
        return api_node("FYE_CropPortrait", image=["1", 0], framing=framing, size=crop_size, face_index=0,
                        face_order="largest", crop_scale=1.0, crop_offset_y=0.0, **detector)

    graph = {
        "1": api_node("LoadImage", image=portrait),
        "2": api_node("LoadVideo", file=driving),
        "3": crop(size),
        "5": api_node("FYE_ExtractLandmarks", video=["2", 0], tracking=True, **detector),
        "6": api_node(
            "FYE_AlignLandmarks",
            reference=["3", 2],
            driving=["5", 0],
            pose_mode="relative",
            neutral_frame=-1,
            expression_scale=1.0,
            smoothing=1,
            keep_first_frame=True,
        ),
        "7": api_node(
            "FYE_LoadModel", model=model or models.model, dtype="auto", base_unet="none", motion_module="none"
        ),
        "8": api_node("VAELoader", vae_name=models.vae),
        "9": api_node("CLIPVisionLoader", clip_name=models.clip_vision),
        "10": api_node(
            "FYE_EncodeReference",
            image=["4" if encode_size else "3", 0],
            vae=["8", 0],
            clip_vision=["9", 0],
            model=["7", 0],
        ),
        "11": api_node("FYE_Sample", model=["7", 0], reference=["10", 0], motion=["6", 0], **options),
        "12": api_node("VAEDecode", samples=["11", 0], vae=["8", 0]),
        "13": api_node("PreviewImage", images=["12", 0]),
    }
    if encode_size:
        graph["4"] = crop(encode_size)
    return graph


def node_ids(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def set_widgets(prompt: dict, class_type: str, **values) -> None:
    for node_id in node_ids(prompt, class_type):
        prompt[node_id]["inputs"].update(values)


def validation_details(body: dict, node_id: str) -> tuple[set[str], str]:
    errors = body["node_errors"][node_id]["errors"]
    return {error["type"] for error in errors}, "\n".join(error["details"] for error in errors)


def timed_run(server: ComfyUIServer, prompt: dict, timeout: float = 900, **kwargs) -> tuple[PromptResult, float]:
    started = time.monotonic()
    result = server.run(prompt, timeout=timeout, **kwargs)
    return result, time.monotonic() - started


def test_object_info_describes_the_animation_nodes(comfyui_server):
    info = comfyui_server.object_info()
    for node_type in ("FYE_LoadModel", "FYE_EncodeReference", "FYE_Sample", "FYE_CropPortrait", "FYE_PasteBack"):
        assert node_type in info, f"{node_type} not served"
        node = info[node_type]
        assert node["category"].startswith("FollowYourEmoji/")
        for inputs in node["input"].values():
            for name, spec in inputs.items():
                assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_type}.{name} has no tooltip"

    load = info["FYE_LoadModel"]
    assert load["input_order"] == LOAD_MODEL_INPUTS
    assert load["input"]["required"]["dtype"][0] == ["auto", "fp32", "fp16", "bf16"]
    assert load["input"]["optional"]["motion_module"][0][0] == "none"
    assert list(zip(load["output_name"], load["output"])) == [("model", "FYE_MODEL")]

    encode = info["FYE_EncodeReference"]
    assert encode["input_order"]["required"] == ENCODE_INPUTS
    assert [encode["input"]["required"][n][0] for n in ENCODE_INPUTS[:4]] == [
        "IMAGE",
        "VAE",
        "CLIP_VISION",
        "FYE_MODEL",
    ]
    assert list(zip(encode["output_name"], encode["output"])) == [("reference", "FYE_REFERENCE")]

    sample = info["FYE_Sample"]
    required = sample["input"]["required"]
    assert sample["input_order"]["required"] == SAMPLE_INPUTS
    assert [required[n][0] for n in ("model", "reference", "motion")] == ["FYE_MODEL", "FYE_REFERENCE", "FYE_MOTION"]
    defaults = {name: required[name][1].get("default") for name in SAMPLE_INPUTS[3:]}
    assert defaults == {
        "steps": 30,
        "cfg": 3.5,
        "seed": 12580,
        "windows": "overlap",
        "window_length": 16,
        "overlap": 4,
        "fusion": "pyramid",
        "loop": False,
        "keyframe_stride": 4,
    }
    assert required["cfg"][1]["min"] == 1.0 and required["window_length"][1]["max"] == 32
    assert required["seed"][1]["control_after_generate"]
    assert set(required["windows"][0]) == {"overlap", "official", "progressive"}
    assert list(zip(sample["output_name"], sample["output"])) == [("latent", "LATENT")]


def test_shipped_workflow_animates_the_portrait_with_the_driving_timing_and_sound(
    comfyui_server, animation_models, inputs
):
    """The workflow a user opens from the templates browser, with the test's inputs, weights and a 128² size."""
    status, templates = comfyui_server.get("/api/workflow_templates")
    assert status == 200 and WORKFLOW.stem in templates.get(PACK_NAME, []), templates
    workflow = json.loads(WORKFLOW.read_text())
    prompt = ui_to_api(workflow, comfyui_server.object_info())
    set_widgets(prompt, "LoadImage", image=inputs.portrait)
    set_widgets(prompt, "LoadVideo", file=inputs.short)
    set_widgets(prompt, "FYE_LoadModel", model=animation_models.model)
    set_widgets(prompt, "VAELoader", vae_name=animation_models.vae)
    set_widgets(prompt, "CLIPVisionLoader", clip_name=animation_models.clip_vision)
    set_widgets(prompt, "FYE_CropPortrait", size=SIZE)  # crop as shipped, at 128²: pasted back into the portrait
    set_widgets(prompt, "FYE_Sample", steps=4)  # the workflow's other settings as shipped

    result, seconds = timed_run(comfyui_server, prompt, workflow=workflow)

    assert result.status == "success", result.describe()
    print(
        f"\nshipped workflow, {inputs.short_frames} frames at {SIZE}², 4 steps ({animation_models.source}): "
        f"{seconds:.1f} s"
    )
    (save_id,) = node_ids(prompt, "SaveVideo")
    (item,) = result.files(save_id)
    path = comfyui_server.output_path(item)
    assert path.parent == comfyui_server.output_dir / "FollowYourEmoji" and path.name.startswith("animation")
    # the portrait (SIZE²) with its face animated: the video has the portrait's size
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (SIZE, SIZE)
        assert stream.average_rate == inputs.short_fps
        assert video.streams.audio, "the driving video's audio was not carried over"
        frames = [frame.to_ndarray(format="rgb24") for frame in video.decode(stream)]
    assert len(frames) == inputs.short_frames
    assert np.std(frames) > 1, "the decoded animation is a flat colour"
    for preview_id in node_ids(prompt, "PreviewImage"):
        assert result.files(preview_id), f"preview #{preview_id} showed nothing"
    assert "Missing VAE keys" not in comfyui_server.log_text(), "the test's TAESD does not match ComfyUI's"


@pytest.mark.parametrize("windows", ["overlap", "progressive"])
def test_a_100_frame_video_is_sampled_in_windows(comfyui_server, animation_models, inputs, windows):
    prompt = animation_graph(
        animation_models, inputs.small_portrait, inputs.long, size=SMALL, windows=windows, steps=2
    )

    mark = comfyui_server.events.mark()
    result, seconds = timed_run(comfyui_server, prompt)

    assert result.status == "success", result.describe()
    print(f"\n{inputs.long_frames} frames at {SMALL}², {windows}, 2 steps: {seconds:.1f} s")
    assert len(result.files("13")) == inputs.long_frames
    done = comfyui_server.events.wait_for(
        lambda event, data: (
            event == "progress"
            and data.get("prompt_id") == result.prompt_id
            and data.get("node") == "11"
            and data["value"] == data["max"]
        ),
        timeout=5,
        what="the sampler's progress bar reaching its end",
    )
    assert done["max"] > 2, done  # one bar over every window of every step
    previews = comfyui_server.events.seen("b_preview", since=mark)
    assert len(previews) >= 2, "no latent preview per step (the server runs with --preview-method latent2rgb)"


def test_window_longer_than_the_motion_module_is_refused_before_running(comfyui_server, animation_models, inputs):
    status, body = comfyui_server.queue(
        animation_graph(animation_models, inputs.portrait, inputs.short, window_length=33)
    )
    assert status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["11"]["errors"]
    assert [error["type"] for error in errors] == ["custom_validation_failed"], errors  # one message, not one per input
    details = errors[0]["details"]
    assert "33" in details and "32" in details and "motion module" in details, details


def test_windows_are_checked_in_the_chosen_mode(comfyui_server, animation_models, inputs):
    """overlap ≥ window_length is refused where overlap applies — when the sampler runs, once, naming the overlap (the
    graph check takes only window_length: ComfyUI repeats a check's message for every input it takes) — and
    accepted (ignored) with official windows."""
    settings = dict(size=SMALL, window_length=4, overlap=4, steps=1)
    result = comfyui_server.run(
        animation_graph(animation_models, inputs.small_portrait, inputs.short, windows="overlap", **settings),
        timeout=600,
    )
    assert result.status == "error" and result.error["node_type"] == "FYE_Sample", result.describe()
    assert "overlap" in result.error["exception_message"], result.describe()

    prompt = animation_graph(animation_models, inputs.small_portrait, inputs.short, windows="official", **settings)
    result = comfyui_server.run(prompt, timeout=600)
    assert result.status == "success", result.describe()
    assert len(result.files("13")) == inputs.short_frames


def test_missing_or_incomplete_model_folder_is_refused_before_running(comfyui_server, animation_models, inputs):
    status, body = comfyui_server.queue(
        animation_graph(animation_models, inputs.portrait, inputs.short, model="not-downloaded-yet")
    )
    assert status == 400, body
    kinds, details = validation_details(body, "7")
    assert kinds == {"custom_validation_failed"}, body["node_errors"]
    for expected in (
        "not-downloaded-yet",
        str(comfyui_server.models_dir / "followyouremoji"),
        "referencenet.pth",
        "lmk_guider.pth",
        "FYE_unet-fp16.safetensors",
        "huggingface.co/YueMafighting/FollowYourEmoji",
    ):
        assert expected in details, f"{expected!r} not in:\n{details}"

    incomplete = comfyui_server.models_dir / "followyouremoji" / "incomplete" / "follow-your-emoji"
    incomplete.mkdir(parents=True)
    (incomplete / "unet.pth").write_bytes(b"")
    status, body = comfyui_server.queue(
        animation_graph(animation_models, inputs.portrait, inputs.short, model="incomplete")
    )
    assert status == 400, body
    _, details = validation_details(body, "7")
    assert "lacks the referencenet, guider weights" in details and "lmk_guider" in details, details


def test_reference_size_other_than_the_motion_fails_with_a_clear_message(comfyui_server, animation_models, inputs):
    result = comfyui_server.run(
        animation_graph(animation_models, inputs.portrait, inputs.short, encode_size=SMALL), timeout=600
    )
    assert result.status == "error" and result.error is not None, result.describe()
    assert result.error["node_type"] == "FYE_Sample", result.describe()
    message = result.error["exception_message"]
    assert f"{SIZE}×{SIZE}" in message and f"{SMALL}×{SMALL}" in message and "Crop Portrait" in message, message


def test_cancel_stops_sampling_and_the_next_prompt_runs(comfyui_server, animation_models, inputs):
    small = {"size": SMALL}  # the 100-frame tests' graph: everything upstream of the sampler cached
    status, body = comfyui_server.queue(
        animation_graph(animation_models, inputs.small_portrait, inputs.long, steps=200, seed=1, **small)
    )
    assert status == 200, body
    prompt_id = body["prompt_id"]
    comfyui_server.events.wait_for(
        lambda event, data: (
            event == "progress"
            and data.get("prompt_id") == prompt_id
            and data.get("node") == "11"
            and data.get("value", 0) >= 2
        ),
        timeout=600,
        what="the sampler's progress",
    )

    cancelled_at = time.monotonic()
    comfyui_server.interrupt(prompt_id)
    result = comfyui_server.wait(prompt_id, timeout=60)
    took = time.monotonic() - cancelled_at

    assert result.interrupted, result.describe()
    assert result.message("execution_interrupted")["node_type"] == "FYE_Sample"
    assert took < 10, f"Cancel took {took:.1f} s"  # one window at most (a few seconds on a loaded CPU)
    after = comfyui_server.run(
        animation_graph(animation_models, inputs.small_portrait, inputs.short, seed=2, **small), timeout=600
    )
    assert after.status == "success", after.describe()
    assert len(after.files("13")) == inputs.short_frames
