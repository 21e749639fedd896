"""The library's jobs, composed from its parts: used by the ComfyUI nodes and the command line alike."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import check
from .landmarks import align, draw, extract, fit
from .landmarks.edit import MotionEdit, edit_motion
from .landmarks.faces import FaceBox
from .framing import FramingOptions, PortraitCrop, PreparedPortrait, paste_back, prepare_portrait
from .framing import preview as framing_preview
from .landmarks.types import FaceLandmarks, Motion
from .video import VideoInfo, VideoSource, iter_video_frames, probe_video, read_image, write_video

logger = logging.getLogger(__name__)


def extract_landmarks(
    frames: Iterable[np.ndarray | None],
    model_path: str | os.PathLike,
    *,
    video: bool,
    fps: float = 30.0,
    on_frame: Callable[[int], None] | None = None,
    face_index: int = 0,
    face_order: str = "largest",
) -> FaceLandmarks:
    """Face landmarks of each frame; ``video`` tracks across frames (MediaPipe VIDEO mode), else IMAGE mode; with
    several faces, face ``face_index`` in ``face_order`` is followed (``landmarks.faces``)."""
    return extract.extract_landmarks(frames, model_path, video=video, fps=fps, on_frame=on_frame,
                                     face_index=face_index, face_order=face_order)


def video_landmarks(
    source: VideoSource,
    model_path: str | os.PathLike,
    *,
    tracking: bool = True,
    max_frames: int | None = None,
    on_frame: Callable[[int, int], None] | None = None,
    face_index: int = 0,
    face_order: str = "largest",
) -> tuple[FaceLandmarks, VideoInfo]:
    """The landmarks of a driving video read one frame at a time (memory does not grow with its length: no frame is
    kept), and what the file says of itself. ``on_frame(i, total)``: progress; total is the container's count."""
    info = probe_video(source)
    total = min(n for n in (info.num_frames, max_frames, 2**31) if n)
    report = None if on_frame is None else (lambda i: on_frame(i, total))
    landmarks = extract.extract_landmarks(iter_video_frames(source, max_frames), model_path, video=tracking,
                                          fps=info.fps, on_frame=report, face_index=face_index, face_order=face_order,
                                          num_frames=total if total < 2**31 else None)
    return landmarks, info


def retarget(reference: FaceLandmarks, driving: FaceLandmarks, **options) -> Motion:
    """The driving motion on the reference face (options: see :func:`landmarks.align.align`)."""
    return align.align(reference.select(0), driving, **options)


def draw_motion(motion: Motion) -> np.ndarray:
    """(N, H, W, 3) uint8 expression-aware landmark drawings of a motion."""
    return draw.draw_motion(motion.points, motion.width, motion.height)


def draw_landmarks(landmarks: FaceLandmarks, max_frames: int | None = None, max_side: int | None = None) -> np.ndarray:
    """(n, H, W, 3) uint8 drawings of the detected landmarks as they are; black where no face was found. At most
    ``max_frames`` of them (evenly spaced) and at most ``max_side`` px on the long side, for previews of long videos."""
    frames = np.arange(len(landmarks))
    if max_frames is not None and len(frames) > max_frames:
        frames = np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))
    scale = min(1.0, (max_side or math.inf) / max(landmarks.width, landmarks.height))
    width, height = max(1, round(landmarks.width * scale)), max(1, round(landmarks.height * scale))
    return draw.draw_normalised(landmarks.points[frames, :, :2], width, height)


Progress = Callable[[str, int, int], None]  # (phase, done, total): "landmarks", "sampling", "decoding"


@dataclass(frozen=True, eq=False)
class MotionJob:
    """The landmark half of both jobs: the portrait prepared (framing), the driving face, the motion it follows."""

    portrait: np.ndarray  # (H, W, 3) uint8, the photo as given
    prepared: PreparedPortrait
    driving: FaceLandmarks
    motion: Motion
    info: VideoInfo
    driving_video: VideoSource

    @property
    def rate(self) -> Fraction:
        return self.info.rate or Fraction(self.info.fps).limit_denominator(1_000_000)


def portrait_motion(
    reference_image: str | os.PathLike,
    driving_video: VideoSource,
    landmarker_model: str | os.PathLike,
    *,
    framing: FramingOptions = FramingOptions(),
    tracking: bool = True,
    max_frames: int | None = None,
    driving_face_index: int = 0,
    driving_face_order: str = "largest",
    progress: Progress | None = None,
    portrait_points=None,
    edit: MotionEdit | None = None,
    **align_options,
) -> MotionJob:
    """Portrait → ``prepare_portrait`` (framing, its landmarks; or, with ``portrait_points``, the face fitted to them:
    ``prepare_fitted_portrait``); driving video → landmarks (one frame at a time; the face ``driving_face_index`` in
    ``driving_face_order`` followed); the driving motion retargeted onto the prepared portrait (``align_options``:
    see ``landmarks.align.align``), then ``edit`` applied (``landmarks.edit``)."""
    portrait = read_image(reference_image)
    if portrait_points is None:
        prepared = prepare_portrait(portrait, landmarker_model, framing)
    else:
        prepared = prepare_fitted_portrait(portrait, portrait_points, landmarker_model, framing)
    report = None if progress is None else (lambda i, total: progress("landmarks", i + 1, total))
    driving, info = video_landmarks(driving_video, landmarker_model, tracking=tracking, max_frames=max_frames,
                                    on_frame=report, face_index=driving_face_index, face_order=driving_face_order)
    motion = retarget(prepared.landmarks, driving, **align_options)
    if edit is not None:
        motion = edit_motion(motion, edit)
    return MotionJob(portrait, prepared, driving, motion, info, driving_video)


