"""A real ComfyUI server for end-to-end tests: headless, on CPU, in a subprocess, on loopback.

Everything the server writes goes to one base directory (``--base-directory`` plus ``--database-url``): models,
input, output, temp, user settings, its SQLite database, ``custom_nodes/`` and the server log. ComfyUI 0.3.75 looks
for custom nodes only in ``<base>/custom_nodes`` once a base directory is given, so the pack is installed there as
ComfyUI-Manager would (a clone: the files git would commit, copied), never into the ComfyUI install, and parallel
sessions cannot see each other. ``PYTHONDONTWRITEBYTECODE`` keeps ``__pycache__`` out of the install too.

    with ComfyUIServer(comfyui_dir, base_dir) as server:
        server.object_info("FYE_ExtractLandmarks")
        result = server.run(api_prompt, timeout=60)     # queue, then wait for the history entry
        result.status, result.error, result.files("7")
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
PACK_NAME = "ComfyUI-FollowYourEmoji"  # the folder name a git clone of the pack gets in custom_nodes/
COMFYUI_DIR_ENV = "FYE_COMFYUI_DIR"
DEFAULT_COMFYUI_DIR = REPO / ".cache" / "comfyui"
LOOPBACK = "127.0.0.1"
# Left out of the server's environment: the pack must work from ComfyUI's folders alone, as on a user's machine.
TEST_ENV_PREFIX = "FYE_"

logger = logging.getLogger(__name__)
T = TypeVar("T")


class ComfyUIError(RuntimeError):
    """The server failed to start, died, or answered unusably. The message carries the server log's tail."""


def locate_comfyui() -> tuple[Path | None, str]:
    """ComfyUI's folder ($FYE_COMFYUI_DIR, else ``<repo>/.cache/comfyui``), or None and the reason it is not usable."""
    configured = os.environ.get(COMFYUI_DIR_ENV)
    folder = Path(configured).expanduser() if configured else DEFAULT_COMFYUI_DIR
    source = f"${COMFYUI_DIR_ENV}" if configured else f"the default location (set ${COMFYUI_DIR_ENV} to override)"
    if not (folder / "main.py").is_file():
        return None, f"no ComfyUI at {folder} from {source}: run `./dev setup` to fetch ComfyUI 0.3.75 there"
    return folder, ""


