"""The library's jobs, composed from its parts: used by the ComfyUI nodes and the command line alike."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .landmarks import align, draw, extract
from .landmarks.types import FaceLandmarks, Motion
from .video import VideoInfo, iter_video_frames, probe_video, read_image, write_video

logger = logging.getLogger(__name__)


def extract_landmarks(
    frames: Iterable[np.ndarray],
    model_path: str | os.PathLike,
    *,
    video: bool,
    fps: float = 30.0,
    on_frame: Callable[[int], None] | None = None,
) -> FaceLandmarks:
    """Face landmarks of each frame; ``video`` tracks across frames (MediaPipe VIDEO mode), else IMAGE mode."""
    return extract.extract_landmarks(frames, model_path, video=video, fps=fps, on_frame=on_frame)


def retarget(reference: FaceLandmarks, driving: FaceLandmarks, **options) -> Motion:
    """The driving motion on the reference face (options: see :func:`landmarks.align.align`)."""
    return align.align(reference.select(0), driving, **options)


def draw_motion(motion: Motion) -> np.ndarray:
    """(N, H, W, 3) uint8 expression-aware landmark drawings of a motion."""
    return draw.draw_motion(motion.points, motion.width, motion.height)


def draw_landmarks(landmarks: FaceLandmarks) -> np.ndarray:
    """(N, H, W, 3) uint8 drawings of the detected landmarks as they are; black where no face was found."""
    return draw.draw_normalised(landmarks.points[..., :2], landmarks.width, landmarks.height)


@dataclass(frozen=True)
class LandmarksResult:
    """What the headless landmarks job produced."""

    reference: FaceLandmarks
    driving: FaceLandmarks
    motion: Motion
    out_dir: Path
    fps: float


def run_landmarks(
    reference_image: str | os.PathLike,
    driving_video: str | os.PathLike,
    out_dir: str | os.PathLike,
    model_path: str | os.PathLike,
    *,
    tracking: bool = True,
    on_frame: Callable[[int], None] | None = None,
    **align_options,
) -> LandmarksResult:
    """Portrait + driving video → ``aligned_NNNN.png`` per driving frame and ``landmarks.npz`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = probe_video(driving_video)
    reference = extract_landmarks([read_image(reference_image)], model_path, video=False)
    driving = extract_landmarks(iter_video_frames(driving_video), model_path, video=tracking, fps=info.fps, on_frame=on_frame)
    motion = retarget(reference, driving, **align_options)
    drawings = (image for chunk in draw.iter_drawings(motion) for image in chunk)
    for index, image in zip(motion.source_frames, drawings):
        _write_png(out_dir / f"aligned_{index:04d}.png", image)
    save_landmarks(out_dir / "landmarks.npz", reference, driving, motion)
    logger.info("%d of %d driving frames had a face; wrote %d drawings to %s",
                driving.num_found, len(driving), len(motion), out_dir)
    return LandmarksResult(reference, driving, motion, out_dir, info.fps)


def save_landmarks(path: str | os.PathLike, reference: FaceLandmarks, driving: FaceLandmarks, motion: Motion) -> None:
    """Raw (reference, driving) and aligned arrays in one ``.npz``."""
    arrays = {"aligned_points": motion.points, "aligned_source_frames": motion.source_frames,
              "aligned_size": np.array([motion.width, motion.height])}
    for prefix, lm in (("reference", reference), ("driving", driving)):
        arrays.update({
            f"{prefix}_points": lm.points, f"{prefix}_mesh": lm.mesh, f"{prefix}_pose": lm.pose,
            f"{prefix}_blendshapes": lm.blendshapes, f"{prefix}_found": lm.found,
            f"{prefix}_size": np.array([lm.width, lm.height]),
        })
    np.savez_compressed(path, **arrays)


def _write_png(path: Path, rgb: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(rgb).save(path)


# ---- animation: portrait + driving video → MP4 -----------------------------------------------------------------

DETECTION_SIZE = 512  # the portrait's face is detected on a canvas at least this big (the official detects at 512²)
Progress = Callable[[str, int, int], None]  # (phase, done, total): "landmarks", "sampling", "decoding"


@dataclass(frozen=True, eq=False)
class AnimationModels:
    """What an animation runs: the three networks, the CLIP image encoder and the VAE (transformers / diffusers)."""

    networks: object  # checkpoints.FollowYourEmojiNetworks
    clip: object  # transformers CLIPVisionModelWithProjection
    vae: object  # diffusers AutoencoderKL


def load_animation_models(weights_dir: str | os.PathLike, *, dtype: str = "fp32", device: str = "cpu",
                          clip: str | os.PathLike | None = None, vae: str | os.PathLike | None = None,
                          download_hint: str = "") -> AnimationModels:
    """The networks, CLIP and VAE of a model folder (``weights.py`` layouts); ``clip``/``vae`` override the folder's.
    A folder missing anything is one ``ModelFileError`` naming what and where to get it."""
    from . import checkpoints, encoders, weights

    files = weights.require_weights(weights_dir, download_hint=download_hint) if clip is None or vae is None \
        else checkpoints.find_model_files(weights_dir)
    torch_dtype = checkpoints.DTYPES[dtype]
    networks = checkpoints.load_follow_your_emoji(weights_dir, dtype=torch_dtype, device=device)
    clip_model = encoders.load_clip_image_encoder(clip or files.image_encoder, dtype=torch_dtype).to(device)
    vae_model = encoders.load_vae(vae or files.vae, dtype=torch_dtype).to(device)
    return AnimationModels(networks, clip_model, vae_model)


def vae_encoder(vae) -> Callable:
    """``vae_encode`` for ``sampling.animate.encode_reference`` from a diffusers VAE: the raw latent mean, float32."""

    def encode(x):
        param = next(vae.parameters())
        return vae.encode(x.to(param.device, param.dtype)).latent_dist.mean.float()

    return encode


def vae_decoder(vae) -> Callable:
    """``vae_decode`` for ``sampling.animate.decode`` from a diffusers VAE: frames in [0, 1], float32."""

    def decode(z):
        param = next(vae.parameters())
        return (vae.decode(z.to(param.device, param.dtype)).sample.float() / 2 + 0.5).clamp(0, 1)

    return decode


def clip_encoder(clip) -> Callable:
    """``clip_encode`` for ``sampling.animate.encode_reference`` from a transformers CLIP vision model."""
    from .encoders import encode_clip

    return lambda pixels: encode_clip(clip, pixels).float()


def clip_image_size(clip) -> int:
    """The CLIP's input size (224 for ViT-L/14)."""
    return int(clip.config.image_size)


def portrait_landmarks(portrait: np.ndarray, model_path: str | os.PathLike, width: int, height: int) -> FaceLandmarks:
    """The portrait's face, as found on its fitted-and-padded canvas, expressed at width×height.

    Small outputs (a 64² test) would be too small for the face detector: the canvas is detected at an integer multiple
    of width×height of at least ``DETECTION_SIZE`` on the short side. MediaPipe's points are normalised, so they hold
    at width×height as they are.
    """
    from .reference import fit_and_pad

    scale = max(1, math.ceil(DETECTION_SIZE / min(width, height)))
    found = extract_landmarks([fit_and_pad(portrait, width * scale, height * scale)], model_path, video=False)
    return dataclasses.replace(found, width=width, height=height)


@dataclass(frozen=True)
class AnimationResult:
    """What the headless animation produced."""

    out_path: Path
    num_frames: int
    fps: Fraction
    has_audio: bool
    motion: Motion


def run_animate(
    reference_image: str | os.PathLike,
    driving_video: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    models: AnimationModels,
    landmarker_model: str | os.PathLike,
    options=None,
    width: int = 512,
    height: int = 512,
    max_frames: int | None = None,
    tracking: bool = True,
    official_round_trip: bool = False,
    decode_chunk: int = 8,
    progress: Progress | None = None,
    **align_options,
) -> AnimationResult:
    """Portrait + driving video → an MP4 of the portrait following the video, with the driving video's frame count
    (or its first ``max_frames``), frame rate and audio.

    Landmarks (driving frame 0 kept, so one output frame per driving frame) → ``encode_reference`` → ``sample`` →
    ``decode`` → ``write_video``: the same library calls the ComfyUI nodes make. ``options``:
    ``sampling.animate.SamplingOptions``. ``align_options``: see ``landmarks.align.align``.
    """
    from .sampling import animate

    options = options or animate.SamplingOptions()
    animate.check_options(options)
    report = progress or (lambda phase, done, total: None)
    info: VideoInfo = probe_video(driving_video)
    portrait = read_image(reference_image)
    reference_landmarks = portrait_landmarks(portrait, landmarker_model, width, height)
    frames_total = min(n for n in (info.num_frames, max_frames, 2**31) if n)  # for progress only
    driving = extract_landmarks(iter_video_frames(driving_video, max_frames), landmarker_model, video=tracking,
                                fps=info.fps, on_frame=lambda i: report("landmarks", i + 1, frames_total))
    motion = retarget(reference_landmarks, driving, keep_first_frame=True, **align_options)
    drawings = draw.Drawings(motion)  # drawn one window at a time

    reference = animate.encode_reference(
        models.networks, portrait, vae_encode=vae_encoder(models.vae), clip_encode=clip_encoder(models.clip),
        width=width, height=height, official_round_trip=official_round_trip, clip_size=clip_image_size(models.clip))
    latents = animate.sample(models.networks, reference, drawings, options,
                             callback=lambda i: report("sampling", i["done"], i["total"]) if "x" not in i else None)
    frames = animate.decode(vae_decoder(models.vae), latents, chunk=decode_chunk,
                            callback=lambda i: report("decoding", i["done"], i["total"]))
    rate = info.rate or Fraction(info.fps).limit_denominator(1_000_000)
    count = write_video(out_path, frames, rate, audio_from=driving_video if info.has_audio else None)
    report("decoding", count, count)
    logger.info("%d frames at %s fps written to %s", count, rate, out_path)
    return AnimationResult(Path(out_path), count, rate, info.has_audio, motion)
