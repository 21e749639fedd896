"""What ComfyUI-Manager, the Comfy Registry and the editor's templates browser read from the pack, offline."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((REPO / "workflows").glob("*.json"))


def test_registry_metadata():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["urls"]["Repository"].startswith("https://github.com/")
    comfy = project["tool"]["comfy"]
    assert comfy["PublisherId"] and comfy["DisplayName"] == "Follow-Your-Emoji"
    icon = comfy["Icon"]
    assert icon.endswith("/docs/icon.png") and (REPO / "docs" / "icon.png").is_file()  # served from the repository
    with Image.open(REPO / "docs" / "icon.png") as image:
        assert image.size[0] == image.size[1] >= 200
    assert any(c.startswith("License ::") for c in project["project"]["classifiers"])
    requirements = [line.split("#")[0].strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert sorted(filter(None, requirements)) == sorted(project["project"]["dependencies"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_each_template_has_a_thumbnail_a_title_and_a_read_me(path):
    assert path.with_suffix(".jpg").is_file(), "the templates browser would show a gradient placeholder"
    assert path.stem.startswith("Follow-Your-Emoji"), "the templates browser titles a pack's template by its file name"
    notes = [node for node in json.loads(path.read_text())["nodes"] if node["type"] == "Note"]
    assert len(notes) == 1 and "Run" in notes[0]["widgets_values"][0]


def test_every_saved_output_has_its_own_prefix():
    prefixes = [node["widgets_values"][0] for path in WORKFLOWS for node in json.loads(path.read_text())["nodes"]
                if node["type"] in ("SaveImage", "SaveVideo")]
    assert prefixes and len(prefixes) == len(set(prefixes)), prefixes
    assert all(prefix.startswith("FollowYourEmoji/") for prefix in prefixes), prefixes
