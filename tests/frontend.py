"""ComfyUI's own frontend in a real browser (Debian's Chromium through Python playwright), as an artist uses it.

    with Frontend.open(browser, server.url, screenshots_dir) as ui:
        ui.load(workflow)                   # app.loadGraphData, as dropping the file on the canvas does
        ui.graph()                          # nodes, known types, widget values, broken links
        ui.messages()                       # the dialogs and toasts on screen: what the artist reads
        ui.click_run()                      # the Run button
        ui.search("emoji")                  # double-click the canvas, type, read the result list
        ui.layout(workflow)                 # zoom, overlapping nodes, titles cut at their saved width
        ui.screenshot("name")

Facts about the frontend shipped with ComfyUI 0.3.75 (comfyui-frontend-package 1.32.9) that this relies on:
- Escape does not close the first visit's Templates dialog there; its close button (the ``pi-times`` icon) does.
- A node draws its text only while ``app.canvas.low_quality`` is false: the scale must stay at or above
  ``app.canvas._lowQualityZoomThreshold`` = MinFontSizeForLOD (8 px) / (LiteGraph.NODE_TEXT_SIZE (14) × √dpr).
- ``LGraphNode.drawTitleText`` cuts the title (``truncateText``, "...") to ``size[0] − 2 × NODE_TITLE_HEIGHT``
  (less its title buttons), measured in ``node.titleFontStyle``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

READY = "window.app && window.app.graph && window.LiteGraph && app.canvas"
VIEWPORT = {"width": 1920, "height": 1080}  # a common desktop screen, device pixel ratio 1
# What an artist reads: PrimeVue dialogs (and other ARIA dialogs) and toasts, if laid out on screen.
MESSAGES = ".p-dialog, [role=dialog], .p-toast-message"
RUN_BUTTON = ".comfyui-queue-button button[aria-label='Run']"  # the split button's main half ("▶ Run")
SEARCH_INPUT = ".comfy-vue-node-search-box input"
SEARCH_OPTION = ".comfy-vue-node-search-box .p-autocomplete-option"

_GRAPH_JS = """() => {
  const graph = app.graph, state = {nodes: [], broken_links: []};
  for (const node of graph.nodes) {
    state.nodes.push({
      id: node.id, type: node.type, title: node.title, has_errors: !!node.has_errors,
      known: !!LiteGraph.registered_node_types[node.type],
      widgets: (node.widgets || []).map(w => ({name: w.name, value: w.value})),
      widgets_values: node.serialize().widgets_values ?? null,
      pos: [...node.pos], size: [...node.size],
    });
    (node.inputs || []).forEach((input, slot) => {
      if (input.link != null && !graph.links.get(input.link))
        state.broken_links.push(`#${node.id} input ${slot} (${input.name}) names link ${input.link}, not in the graph`);
    });
  }
  for (const link of graph.links.values()) {
    const origin = graph.getNodeById(link.origin_id), target = graph.getNodeById(link.target_id);
    const output = origin?.outputs?.[link.origin_slot], input = target?.inputs?.[link.target_slot];
    if (!output || !(output.links || []).includes(link.id) || !input || input.link !== link.id)
      state.broken_links.push(`link ${link.id}: #${link.origin_id}[${link.origin_slot}] → #${link.target_id}` +
                              `[${link.target_slot}] is not attached at both ends`);
  }
  return state;
}"""

_MESSAGES_JS = """(selector) => [...document.querySelectorAll(selector)]
  .filter(e => e.getClientRects().length && getComputedStyle(e).visibility !== 'hidden')
  .filter((e, _, all) => !all.some(other => other !== e && other.contains(e)))
  .map(e => ({kind: e.matches('.p-toast-message') ? 'toast' : 'dialog', text: e.innerText.trim()}))"""

_LAYOUT_JS = """(saved) => {
  const canvas = app.canvas, ctx = canvas.canvas.getContext('2d'), H = LiteGraph.NODE_TITLE_HEIGHT;
  const nodes = app.graph.nodes, cut = [], overlaps = [];
  for (const node of nodes) {
    const width = saved[node.id] ?? node.size[0];
    let room = width - 2 * H;  // LGraphNode.drawTitleText
    const buttons = (node.title_buttons || []).filter(b => b.visible).reduce((sum, b) => sum + b.getWidth(ctx) + 2, 0);
    if (buttons > 0) room -= buttons - 20;
    ctx.save(); ctx.font = node.titleFontStyle;
    const title = String(node.getTitle() ?? node.type), text = ctx.measureText(title).width;
    ctx.restore();
    if (text > room) cut.push({id: node.id, title, text_width: Math.round(text), room: Math.round(room), width});
  }
  const box = n => n.getBounding(new Float64Array(4));  // [x, y, w, h], the title bar included
  for (let i = 0; i < nodes.length; i++) for (let j = i + 1; j < nodes.length; j++) {
    const [a, b] = [box(nodes[i]), box(nodes[j])];
    const w = Math.min(a[0] + a[2], b[0] + b[2]) - Math.max(a[0], b[0]);
    const h = Math.min(a[1] + a[3], b[1] + b[3]) - Math.max(a[1], b[1]);
    if (w > 0 && h > 0) overlaps.push({a: `#${nodes[i].id} ${nodes[i].getTitle()}`,
                                      b: `#${nodes[j].id} ${nodes[j].getTitle()}`, area: [Math.round(w), Math.round(h)]});
  }
  return {scale: canvas.ds.scale, threshold: canvas._lowQualityZoomThreshold, low_quality: canvas.low_quality,
          offset: [...canvas.ds.offset], cut_titles: cut, overlaps};
}"""


@dataclass(frozen=True)
class Layout:
    scale: float  # app.canvas.ds.scale once the workflow is open
    threshold: float  # below this scale the frontend draws nodes without text (low quality)
    low_quality: bool
    offset: list[float]
    cut_titles: list[dict]  # {id, title, text_width, room, width}
    overlaps: list[dict]  # {a, b, area: [w, h]} in canvas units


class Frontend:
    """One browser page on ComfyUI's editor (its own browser context: no settings or workflows carried over)."""

    def __init__(self, context, page, url: str, screenshots: Path):
        self.context, self.page, self.url, self.screenshots = context, page, url, Path(screenshots)
        self.console_errors: list[str] = []
        self.shots: list[Path] = []
        page.on("console", lambda message: message.type == "error" and self.console_errors.append(message.text))

    @classmethod
    def open(cls, browser, url: str, screenshots: Path, *, timeout: float = 120.0) -> Frontend:
        context = browser.new_context(viewport=VIEWPORT, device_scale_factor=1)
        context.set_default_timeout(timeout * 1000)
        ui = cls(context, context.new_page(), url, screenshots)
        try:
            # The editor opens its Templates dialog on the first visit of a user, then records the visit there.
            first_visit = not ui.page.request.get(f"{url}/api/settings/Comfy.TutorialCompleted").json()
            ui.page.goto(url, wait_until="domcontentloaded")
            ui.page.wait_for_function(READY, timeout=timeout * 1000)
            ui.close_templates(first_visit)
        except BaseException:
            context.close()
            raise
        return ui

    def __enter__(self) -> Frontend:
        return self

    def __exit__(self, *exc_info) -> None:
        self.context.close()

    # ---- what the artist sees -----------------------------------------------------------------------------

    def close_templates(self, first_visit: bool = True, wait: float = 20.0) -> None:
        """Close the Templates dialog that a first visit opens (``Comfy.TutorialCompleted`` unset): Escape first,
        then its close button (Escape alone does not close it in frontend 1.32.9)."""
        dialog = self.page.locator(".p-dialog", has_text="Templates").first
        if not first_visit and not dialog.is_visible():
            return
        dialog.wait_for(state="visible", timeout=wait * 1000)
        self.page.keyboard.press("Escape")
        self.page.wait_for_timeout(300)
        if dialog.is_visible():
            dialog.locator("button:has(i.pi-times)").last.click()
        dialog.wait_for(state="detached", timeout=wait * 1000)

    def close_dialog(self, title: str, wait: float = 10.0) -> None:
        """Close the dialog whose text holds ``title`` with its close button, as an artist would."""
        dialog = self.page.locator(".p-dialog", has_text=title).first
        dialog.wait_for(state="visible", timeout=wait * 1000)
        dialog.locator("button:has(i.pi-times), button[aria-label='Close']").last.click()
        dialog.wait_for(state="detached", timeout=wait * 1000)

    def messages(self) -> list[dict]:
        """``[{kind: "dialog" | "toast", text}]``: every dialog and toast on screen, outermost elements only."""
        return self.page.evaluate(_MESSAGES_JS, MESSAGES)

    def screenshot(self, name: str) -> Path:
        self.screenshots.mkdir(parents=True, exist_ok=True)
        path = self.screenshots / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)}.png"
        self.page.screenshot(path=str(path))
        self.shots.append(path)
        print(f"screenshot: {path}")
        return path

    # ---- the graph ----------------------------------------------------------------------------------------

    def load(self, workflow: dict) -> None:
        """Open a UI-format workflow as the editor does when a file is dropped or opened."""
        self.page.evaluate("async (workflow) => { await app.loadGraphData(workflow); }", workflow)
        self.settle()

    def settle(self, frames: int = 3) -> None:
        """Let the canvas draw a few frames (the frontend sizes and lays out nodes while drawing)."""
        self.page.evaluate("""(n) => new Promise(done => { app.canvas.setDirty(true, true);
            const step = () => (n-- > 0 ? requestAnimationFrame(step) : done()); step(); })""", frames)

    def graph(self) -> dict:
        """``{nodes: [{id, type, title, known, has_errors, widgets, widgets_values, pos, size}], broken_links}``."""
        return self.page.evaluate(_GRAPH_JS)

    def errored_nodes(self) -> list[str]:
        """The nodes the frontend outlines in red, as ``"#id title"``: not loadable (``has_errors``), failed the
        server's check (``app.lastNodeErrors``, the answer to the last queue) or raised (``lastExecutionError``)."""
        return self.page.evaluate("""() => app.graph.nodes.filter(n => n.has_errors
            || app.lastNodeErrors?.[n.id]?.errors?.length || String(app.lastExecutionError?.node_id) === String(n.id))
          .map(n => `#${n.id} ${n.getTitle()}`)""")

    def layout(self, workflow: dict) -> Layout:
        """Zoom and LOD threshold, overlapping node boxes, and titles cut at the workflow file's saved widths."""
        saved = {node["id"]: node["size"][0] for node in workflow["nodes"]}
        return Layout(**self.page.evaluate(_LAYOUT_JS, saved))

    # ---- actions ------------------------------------------------------------------------------------------

    def click_run(self, timeout: float = 30.0) -> dict:
        """Click Run; returns the server's answer to the ``POST /api/prompt`` it sends: ``{status, body}``."""
        with self.page.expect_response(lambda r: r.url.endswith("/prompt") and r.request.method == "POST",
                                       timeout=timeout * 1000) as answer:
            self.page.locator(RUN_BUTTON).click()
        response = answer.value
        try:
            body = response.json()
        except Exception:  # not JSON: keep the text for the failure message
            body = response.text()
        return {"status": response.status, "body": body}

    def wait_for_messages(self, seconds: float = 5.0) -> list[dict]:
        """The messages on screen once something has appeared (or after ``seconds``), after a short settle."""
        deadline = time.monotonic() + seconds
        while not self.messages() and time.monotonic() < deadline:
            self.page.wait_for_timeout(200)
        self.page.wait_for_timeout(500)  # the rest of a burst of toasts
        return self.messages()

    def empty_canvas_point(self) -> tuple[float, float]:
        """A point on screen with the bare canvas under it: no overlay, and outside the nodes' bounding box (a
        double-click on a link does something else), or at least off every node if the graph fills the screen."""
        point = self.page.evaluate("""() => {
          const c = app.canvas.canvas, r = c.getBoundingClientRect(), boxes = app.graph.nodes.map(
            n => n.getBounding(new Float64Array(4))), m = 30 / app.canvas.ds.scale;
          const inside = (b, x, y) => x > b[0] - m && x < b[0] + b[2] + m && y > b[1] - m && y < b[1] + b[3] + m;
          const all = boxes.length ? boxes.reduce((u, b) => [Math.min(u[0], b[0]), Math.min(u[1], b[1]),
            Math.max(u[0] + u[2], b[0] + b[2]) - Math.min(u[0], b[0]), Math.max(u[1] + u[3], b[1] + b[3]) - Math.min(u[1], b[1])]) : null;
          let fallback = null;
          for (let y = r.top + 120; y < r.bottom - 120; y += 30)
            for (let x = r.left + 120; x < r.right - 120; x += 30) {
              if (document.elementFromPoint(x, y) !== c) continue;
              const [gx, gy] = app.canvas.convertOffsetToCanvas([x - r.left, y - r.top]);
              if (boxes.some(b => inside(b, gx, gy))) continue;
              if (!all || !inside(all, gx, gy)) return [x, y];
              fallback ??= [x, y];
            }
          return fallback; }""")
        assert point, "no empty spot on the canvas to double-click"
        return point

    def search(self, query: str, *, screenshot: str | None = None, settle: float = 1.5) -> list[dict]:
        """Double-click the empty canvas, type ``query``, read the results: ``[{name, type, text}]``, in order.

        ``name`` is the display name the artist reads; ``type`` the node id it maps to (via the node definitions).
        """
        box = self.page.locator(SEARCH_INPUT)
        for attempt in range(3):  # the canvas sees a double-click only if both presses reach it within 300 ms
            x, y = self.empty_canvas_point()
            self.page.mouse.dblclick(x, y)
            try:
                box.wait_for(state="visible", timeout=5000)
                break
            except Exception:  # playwright's TimeoutError
                if attempt == 2:
                    self.screenshot(f"search_box_not_opened_{query}")
                    raise AssertionError(f"double-clicking the canvas at {x}, {y} opened no search box") from None
        box.fill("")
        box.press_sequentially(query, delay=30)
        self.page.wait_for_timeout(settle * 1000)  # the box debounces its query (100 ms) and renders the list
        results = self.page.evaluate("""(selector) => {
          const byName = {};
          for (const [type, cls] of Object.entries(LiteGraph.registered_node_types))
            (byName[cls.nodeData?.display_name ?? type] ??= []).push(type);
          return [...document.querySelectorAll(selector)].map(option => {
            const name = option.querySelector('.option-display-name span')?.innerText.trim() ?? '';
            return {name, type: (byName[name] || []).join(' | '), text: option.innerText.trim()};
          }); }""", SEARCH_OPTION)
        if screenshot:
            self.screenshot(screenshot)
        self.page.keyboard.press("Escape")
        box.wait_for(state="hidden")
        return results