def poll(check: Callable[[], T | None], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """``check()``'s first non-None result, asked every ``interval`` s until ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result is not None:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{what}: still not the case after {timeout:g} s")
        time.sleep(min(interval, remaining))


@dataclass(frozen=True)
class PromptResult:
    """A finished prompt as ``GET /history/<id>`` reports it."""

    prompt_id: str
    status: str  # "success" or "error" (an interrupted prompt is an "error" too)
    messages: list[tuple[str, dict]]  # execution_start, execution_cached, execution_error, ... in order
    outputs: dict[str, dict]  # node id -> what the node showed in the UI ({"images": [{filename, subfolder, type}]})

    def message(self, kind: str) -> dict | None:
        return next((data for event, data in self.messages if event == kind), None)

    @property
    def error(self) -> dict | None:
        """The ``execution_error`` (node_id, node_type, exception_type, exception_message, traceback), if any."""
        return self.message("execution_error")

    @property
    def interrupted(self) -> bool:
        return self.message("execution_interrupted") is not None

    def files(self, node_id: str, key: str = "images") -> list[dict]:
        """The files one node saved or previewed: ``[{"filename", "subfolder", "type"}]``."""
        return list(self.outputs.get(str(node_id), {}).get(key, []))

    def describe(self) -> str:
        error = self.error
        if error is not None:
            return (f"{self.status}: {error['node_type']} #{error['node_id']} raised {error['exception_type']}: "
                    f"{error['exception_message']}\n" + "".join(error.get("traceback", [])))
        return f"{self.status}: " + ", ".join(event for event, _ in self.messages)


class EventStream:
    """The websocket messages the server sends to one client id, collected by a thread (aiohttp's client)."""

    def __init__(self, url: str):
        self.url = url
        self._events: list[tuple[str, dict]] = []
        self._changed = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._task: asyncio.Task | None = None
        self._thread = threading.Thread(target=self._run, name="comfyui-events", daemon=True)
        self._failure: BaseException | None = None

    def start(self, timeout: float = 10.0) -> None:
        """Connect, and return once the server has greeted us (its first ``status`` message)."""
        self._thread.start()
        self.wait_for(lambda event, data: event == "status", timeout=timeout, what="websocket greeting")

    def stop(self, timeout: float = 5.0) -> None:
        if self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile (server gone): nothing to cancel
                self._loop.call_soon_threadsafe(self._task.cancel)
        self._thread.join(timeout)

    def mark(self) -> int:
        """A position in the stream, for ``seen``."""
        with self._changed:
            return len(self._events)

    def seen(self, kind: str, since: int = 0) -> list[dict]:
        """The data of every ``kind`` message after ``since`` (a ``mark``)."""
        with self._changed:
            return [data for event, data in self._events[since:] if event == kind]

    def wait_for(self, predicate: Callable[[str, dict], bool], *, timeout: float, what: str) -> dict:
        """The data of the first message (since connecting) that ``predicate(type, data)`` accepts."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = next((data for event, data in self._events if predicate(event, data)), None)
                if found is not None:
                    return found
                if self._failure is not None:
                    raise ComfyUIError(f"websocket {self.url} closed while waiting for {what}: {self._failure!r}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    kinds = sorted({event for event, _ in self._events})
                    raise TimeoutError(f"no websocket message for {what} after {timeout:g} s (seen: {kinds})")
                self._changed.wait(remaining)

    def _run(self) -> None:
        self._task = self._loop.create_task(self._listen())
        try:
            self._loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        except BaseException as exc:  # reported to whoever waits; the thread must not die silently
            self._fail(exc)
        else:
            self._fail(ConnectionError("server closed the websocket"))
        finally:
            self._loop.close()

    async def _listen(self) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.ws_connect(self.url, max_msg_size=0) as ws:
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    event = json.loads(message.data)
                    kind, data = event["type"], event.get("data") or {}
                elif message.type == aiohttp.WSMsgType.BINARY:  # a preview image: 4 bytes of event type, then it
                    kind, data = "b_preview", {"event": int.from_bytes(message.data[:4], "big"),
                                               "bytes": len(message.data)}
                else:
                    continue
                with self._changed:
                    self._events.append((kind, data))
                    self._changed.notify_all()

    def _fail(self, exc: BaseException) -> None:
        with self._changed:
            self._failure = exc
            self._changed.notify_all()


class ComfyUIServer:
    """ComfyUI in a subprocess with this pack installed; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        comfyui_dir: str | os.PathLike,
        base_dir: str | os.PathLike,
        *,
        pack_dir: str | os.PathLike = REPO,
        pack_name: str = PACK_NAME,
        python: str = sys.executable,
        boot_timeout: float = 120.0,
        extra_args: Sequence[str] = (),
    ):
        self.comfyui_dir = Path(comfyui_dir).resolve()
        self.base_dir = Path(base_dir).resolve()
        self.pack_dir = Path(pack_dir).resolve()
        self.pack_name = pack_name
        self.python = python
        self.boot_timeout = boot_timeout
        self.extra_args = tuple(extra_args)  # more of ComfyUI's command-line flags
        self.models_dir = self.base_dir / "models"
        self.input_dir = self.base_dir / "input"
        self.output_dir = self.base_dir / "output"
        self.temp_dir = self.base_dir / "temp"
        self.user_dir = self.base_dir / "user"
        self.custom_nodes_dir = self.base_dir / "custom_nodes"
        self.installed_pack_dir = self.custom_nodes_dir / pack_name
        self.log_path = self.base_dir / "comfyui.log"
        self.client_id = uuid.uuid4().hex
        self.port: int | None = None
        self.boot_seconds: float | None = None
        self.events: EventStream | None = None
        self._process: subprocess.Popen | None = None
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never via a proxy

    # ---- lifecycle ------------------------------------------------------------------------------------------

    def __enter__(self) -> ComfyUIServer:
        self.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self, attempts: int = 3) -> None:
        """Install the pack, boot, wait for ``/system_stats``, check that the pack imported, open the websocket."""
        for folder in (self.models_dir, self.input_dir, self.output_dir, self.user_dir, self.custom_nodes_dir):
            folder.mkdir(parents=True, exist_ok=True)
        install_pack(self.pack_dir, self.installed_pack_dir)
        started = time.monotonic()
        for attempt in range(1, attempts + 1):
            self._launch(free_port())
            try:
                self._wait_until_ready()
                break
            except _PortTaken:  # another process took the free port between our probe and the server's bind
                logger.warning("port %s was taken before ComfyUI bound it (attempt %d)", self.port, attempt)
                if attempt == attempts:
                    raise ComfyUIError(f"no free port after {attempts} attempts\n{self.log_tail()}") from None
            except BaseException:
                self.stop()
                raise
        self.boot_seconds = time.monotonic() - started
        logger.info("ComfyUI ready at %s after %.1f s (log: %s)", self.url, self.boot_seconds, self.log_path)
        try:
            self.check_pack_imported()
            self.events = EventStream(f"ws://{LOOPBACK}:{self.port}/ws?clientId={self.client_id}")
            self.events.start()
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout: float = 15.0) -> None:
        """Close the websocket and end the server (SIGTERM, then SIGKILL after ``timeout`` s)."""
        if self.events is not None:
            self.events.stop()
            self.events = None
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                logger.warning("ComfyUI (pid %d) ignored SIGTERM for %g s; killing it", process.pid, timeout)
                process.kill()
                process.wait(timeout)

    def _launch(self, port: int) -> None:
        self.port = port
        command = [
            self.python, "main.py",
            "--cpu",
            "--listen", LOOPBACK,
            "--port", str(port),
            "--disable-auto-launch",
            "--disable-api-nodes",
            "--base-directory", str(self.base_dir),
            # Not covered by --base-directory in 0.3.75: defaults to <ComfyUI>/user/comfyui.db.
            "--database-url", f"sqlite:///{self.user_dir / 'comfyui.db'}",
            *self.extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith(TEST_ENV_PREFIX)}
        env.update(PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1")
        with open(self.log_path, "ab") as log:  # the child keeps its own handle
            log.write(f"\n===== {' '.join(command)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                command, cwd=self.comfyui_dir, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_parent_death_signal(),
            )

    def _wait_until_ready(self) -> None:
        def ready() -> bool | None:
            if self._process.poll() is not None:
                if "address already in use" in self.log_tail().lower():
                    raise _PortTaken()
                self._raise_if_exited("while booting")
            try:
                status, stats = self._request("GET", "/system_stats", timeout=5)
            except OSError:  # not listening yet
                return None
            # Ours, not another server that grabbed the port first: its command line names our base directory.
            argv = stats.get("system", {}).get("argv", []) if status == 200 and isinstance(stats, dict) else []
            return True if str(self.base_dir) in argv else None

        try:
            poll(ready, timeout=self.boot_timeout, interval=0.2, what=f"ComfyUI answering GET {self.url}/system_stats")
        except TimeoutError as exc:
            raise ComfyUIError(f"{exc}\n{self.log_tail()}") from None

    def _raise_if_exited(self, doing: str) -> None:
        code = self._process.poll() if self._process is not None else "stopped"
        if code is not None:
            raise ComfyUIError(f"ComfyUI exited ({code}) {doing}; server log {self.log_path}:\n{self.log_tail()}")

    # ---- the server log ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        tail = self.log_text().splitlines()[-lines:]
        return "----- server log (last %d lines) -----\n%s\n-----" % (len(tail), "\n".join(tail))

    def check_pack_imported(self) -> None:
        """Fail loudly if ComfyUI did not load the pack: it only logs that, and serves without its nodes."""
        log = self.log_text()
        ours = [line for line in log.splitlines() if line.rstrip().endswith(str(self.installed_pack_dir))]
        failed = [line for line in ours if "IMPORT FAILED" in line]
        if failed or not ours:
            problem = "IMPORT FAILED" if failed else "was never tried (not in ComfyUI's import-times list)"
            raise ComfyUIError(f"the pack in {self.installed_pack_dir} {problem}\n{self.log_tail(120)}")

    # ---- HTTP ----------------------------------------------------------------------------------------------

    def get(self, path: str) -> tuple[int, Any]:
        """(HTTP status, parsed JSON body); raises ComfyUIError, with the log, if the server cannot be reached."""
        return self._call("GET", path)

    def post(self, path: str, payload: Any = None) -> tuple[int, Any]:
        return self._call("POST", path, payload)

    def object_info(self, node_type: str | None = None) -> dict:
        """``GET /object_info``: every node type's inputs, ``input_order`` and outputs (or one type's)."""
        status, body = self.get("/object_info" + (f"/{node_type}" if node_type else ""))
        self._expect(status == 200, f"GET /object_info answered {status}: {body!r:.500}")
        return body[node_type] if node_type else body

    def queue(self, prompt: dict, *, workflow: dict | None = None) -> tuple[int, dict]:
        """``POST /prompt`` as the editor does it: (HTTP status, body) — 200 ``{prompt_id, ...}`` or 400 with errors.

        ``workflow`` (the UI-format original) goes into ``extra_pnginfo`` so saved files embed it, as in the editor.
        """
        payload: dict[str, Any] = {"prompt": prompt, "client_id": self.client_id}
        if workflow is not None:
            payload["extra_data"] = {"extra_pnginfo": {"workflow": workflow}}
        return self.post("/prompt", payload)

    def wait(self, prompt_id: str, timeout: float = 120.0) -> PromptResult:
        """The prompt's history entry, once it has finished (successfully, with an error, or interrupted)."""
        def finished() -> dict | None:
            self._raise_if_exited(f"while running prompt {prompt_id}")
            status, body = self.get(f"/history/{prompt_id}")
            self._expect(status == 200, f"GET /history/{prompt_id} answered {status}")
            return body.get(prompt_id)

        try:
            entry = poll(finished, timeout=timeout, interval=0.1, what=f"prompt {prompt_id} finished")
        except TimeoutError as exc:
            _, queue = self.get("/queue")
            raise ComfyUIError(f"{exc}; queue: {json.dumps(queue)[:1000]}\n{self.log_tail()}") from None
        status = entry.get("status") or {}
        return PromptResult(
            prompt_id=prompt_id,
            status=status.get("status_str", "unknown"),
            messages=[(event, data) for event, data in status.get("messages", [])],
            outputs=entry.get("outputs", {}),
        )

    def run(self, prompt: dict, *, timeout: float = 120.0, workflow: dict | None = None) -> PromptResult:
        """Queue ``prompt`` (it must pass validation) and wait for it to finish."""
        status, body = self.queue(prompt, workflow=workflow)
        self._expect(status == 200, f"POST /prompt answered {status}:\n{json.dumps(body, indent=1)[:4000]}")
        return self.wait(body["prompt_id"], timeout)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """``POST /interrupt`` (Cancel): only ``prompt_id`` if given and running, else whatever is running."""
        status, _ = self.post("/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        self._expect(status == 200, f"POST /interrupt answered {status}")

    def output_path(self, item: dict) -> Path:
        """Where a file a node reported (``{"filename", "subfolder", "type"}``) is on disk."""
        root = {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}[item["type"]]
        return root / item.get("subfolder", "") / item["filename"]

    def install_model(self, folder: str, source: str | os.PathLike, name: str | None = None) -> Path:
        """Copy a model file into ``models/<folder>/`` (as ``name``); ComfyUI lists files there on every request."""
        target = self.models_dir / folder / (name or Path(source).name)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        return target

    def _call(self, method: str, path: str, payload: Any = None) -> tuple[int, Any]:
        try:
            return self._request(method, path, payload)
        except OSError as exc:  # refused or reset: most likely the server died; give it a moment to be reaped
            if self._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(2)
            self._raise_if_exited(f"before answering {method} {path}")
            raise ComfyUIError(f"{method} {self.url}{path} failed: {exc!r}\n{self.log_tail()}") from exc

    def _request(self, method: str, path: str, payload: Any = None, timeout: float = 60.0) -> tuple[int, Any]:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"} if data else {})
        try:
            with self._opener.open(request, timeout=timeout) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:  # 4xx/5xx: the body says why
            status, body = error.code, error.read()
        try:
            return status, json.loads(body) if body else None
        except ValueError:
            return status, body.decode(errors="replace")

    def _expect(self, condition: bool, message: str) -> None:
        if not condition:
            raise ComfyUIError(f"{message}\n{self.log_tail()}")


class _PortTaken(Exception):
    pass


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def install_pack(pack_dir: Path, target: Path) -> None:
    """Copy the pack into ``custom_nodes/`` as a git clone would have it: the files git would commit.

    Outside a git work tree (an unpacked archive), everything except caches and virtualenvs is copied.
    """
    if target.exists():
        shutil.rmtree(target)
    files = _git_files(pack_dir)
    if files is None:
        shutil.copytree(pack_dir, target, symlinks=True,
                        ignore=shutil.ignore_patterns(".git", ".cache", ".venv", "__pycache__", "*.pyc"))
        return
    for relative in files:
        source = pack_dir / relative
        if source.is_file():  # listed but deleted in the work tree: not part of a clone made now
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / relative)


def _git_files(folder: Path) -> list[str] | None:
    """Tracked plus untracked-but-not-ignored files under ``folder``, or None if it is not a git work tree."""
    try:
        top = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.strip()
        if Path(top).resolve() != folder:
            return None
        listing = subprocess.run(
            ["git", "-C", str(folder), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True, timeout=30, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [name for name in listing.decode().split("\0") if name]


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux send the server SIGTERM when the test process dies, even by SIGKILL.

    prctl is looked up here, in the parent, so the forked child only makes one C call (no imports, no locks).
    """
    if sys.platform != "linux":
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    PR_SET_PDEATHSIG = 1
    return lambda: prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
