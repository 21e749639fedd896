"""The README's pictures and the workflow templates' thumbnails, made by the pack itself (no weights needed).

Run: ./dev bench pictures   (after ./dev test tests/test_frontend.py, it also takes the editor screenshot)

- docs/framing.jpg: a 1600×1000 photo with the face off-centre → Crop Portrait's box and landmarks | the crop the
  model sees, with the drawing it follows | that drawing pasted back into the photo through the feathered mask;
- docs/icon.png: the registry icon (the crop with the features the model follows);
- docs/workflow.jpg: the shipped workflow in ComfyUI's editor (the browser test's screenshot,
  tests/.output/frontend/open_Follow-Your-Emoji_animate_a_photo.png);
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

SCREENSHOT = REPO / "tests" / ".output" / "frontend" / "open_Follow-Your-Emoji_animate_a_photo.png"


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
    thumbnail(sheet, REPO / "workflows" / "Follow-Your-Emoji animate a photo.jpg")
    landmarks = [p for p in (REPO / "workflows").glob("*.json") if "landmarks" in p.stem]
    for path in landmarks:
        thumbnail(Image.open(REPO / "docs" / "framing.jpg").crop((0, 0, sheet.width * 2 // 3, 400)),
                  path.with_suffix(".jpg"))
    if SCREENSHOT.is_file():
        shot = Image.open(SCREENSHOT).convert("RGB")
        shot.thumbnail((1600, 900), Image.LANCZOS)
        shot.save(REPO / "docs" / "workflow.jpg", quality=85)
    print("written: docs/framing.jpg, docs/workflow.jpg (if the screenshot exists), workflows/*.jpg")


if __name__ == "__main__":
    main()
