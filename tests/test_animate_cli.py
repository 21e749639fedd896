"""``python -m emoji_model animate`` end to end on the golden tiny model folder (+ our ``config.json`` for its
4-head motion modules), a few real carphone frames with an audio track, 64×64, 2 steps; the model-folder messages
and the opt-in download (with Hugging Face replaced by a stub: nothing is downloaded in tests)."""

from __future__ import annotations

import json
import sys
import types
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image
from media import astronaut_path, carphone_path, write_video

from emoji_model.__main__ import main
from emoji_model.checkpoints import load_follow_your_emoji
from emoji_model.model_config import read_pack_config
from emoji_model.model_files import find_model_files
from emoji_model.errors import ModelFileError
from emoji_model.video import iter_video_frames, probe_video

TINY_PACK_CONFIG = {"unet_additional_kwargs": {"motion_module_kwargs": {"num_attention_heads": 4}}}



pytestmark = pytest.mark.usefixtures("one_torch_thread")


def link_tree(source: Path, dest: Path) -> Path:
    """``source``'s files symlinked into a writable ``dest`` tree."""
    for path in source.rglob("*"):
        if path.is_file():
            target = dest / path.relative_to(source)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(path)
    return dest


@pytest.fixture(scope="module")
def weights(tiny_models_dir, tmp_path_factory) -> Path:
    folder = link_tree(tiny_models_dir, tmp_path_factory.mktemp("weights"))
    (folder / "follow-your-emoji" / "config.json").write_text(json.dumps(TINY_PACK_CONFIG))
    return folder


@pytest.fixture(scope="module")
def driving(tmp_path_factory) -> Path:
    """6 carphone frames (176×144) at 30000/1001 fps with 2 s of audio."""
    frames = np.stack(list(iter_video_frames(carphone_path(), max_frames=6)))
    return write_video(tmp_path_factory.mktemp("driving") / "drive.mp4", frames, fps=30000 / 1001, audio_seconds=2.0)