def from_portrait(points: np.ndarray, crop: PortraitCrop) -> np.ndarray:
    """Pixel points (..., 2) of the portrait → pixels of the prepared image (``framing.to_portrait``'s inverse)."""
    rx, ry, rw, rh = crop.region
    x, y, w, h = crop.source
    return (np.asarray(points, dtype=np.float64)[..., :2] - (x, y)) * (rw / w, rh / h) + (rx, ry)


def prepare_fitted_portrait(portrait, points, landmarker_model: str | os.PathLike,
                            options: FramingOptions = FramingOptions()) -> PreparedPortrait:
    """``framing.prepare_portrait`` for a face MediaPipe cannot find, given by five points in portrait pixels
    (``landmarks.fit.FIT_POINTS``): the canonical face is fitted to them on the photo (``crop``: the square is framed
    around the fitted face's landmark box, as around a detected one), then again in the prepared image, where it
    gives the portrait's landmarks. The bundle provides the canonical face."""
    from .errors import InputImageError
    from .framing import check_framing, crop_portrait, fit_portrait, whole_portrait
    from .images import to_rgb_uint8

    rgb = to_rgb_uint8(portrait)
    given = fit.check_points(fit.parse_points(points))
    geometry = fit.load_geometry(landmarker_model)
    try:
        check_framing(options)
    except ValueError as error:
        raise InputImageError(str(error)) from None
    height, width = rgb.shape[:2]
    if options.framing == "crop":
        whole = fit.fit_face(given, width, height, geometry).landmarks
        box = FaceBox.of_points(whole.points[0], width, height)
        image, crop = crop_portrait(rgb, box, options.size, crop_scale=options.crop_scale,
                                    crop_offset_y=options.crop_offset_y)
    elif options.framing == "fit":
        image, crop = fit_portrait(rgb, options.size, options.size)
    else:
        image, crop = whole_portrait(rgb)
    fitted = fit.fit_face(from_portrait(given, crop), crop.size[0], crop.size[1], geometry)
    return PreparedPortrait(image, crop, fitted.landmarks)


def run_check(output_video: VideoSource, reference_image, driving_video, out_dir: str | os.PathLike, model_path,
              **job_options) -> check.MotionCheck:
    """An animation (``output_video``) checked against the motion its portrait and driving video give (made again:
    ``portrait_motion`` with ``job_options``, as for ``animate``): ``check.json`` and ``check.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    progress = job_options.pop("progress", None)
    job = portrait_motion(reference_image, driving_video, model_path, progress=progress, **job_options)
    total = len(job.motion)
    result = check.check_frames(iter_video_frames(output_video, total), job.motion, model_path, driving=job.driving,
                          crop=job.prepared.crop, tracking=job_options.get("tracking", True),
                          on_frame=None if progress is None else (lambda i: progress("checking", i + 1, total)))
    (out_dir / "check.json").write_text(result.to_json())
    _write_png(out_dir / "check.png", check.plot_check(result, title=Path(str(output_video)).name))
    return result


def run_landmarks(reference_image, driving_video, out_dir: str | os.PathLike, model_path, **job_options) -> MotionJob:
    """Portrait + driving video → in ``out_dir``: ``aligned_NNNN.png`` per driving frame (at the prepared portrait's
    size), ``landmarks.npz`` and ``framing.png`` (the photo with the crop box and its landmarks).
    ``job_options``: see ``portrait_motion``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    job = portrait_motion(reference_image, driving_video, model_path, **job_options)
    drawings = (image for chunk in draw.iter_drawings(job.motion) for image in chunk)
    for index, image in zip(job.motion.source_frames, drawings):
        _write_png(out_dir / f"aligned_{index:04d}.png", image)
    save_landmarks(out_dir / "landmarks.npz", job.prepared.landmarks, job.driving, job.motion)
    _write_png(out_dir / "framing.png", framing_preview(job.portrait, job.prepared))
    logger.info("%d of %d driving frames had a face; wrote %d drawings to %s",
                job.driving.num_found, len(job.driving), len(job.motion), out_dir)
    return job


