"""The README's pictures and the workflow templates' thumbnails, made by the pack itself (no weights needed).

Run: ./dev bench pictures   (after ./dev test tests/test_frontend.py, it also takes the editor screenshot)

- docs/framing.jpg: a 1600×1000 photo with the face off-centre → Crop Portrait's box and landmarks | the crop the
  model sees, with the drawing it follows | that drawing pasted back into the photo through the feathered mask;
- docs/edit.jpg: Edit Motion's before and after (the drawings the model follows);
- docs/check.png: a Check Motion chart;
- docs/icon.png: the registry icon (the crop with the features the model follows);
- docs/workflow.jpg: the shipped workflow in ComfyUI's editor (the browser test's screenshot,
  tests/.output/frontend/graph_Follow-Your-Emoji_animate_a_photo.png, once its missing-models dialog is closed);
- workflows/<name>.jpg: each shipped workflow's thumbnail in the editor's templates browser.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from emoji_model import framing  # noqa: E402
from emoji_model.landmarks import draw  # noqa: E402
from emoji_model.pipeline import portrait_motion  # noqa: E402

SCREENSHOT = REPO / "tests" / ".output" / "frontend" / "graph_Follow-Your-Emoji_animate_a_photo.png"


def photo() -> np.ndarray:
    """A 1600×1000 photo with the face at the top right: scikit-image's astronaut on a plain wall."""
    from media import astronaut_path

    canvas = np.full((1000, 1600, 3), (58, 66, 80), dtype=np.uint8)
    canvas[100:900, 780:1580] = np.asarray(Image.open(astronaut_path()).convert("RGB").resize((800, 800)))
    return canvas


def labelled(image: np.ndarray, text: str, height: int) -> Image.Image:
    picture = Image.fromarray(image)
    picture = picture.resize((round(picture.width * height / picture.height), height), Image.LANCZOS)
    pen = ImageDraw.Draw(picture)
    pen.rectangle((0, 0, picture.width, 36), fill=(0, 0, 0))
    pen.text((10, 6), text, fill=(255, 255, 255), font=ImageFont.load_default(size=22))
    return picture


def framing_picture(model: Path, driving: Path, out: Path) -> Image.Image:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "photo.png"
        Image.fromarray(photo()).save(source)
        job = portrait_motion(source, driving, model, max_frames=12, keep_first_frame=True)
    drawing = draw.draw_motion(job.motion.points[6:7], job.motion.width, job.motion.height)[0]
    crop = job.prepared.image.copy()
    lit = drawing.max(axis=-1) > 0
    crop[lit] = drawing[lit]
    pasted = next(framing.paste_back([crop], job.portrait, job.prepared.crop, feather=0.1))
    panels = [labelled(framing.preview(job.portrait, job.prepared), "1 the photo: face found, crop box", 400),
              labelled(crop, "2 what the model sees and follows", 400),
              labelled(pasted, "3 pasted back into the 1600 x 1000 photo", 400)]
    sheet = Image.new("RGB", (sum(p.width for p in panels) + 20 * (len(panels) - 1), 400), (20, 20, 20))
    x = 0
    for panel in panels:
        sheet.paste(panel, (x, 0))
        x += panel.width + 20
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=88)
    size = np.array([job.prepared.landmarks.width, job.prepared.landmarks.height])
    icon = framing.draw_framing(job.prepared.image, framing.PortraitCrop("none", (512, 512), (512, 512),
                                (0, 0, 512, 512), (0, 0, 512, 512)), job.prepared.landmarks.points[0, :, :2] * size)
    Image.fromarray(icon[40:472, 40:472]).resize((400, 400), Image.LANCZOS).save(out.with_name("icon.png"))
    return sheet


def edit_picture(model: Path, driving: Path, out: Path) -> None:
    """Three driving frames' drawings, as driven (top) and edited (bottom: mouth 0.3, blinks removed, yaw +15°)."""
    from emoji_model.landmarks.edit import MotionEdit, edit_motion
    from media import astronaut_path

    job = portrait_motion(astronaut_path(), driving, model, max_frames=90, keep_first_frame=True)
    edited = edit_motion(job.motion, MotionEdit(mouth=0.3, remove_blinks=True, yaw=15.0))
    rows = []
    for motion, text in ((job.motion, "as driven"), (edited, "edited: mouth 0.3, no blinks, yaw +15")):
        frames = draw.draw_motion(motion.points[[10, 45, 80]], motion.width, motion.height)
        rows.append(labelled(np.concatenate(list(frames), axis=1), text, 300))
    sheet = Image.new("RGB", (rows[0].width, 600 + 10), (40, 40, 40))
    sheet.paste(rows[0], (0, 0))
    sheet.paste(rows[1], (0, 310))
    sheet.save(out, quality=90)


def check_picture(model: Path, driving: Path, out: Path) -> None:
    """Check Motion on a stand-in 'animation': the driving video itself, shifted 6 px, a stretch replaced by grey."""
    import tempfile

    from emoji_model import check
    from emoji_model.video import iter_video_frames, probe_video, read_image, write_video

    frames = [f for f in iter_video_frames(driving, 90) if f is not None]
    with tempfile.TemporaryDirectory() as tmp:
        still = Path(tmp) / "frame0.png"
        Image.fromarray(frames[0]).save(still)
        job = portrait_motion(still, driving, model, max_frames=90, keep_first_frame=True,
                              framing=framing.FramingOptions(framing="none"), pose_mode="absolute", neutral_frame=0)
    shifted = [np.roll(f, 6, axis=1) if not 40 <= i < 52 else np.full_like(f, 128) for i, f in enumerate(frames)]
    result = check.check_frames(shifted, job.motion, model, driving=job.driving, crop=job.prepared.crop)
    Image.fromarray(check.plot_check(result, title="clip shifted 6 px, frames 40-51 grey"))\
        .save(out)


def thumbnail(image: Image.Image, out: Path, size=(512, 384)) -> None:
    image = image.copy()
    image.thumbnail(size, Image.LANCZOS)
    canvas = Image.new("RGB", size, (20, 20, 20))
    canvas.paste(image, ((size[0] - image.width) // 2, (size[1] - image.height) // 2))
    canvas.save(out, quality=88)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="face_landmarker_v2_with_blendshapes.task")
    args = parser.parse_args()
    from emoji_model.__main__ import default_inputs
    from emoji_model.model_files import FACE_LANDMARKER, find_model_file

    model = find_model_file(FACE_LANDMARKER, args.model)
    _, driving = default_inputs()
    sheet = framing_picture(model, driving, REPO / "docs" / "framing.jpg")
    edit_picture(model, driving, REPO / "docs" / "edit.jpg")
    check_picture(model, driving, REPO / "docs" / "check.png")
    thumbnail(sheet, REPO / "workflows" / "Follow-Your-Emoji animate a photo.jpg")
    landmarks = [p for p in (REPO / "workflows").glob("*.json") if "landmarks" in p.stem]
    for path in landmarks:
        thumbnail(Image.open(REPO / "docs" / "framing.jpg").crop((0, 0, sheet.width * 2 // 3, 400)),
                  path.with_suffix(".jpg"))
    if SCREENSHOT.is_file():
        shot = Image.open(SCREENSHOT).convert("RGB")
        shot.thumbnail((1600, 900), Image.LANCZOS)
        shot.save(REPO / "docs" / "workflow.jpg", quality=85)
    print("written: docs/framing.jpg, edit.jpg, check.png, icon.png, workflow.jpg (if the screenshot exists), "
          "workflows/*.jpg")


if __name__ == "__main__":
    main()