def audio_seconds(path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return float(stream.duration * stream.time_base)


def animate(weights, driving, out, landmarker, *extra) -> int:
    return main(["animate", "--reference", str(astronaut_path()), "--driving", str(driving), "--weights",
                 str(weights), "--out", str(out), "--model", str(landmarker), "--size", "64", "--steps", "2", *extra])


def test_pack_config_sets_the_motion_heads(weights, tiny_network_configs):
    assert find_model_files(weights).config == weights / "follow-your-emoji" / "config.json"
    networks = load_follow_your_emoji(weights)
    assert networks.unet.config == tiny_network_configs.unet3d  # 4 heads: nothing else in the folder says so
    assert networks.guider.config == tiny_network_configs.guider


def test_pack_config_errors(tmp_path):
    bad = tmp_path / "config.json"
    bad.write_text(json.dumps({"motion_heads": 4}))
    with pytest.raises(ModelFileError, match="unknown key.*motion_heads.*allowed: unet, unet_additional_kwargs"):
        read_pack_config(bad)
    bad.write_text("{")
    with pytest.raises(ModelFileError, match="Cannot read"):
        read_pack_config(bad)


def test_animate_keeps_frame_count_rate_and_audio(weights, driving, landmarker_model, tmp_path, capsys):
    """The default framing crops the astronaut's face to 64², animates it and pastes it back: the video has the
    photo's 512² and, outside the paste-back mask, exactly the photo's pixels in every frame (lossless PNGs)."""
    out, frames_dir = tmp_path / "anim.mp4", tmp_path / "frames"
    assert animate(weights, driving, out, landmarker_model, "--save-frames", str(frames_dir)) == 0
    info = probe_video(out)
    assert (info.num_frames, info.rate, info.width, info.height, info.has_audio) == (6, Fraction(30000, 1001), 512,
                                                                                     512, True)
    assert 6 / info.rate <= audio_seconds(out) <= 6 / info.rate + 0.05
    assert "6 frames of 512×512 at 29.970 fps (with the driving video's audio)" in capsys.readouterr().out
    portrait = np.asarray(Image.open(astronaut_path()).convert("RGB"))
    pasted = [np.asarray(Image.open(path)) for path in sorted(frames_dir.glob("frame_*.png"))]
    assert len(pasted) == 6
    changed = np.any(np.stack(pasted) != portrait, axis=-1).any(axis=0)  # (512, 512): pixels any frame changed
    ys, xs = np.nonzero(changed)
    assert 100 < xs.min() < xs.max() < 340 and 0 <= ys.min() < ys.max() < 220  # only around the face
    assert changed.mean() < 0.15 and np.stack(pasted).std(axis=0).max() > 1  # it moves


def test_fit_without_paste_back_is_the_model_size(weights, driving, landmarker_model, tmp_path):
    out = tmp_path / "fit.mp4"
    assert animate(weights, driving, out, landmarker_model, "--framing", "fit", "--frames", "3") == 0
    info = probe_video(out)
    assert (info.num_frames, info.width, info.height) == (3, 64, 64)
    frames = np.stack(list(iter_video_frames(out)))
    assert frames.std() > 1  # not a blank video


def test_a_large_off_centre_portrait_animates_at_its_own_size(weights, driving, landmarker_model, tmp_path):
    """1600×1000, the astronaut's face at the right: output at 1600×1000, the photo kept outside the mask."""
    canvas = np.full((1000, 1600, 3), (30, 60, 90), dtype=np.uint8)
    canvas[100:900, 780:1580] = np.asarray(Image.open(astronaut_path()).convert("RGB").resize((800, 800)))
    photo = tmp_path / "photo.png"
    Image.fromarray(canvas).save(photo)
    out, frames_dir = tmp_path / "big.mp4", tmp_path / "frames"
    assert main(["animate", "--reference", str(photo), "--driving", str(driving), "--weights", str(weights),
                 "--out", str(out), "--model", str(landmarker_model), "--size", "64", "--steps", "1", "--frames", "2",
                 "--save-frames", str(frames_dir), "--feather", "0.2"]) == 0
    info = probe_video(out)
    assert (info.width, info.height, info.num_frames) == (1600, 1000, 2)
    for path in sorted(frames_dir.glob("frame_*.png")):
        frame = np.asarray(Image.open(path))
        changed = np.any(frame != canvas, axis=-1)
        ys, xs = np.nonzero(changed)
        assert xs.min() > 950 and ys.max() < 500  # only the face's crop, in the photo's top right
        assert changed[:, :950].sum() == 0 and changed[500:].sum() == 0


@pytest.mark.parametrize("windows", ["official", "progressive"])
def test_frames_option_and_other_window_modes(weights, driving, landmarker_model, tmp_path, windows):
    out = tmp_path / "four.mp4"
    assert animate(weights, driving, out, landmarker_model, "--frames", "4", "--windows", windows,
                   "--window-length", "3", "--overlap", "1", "--keyframe-stride", "2", "--cfg", "1") == 0
    info = probe_video(out)
    assert info.num_frames == 4 and info.has_audio
    assert audio_seconds(out) <= 4 / info.rate + 0.05


def test_bad_options_are_one_line_errors(weights, driving, landmarker_model, tmp_path, capsys):
    assert animate(weights, driving, tmp_path / "x.mp4", landmarker_model, "--window-length", "40") == 2
    assert "positional encoding" in capsys.readouterr().err
    assert animate(weights, driving, tmp_path / "x.mp4", landmarker_model, "--cfg", "0.5") == 2
    assert "cfg must be a finite number ≥ 1" in capsys.readouterr().err
    assert animate(weights, driving, tmp_path / "x.mp4", landmarker_model, "--size", "60") == 2
    assert "multiple of 8" in capsys.readouterr().err
    assert animate(weights, driving, tmp_path / "x.mp4", landmarker_model, "--face-index", "3") == 2
    assert "face_index 3" in capsys.readouterr().err


def test_missing_weights_name_the_files_the_folder_and_the_sources(tmp_path, driving, landmarker_model, capsys):
    (tmp_path / "follow-your-emoji").mkdir()
    (tmp_path / "follow-your-emoji" / "unet.pth").write_bytes(b"")
    assert animate(tmp_path, driving, tmp_path / "x.mp4", landmarker_model) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "referencenet, guider" in err and "Traceback" not in err
    for source in ("YueMafighting/FollowYourEmoji", "lambdalabs/sd-image-variations-diffusers",
                   "stabilityai/sd-vae-ft-mse", "guoyww/animatediff", "mm_sd_v15_v2.ckpt",
                   "Kijai/FollowYourEmoji-safetensors", "--download"):
        assert source in err, source
    # what could be made without weights is there: the framing and the motion, with the driving timing and sound
    still, motion = tmp_path / "x_framing.png", tmp_path / "x_motion.mp4"
    assert str(still) in err and str(motion) in err
    assert Image.open(still).size == (512, 512)
    info = probe_video(motion)
    assert (info.num_frames, info.rate, info.width, info.height, info.has_audio) == (6, Fraction(30000, 1001), 64,
                                                                                     64, True)


def test_a_folder_without_clip_and_vae_says_so(weights, tmp_path, driving, landmarker_model, capsys):
    partial = link_tree(weights / "follow-your-emoji", tmp_path / "w" / "follow-your-emoji").parent
    assert animate(partial, driving, tmp_path / "x.mp4", landmarker_model) == 2
    err = capsys.readouterr().err
    assert "is incomplete" in err and "CLIP image encoder" in err and "the VAE" in err and "--download" in err


def test_download_places_the_official_layout(tmp_path, tiny_models_dir, monkeypatch):
    """``download_weights`` with ``huggingface_hub`` replaced by a stub serving the tiny files under the official
    repository paths: what lands where."""
    from emoji_model import downloads

    fye = tiny_models_dir / "follow-your-emoji"
    served = {
        ("YueMafighting/FollowYourEmoji", f"ckpts/{name}.pth"): fye / f"{name}.pth"
        for name in ("referencenet", "unet", "lmk_guider")
    }
    sd = tiny_models_dir / "sd-image-variations-diffusers"
    served.update({("lambdalabs/sd-image-variations-diffusers", str(p.relative_to(sd))): p
                   for p in sd.rglob("*") if p.is_file()})
    served.update({("stabilityai/sd-vae-ft-mse", p.name): p for p in (tiny_models_dir / "sd-vae-ft-mse").iterdir()})
    asked = []

    def place(repo, name, local_dir):
        asked.append((repo, name))
        target = Path(local_dir) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(served[repo, name].read_bytes())
        return str(target)

    def snapshot_download(repo, allow_patterns, local_dir):
        assert allow_patterns == ["ckpts/*"]
        for (r, name) in served:
            if r == repo and name.startswith("ckpts/"):
                place(repo, name, local_dir)
        return str(local_dir)

    stub = types.SimpleNamespace(
        snapshot_download=snapshot_download,
        hf_hub_download=lambda repo, name, local_dir: place(repo, name, local_dir),
        list_repo_files=lambda repo: [name for (r, name) in served if r == repo],
    )
    monkeypatch.setitem(sys.modules, "huggingface_hub", stub)
    files = downloads.download_weights(tmp_path / "models")
    assert files.layout == "official" and files.image_encoder and files.vae and files.unet_config
    assert sorted(p.name for p in (tmp_path / "models" / "follow-your-emoji").iterdir()) == [
        "lmk_guider.pth", "referencenet.pth", "unet.pth"]
    assert not (tmp_path / "models" / ".download").exists()
    assert ("guoyww/animatediff", "mm_sd_v15_v2.ckpt") not in asked  # the tiny unet.pth has its motion modules
    assert ("lambdalabs/sd-image-variations-diffusers", "unet/diffusion_pytorch_model.safetensors") not in asked