def write_motion_preview(job: MotionJob, out_path: str | os.PathLike) -> tuple[Path, Path]:
    """What an animation would follow, without any weights: ``<out>_framing.png`` (the photo, crop box, landmarks)
    and ``<out>_motion.mp4`` (the landmark drawings with the driving video's frame rate and sound)."""
    out_path = Path(out_path)
    still, video = out_path.with_name(out_path.stem + "_framing.png"), out_path.with_name(out_path.stem + "_motion.mp4")
    still.parent.mkdir(parents=True, exist_ok=True)
    _write_png(still, framing_preview(job.portrait, job.prepared))
    write_video(video, draw.iter_drawings(job.motion), job.rate, audio_from=_audio_source(job))
    return still, video


def _audio_source(job: MotionJob) -> VideoSource | None:
    return job.driving_video if job.info.has_audio else None


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



@dataclass(frozen=True, eq=False)
class AnimationModels:
    """What an animation runs: the three networks, the CLIP image encoder and the VAE (transformers / diffusers)."""

    networks: object  # checkpoints.FollowYourEmojiNetworks
    clip: object  # transformers CLIPVisionModelWithProjection
    vae: object  # diffusers AutoencoderKL


def load_animation_models(weights_dir: str | os.PathLike, *, dtype: str = "fp32", device: str = "cpu",
                          clip: str | os.PathLike | None = None, vae: str | os.PathLike | None = None,
                          download_hint: str = "") -> AnimationModels:
    """The networks, CLIP and VAE of a model folder (``model_files`` layouts); ``clip``/``vae`` override the folder's.
    A folder missing anything is one ``ModelFileError`` naming what and where to get it (``download_hint``: the
    host's own way to download it)."""
    from . import checkpoints, encoders, model_files

    files = model_files.require_weights(weights_dir, download_hint=download_hint) if clip is None or vae is None \
        else model_files.find_model_files(weights_dir)
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


@dataclass(frozen=True)
class AnimationResult:
    """What the headless animation produced."""

    out_path: Path
    num_frames: int
    fps: Fraction
    has_audio: bool
    size: tuple[int, int]  # (width, height) of the video
    job: MotionJob


def run_animate(
    reference_image: str | os.PathLike,
    driving_video: VideoSource,
    out_path: str | os.PathLike,
    *,
    models: AnimationModels,
    landmarker_model: str | os.PathLike,
    options=None,
    paste: bool | None = None,
    feather: float = 0.1,
    colour_match: bool = False,
    official_round_trip: bool = False,
    decode_chunk: int = 8,
    frames_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    job: MotionJob | None = None,
    **job_options,
) -> AnimationResult:
    """Portrait + driving video → an MP4 of the portrait following the video, with the driving video's frame count
    (or its first ``max_frames``), frame rate and audio.

    ``portrait_motion`` (driving frame 0 kept: one output frame per driving frame; or a given ``job``) →
    ``encode_reference`` → ``sample`` → ``decode`` → ``paste_back`` into the photo (``paste``; default: with the
    ``crop`` framing) → ``write_video`` (and PNGs in ``frames_dir``): the same library calls the ComfyUI nodes make.
    ``options``: ``sampling.animate.SamplingOptions``. ``job_options``: see ``portrait_motion``.
    """
    from .sampling import animate

    options = options or animate.SamplingOptions()
    animate.check_options(options)
    report = progress or (lambda phase, done, total: None)
    job = job or portrait_motion(reference_image, driving_video, landmarker_model, progress=progress,
                                 keep_first_frame=True, **job_options)
    prepared = job.prepared
    width, height = prepared.crop.size
    reference = animate.encode_reference(
        models.networks, prepared.image, vae_encode=vae_encoder(models.vae), clip_encode=clip_encoder(models.clip),
        width=width, height=height, official_round_trip=official_round_trip, clip_size=clip_image_size(models.clip))
    latents = animate.sample(models.networks, reference, draw.Drawings(job.motion), options,
                             callback=lambda i: report("sampling", i["done"], i["total"]) if "x" not in i else None)
    pasting = prepared.crop.framing == "crop" if paste is None else paste
    frames = animate.decode(vae_decoder(models.vae), latents, chunk=decode_chunk, as_float=pasting,
                            callback=lambda i: report("decoding", i["done"], i["total"]))
    if pasting:  # the decoded floats, rounded once after pasting (as the Paste Back node gets VAE Decode's floats)
        frames = paste_back(frames, job.portrait, prepared.crop, feather=feather, colour_match=colour_match)
    if frames_dir is not None:
        frames = _saved(frames, Path(frames_dir))
    count = write_video(out_path, frames, job.rate, audio_from=_audio_source(job))
    report("decoding", count, count)
    size = _video_size(out_path)
    logger.info("%d frames of %d×%d at %s fps written to %s", count, *size, job.rate, out_path)
    return AnimationResult(Path(out_path), count, job.rate, job.info.has_audio, size, job)


def _saved(frames: Iterable[np.ndarray], folder: Path) -> Iterable[np.ndarray]:
    """``frames`` (frames or chunks) passed through, each also written as ``frame_NNNNN.png`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for item in frames:
        for frame in item if item.ndim == 4 else item[None]:
            _write_png(folder / f"frame_{index:05d}.png", frame)
            index += 1
        yield item


def _video_size(path) -> tuple[int, int]:
    info = probe_video(path)
    return info.width, info.height
