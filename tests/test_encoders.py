"""Reference preprocessing, CLIP image encoder and VAE against the official code's goldens and the libraries it used.

Measured on this machine (fp32, 2 threads) and kept in the assertions' comments.
"""

from __future__ import annotations

import hashlib
import re

import numpy as np
import pytest
import torch
from PIL import Image

from emoji_model import encoders, pipeline, reference
from emoji_model.checkpoint_formats import SENTINEL_KEYS
from emoji_model.errors import InputImageError, ModelFileError

torch.set_num_threads(2)


# ---- helpers --------------------------------------------------------------------------------------------------


def official_fit_and_crop(image: np.ndarray, W: int, H: int) -> np.ndarray:
    """The official ValDataset resize + crop, line for line (PIL's default resample, crop box outside = black)."""
    pil = Image.fromarray(image)
    scale = min(W / pil.size[0], H / pil.size[1])
    pil = pil.resize((int(pil.size[0] * scale), int(pil.size[1] * scale)))
    w, h = pil.size
    return np.array(pil.crop((w // 2 - W // 2, h // 2 - H // 2, w // 2 + W // 2, h // 2 + H // 2)))


def pil_clip_processor(**kwargs):
    """transformers' PIL CLIP processor: ``CLIPImageProcessorPil`` in 5.x, ``CLIPImageProcessor`` in 4.x."""
    try:
        from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil as cls
    except ImportError:
        from transformers import CLIPImageProcessor as cls
    return cls(**kwargs)


def comfyui_clip_preprocess(image_u8: np.ndarray, size: int) -> torch.Tensor:
    """ComfyUI 0.3.75 ``clip_vision.clip_preprocess`` as comfyui-host.md describes it, for measurement only.

    IMAGE floats → torch bicubic + antialias resize of the shortest side (long side ``round``ed), centre crop,
    quantise to 1/255, OpenAI mean/std.
    """
    x = torch.from_numpy(image_u8.astype(np.float32) / 255)[None].movedim(-1, 1)
    if x.shape[2:] != (size, size):
        scale = size / min(x.shape[2], x.shape[3])
        x = torch.nn.functional.interpolate(x, size=(round(scale * x.shape[2]), round(scale * x.shape[3])),
                                            mode="bicubic", antialias=True)
        top, left = (x.shape[2] - size) // 2, (x.shape[3] - size) // 2
        x = x[:, :, top:top + size, left:left + size]
    x = torch.clip(255.0 * x, 0, 255).round() / 255.0
    return normalise(x)


def normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(reference.CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(reference.CLIP_STD).view(3, 1, 1)
    return (x - mean) / std


def crops(astronaut_rgb: np.ndarray) -> dict[str, np.ndarray]:
    """Real, odd-sized portrait / landscape / small images cut from the astronaut."""
    return {
        "landscape_317x211": np.ascontiguousarray(astronaut_rgb[40:251, 90:407]),
        "portrait_203x391": np.ascontiguousarray(astronaut_rgb[20:411, 150:353]),
        "small_150x90": np.ascontiguousarray(astronaut_rgb[100:190, 180:330]),
        "tall_64x500": np.ascontiguousarray(astronaut_rgb[0:500, 200:264]),
    }


def diffusers_vae_to_ldm(sd: dict, num_blocks: int = 4) -> dict:
    """Test-only inverse of diffusers' LDM VAE conversion, to make an original-layout file from the tiny VAE."""
    out = {}
    flip = lambda m: str(num_blocks - 1 - int(m))  # noqa: E731  LDM numbers decoder levels bottom-up
    for key, value in sd.items():
        k = key.replace("conv_shortcut", "nin_shortcut").replace("conv_norm_out", "norm_out")
        k = re.sub(r"down_blocks\.(\d+)\.resnets\.(\d+)", r"down.\1.block.\2", k)
        k = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0", r"down.\1.downsample", k)
        k = re.sub(r"up_blocks\.(\d+)\.resnets\.(\d+)", lambda m: f"up.{flip(m[1])}.block.{m[2]}", k)
        k = re.sub(r"up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"up.{flip(m[1])}.upsample", k)
        k = re.sub(r"mid_block\.resnets\.(\d+)", lambda m: f"mid.block_{int(m[1]) + 1}", k)
        k = k.replace("mid_block.attentions.0.", "mid.attn_1.")
        for new, old in (("group_norm", "norm"), ("to_q", "q"), ("to_k", "k"), ("to_v", "v"), ("to_out.0", "proj_out")):
            k = k.replace(f"attn_1.{new}.", f"attn_1.{old}.")
        if ".attn_1." in k and value.ndim == 2:  # 1×1 convs in the original
            value = value[:, :, None, None]
        out[k] = value
    return out


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def clip_model(tiny_models_dir):
    return encoders.load_clip_image_encoder(tiny_models_dir / "sd-image-variations-diffusers" / "image_encoder")


@pytest.fixture(scope="module")
def vae(tiny_models_dir):
    return encoders.load_vae(tiny_models_dir / "sd-vae-ft-mse")


# ---- reference: fit and pad, round trip, VAE input --------------------------------------------------------------


def test_fit_and_pad_keeps_a_square_image_as_it_is(astronaut_rgb):
    assert np.array_equal(reference.fit_and_pad(astronaut_rgb, 512, 512), astronaut_rgb)


@pytest.mark.parametrize("size", [(512, 512), (384, 256), (256, 384), (128, 128)])
def test_fit_and_pad_equals_the_official_resize_and_crop(astronaut_rgb, size):
    W, H = size
    for name, image in {"square": astronaut_rgb, **crops(astronaut_rgb)}.items():
        ours = reference.fit_and_pad(image, W, H)
        assert ours.shape == (H, W, 3) and ours.dtype == np.uint8
        assert np.array_equal(ours, official_fit_and_crop(image, W, H)), name


def test_fit_and_pad_pads_black_and_centres(astronaut_rgb):
    image = crops(astronaut_rgb)["portrait_203x391"]  # fits as 265×512 into 512²: 123 + 124 black columns
    out = reference.fit_and_pad(image, 512, 512)
    w = int(203 * (512 / 391))
    left = 256 - w // 2
    assert not out[:, :left].any() and not out[:, left + w:].any()
    assert out[:, left].any() and out[:, left + w - 1].any()


def test_fit_and_pad_rejects_bad_input():
    with pytest.raises(InputImageError, match="Empty reference image"):
        reference.fit_and_pad(np.zeros((0, 4, 3), np.uint8), 64, 64)
    with pytest.raises(ValueError):
        reference.fit_and_pad(np.zeros((4, 4, 3), np.uint8), 0, 64)


def test_official_round_trip_reproduces_quirk_3(astronaut_rgb, run1_golden):
    facts = run1_golden["json"]["ref_image_round_trip"]
    out = reference.official_round_trip(astronaut_rgb)
    diff = out.astype(int) - astronaut_rgb
    assert (diff != 0).sum() == facts["num_changed_values"]  # 173,320
    assert diff.min() == facts["min_diff"] and diff.max() == facts["max_diff"]
    assert hashlib.sha256(out.tobytes()).hexdigest() == facts["sha256_of_ref_image_passed_to_pipeline"]


def test_vae_input_same_size_is_a_plain_rescale(astronaut_rgb):
    x = reference.vae_input(astronaut_rgb)
    expected = torch.from_numpy(astronaut_rgb.copy()).permute(2, 0, 1)[None].float() / 255 * 2 - 1
    assert x.shape == (1, 3, 512, 512) and x.dtype == torch.float32
    assert torch.equal(x, expected)  # no Lanczos pass when the size is unchanged


def test_vae_input_floors_the_size_to_multiples_of_8(astronaut_rgb):
    assert reference.vae_input(astronaut_rgb[:100, :130]).shape == (1, 3, 96, 128)
    assert reference.vae_input(astronaut_rgb, 203, 317).shape == (1, 3, 312, 200)


def test_vae_input_equals_diffusers_vae_image_processor(astronaut_rgb):
    from diffusers.image_processor import VaeImageProcessor

    processor = VaeImageProcessor(vae_scale_factor=8, do_convert_rgb=True)
    for name, image in {"square": astronaut_rgb, **crops(astronaut_rgb)}.items():
        for size in [None, (128, 128), (96, 136), (512, 512)]:
            width, height = size or (None, None)
            expected = processor.preprocess(Image.fromarray(image), height=height, width=width)
            assert torch.equal(reference.vae_input(image, width, height), expected), (name, size)


def test_vae_input_equals_the_module_golden(astronaut_rgb, module_golden):
    assert torch.equal(reference.vae_input(astronaut_rgb, 128, 128), module_golden("vae")["encode_in"])


def test_run1_reference_tensor_needs_the_official_round_trip(astronaut_rgb, run1_golden):
    """ValDataset at 512 → round trip → the pipeline's Lanczos to 128: bit-exact only with the flag on."""
    canvas = reference.fit_and_pad(astronaut_rgb, 512, 512)
    golden = run1_golden["shared.ref_image_tensor"]
    assert max_abs(reference.vae_input(canvas, 128, 128, official_round_trip=True), golden) == 0.0
    # Without it: measured max 0.0157 (2 levels after Lanczos), i.e. the fix is visible.
    assert 1e-3 < max_abs(reference.vae_input(canvas, 128, 128), golden) < 0.05


# ---- CLIP preprocessing ---------------------------------------------------------------------------------------


def test_clip_input_equals_transformers_pil_processor(astronaut_rgb):
    processor = pil_clip_processor()
    processor32 = pil_clip_processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    for name, image in {"square": astronaut_rgb, **crops(astronaut_rgb)}.items():
        ours = reference.clip_input(image)
        assert ours.shape == (1, 3, 224, 224) and ours.dtype == torch.float32
        assert torch.equal(ours, processor(images=Image.fromarray(image), return_tensors="pt").pixel_values), name
        ours32 = reference.clip_input(image, 32)
        assert torch.equal(ours32, processor32(images=Image.fromarray(image), return_tensors="pt").pixel_values), name


def test_clip_input_equals_the_goldens(astronaut_rgb, module_golden, run1_golden):
    golden = module_golden("clip")
    # The official ValDataset clip_image at full size (224 px) and the 32 px one of the tiny CLIP: bit-exact.
    assert torch.equal(reference.clip_input(astronaut_rgb)[0], golden["clip_preprocess_default224_astronaut"])
    assert torch.equal(reference.clip_input(astronaut_rgb, 32)[0], golden["pixel_values"][0])
    assert torch.equal(reference.clip_input(reference.fit_and_pad(astronaut_rgb, 512, 512), 32),
                       run1_golden["shared.clip_image"])
    # transformers 5's default CLIPImageProcessor() is the torchvision backend: measured 0.0150 from the 224 golden
    # (4.45's, used by the official, was PIL). Hence the PIL path here, not the default class.


def test_clip_input_normalises_once(astronaut_rgb):
    x = reference.clip_input(astronaut_rgb)
    # Once: the mean/std of [0, 1] pixels, so within [(0 − mean)/std, (1 − mean)/std] ≈ [−1.79, 2.15].
    assert -1.80 < x.min().item() and x.max().item() < 2.15
    assert normalise(x).min().item() < -8  # a second pass would push it to ≈ −8.5


# ---- CLIP image encoder ---------------------------------------------------------------------------------------


def test_clip_hidden_states_match_the_golden(clip_model, module_golden):
    golden = module_golden("clip")
    out = clip_model(golden["pixel_values"])
    # Measured 0.0 for both (fp32, SDPA, transformers 5.23 vs the official 4.45.2).
    assert max_abs(encoders.encode_clip(clip_model, golden["pixel_values"]), golden["last_hidden_state"]) <= 1e-4
    assert max_abs(out.image_embeds, golden["image_embeds"]) <= 1e-4
    assert encoders.encode_clip(clip_model, golden["pixel_values"]).shape == (2, 17, 1024)


def test_clip_hidden_states_from_the_astronaut_end_to_end(clip_model, astronaut_rgb, run1_golden):
    pixels = reference.clip_input(reference.fit_and_pad(astronaut_rgb, 512, 512), 32)
    states = encoders.encode_clip(clip_model, pixels)
    assert max_abs(states, run1_golden["shared.encoder_hidden_states_cond"]) <= 1e-4  # measured 0.0


def test_clip_states_are_taken_before_post_layernorm(clip_model, module_golden):
    golden = module_golden("clip")
    states = encoders.encode_clip(clip_model, golden["pixel_values"])
    with torch.no_grad():
        normed = clip_model.vision_model.post_layernorm(states)
    assert max_abs(normed, golden["last_hidden_state"]) > 0.5  # the golden tells the two apart


def test_doubly_normalised_pixels_would_change_the_states(clip_model, astronaut_rgb, run1_golden):
    once = reference.clip_input(reference.fit_and_pad(astronaut_rgb, 512, 512), 32)
    twice = encoders.encode_clip(clip_model, normalise(once))
    # Measured max 2.38 against |states| ≤ 4.39: the golden test above would catch a second normalisation.
    assert max_abs(twice, run1_golden["shared.encoder_hidden_states_cond"]) > 0.5


def test_comfyui_clip_preprocessing_differs_slightly_from_the_official(clip_model, astronaut_rgb):
    """ComfyUI's own CLIP_VISION path (torch bicubic + antialias) vs the official PIL path, measured.

    Astronaut 512² (square, like the official 512² canvas), in 0–255 levels of the un-normalised pixels:
      224 px: max 5 levels, mean 0.125;  32 px: max 5, mean 0.078;
      tiny-CLIP states (32 px): max 0.037, mean 0.0036, against |states| ≤ 4.39 (≈ 0.8 % worst case).
    Non-square inputs differ far more: ComfyUI rounds the long side (``round``), transformers truncates (``int``),
    so 512×384 → 299 vs 298 px wide, a ≈0.9 px shift at the centre: max 157 levels, mean 5.3 (224 px) and
    tiny-CLIP states max 3.3 (32 px). The pack's own path (``reference.clip_input``) has neither difference.
    """
    std = torch.tensor(reference.CLIP_STD).view(3, 1, 1)
    for size, max_levels, mean_levels in [(224, 5, 0.125), (32, 5, 0.078)]:
        official = reference.clip_input(astronaut_rgb, size)
        comfy = comfyui_clip_preprocess(astronaut_rgb, size)
        levels = ((official - comfy) * std * 255).abs()
        assert 0 < levels.max().item() <= max_levels + 0.5
        assert 0.5 * mean_levels < levels.mean().item() < 2 * mean_levels
    states = encoders.encode_clip(clip_model, reference.clip_input(astronaut_rgb, 32))
    comfy_states = encoders.encode_clip(clip_model, comfyui_clip_preprocess(astronaut_rgb, 32))
    assert 1e-3 < max_abs(states, comfy_states) < 0.1  # measured 0.037


def test_clip_single_file_fp16_loads_like_the_folder(clip_model, tiny_models_dir, tmp_path, module_golden):
    from safetensors.torch import load_file, save_file

    folder = tiny_models_dir / "sd-image-variations-diffusers" / "image_encoder"
    sd = {k: v.half() for k, v in load_file(str(folder / "model.safetensors")).items()}
    sd["vision_model.embeddings.position_ids"] = torch.arange(17)[None]  # as older exports carry it
    save_file(sd, str(tmp_path / "encoder-fp16.safetensors"))
    single = encoders.load_clip_image_encoder(tmp_path / "encoder-fp16.safetensors", config=folder)
    pixels = module_golden("clip")["pixel_values"]
    assert torch.equal(encoders.encode_clip(single, pixels), encoders.encode_clip(clip_model, pixels))
    # A whole CLIPModel file (text tower too) is reduced to the vision tower.
    full = {**sd, SENTINEL_KEYS["clip_text"][0]: torch.zeros(8, 4), "logit_scale": torch.tensor(1.0)}
    save_file(full, str(tmp_path / "clip-full.safetensors"))
    single = encoders.load_clip_image_encoder(tmp_path / "clip-full.safetensors", config=folder)
    assert torch.equal(encoders.encode_clip(single, pixels), encoders.encode_clip(clip_model, pixels))


def test_clip_loader_dtype_and_errors(tiny_models_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    root = tiny_models_dir / "sd-image-variations-diffusers"
    model = encoders.load_clip_image_encoder(root, dtype=torch.float16)  # a whole repo folder: image_encoder/
    assert next(model.parameters()).dtype == torch.float16 and not model.training
    sd = load_file(str(root / "image_encoder" / "model.safetensors"))
    save_file(sd, str(tmp_path / "enc.safetensors"))
    config = {**encoders.VIT_L14_CONFIG, "num_hidden_layers": 2, "intermediate_size": 64, "image_size": 32,
              "patch_size": 8}
    with pytest.raises(ModelFileError, match="16 missing"):
        encoders.load_clip_image_encoder(tmp_path / "enc.safetensors", config=config)
    save_file({"foo": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a CLIP"):
        encoders.load_clip_image_encoder(tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError):
        encoders.load_clip_image_encoder(tmp_path / "absent.safetensors")
    with pytest.raises(ModelFileError):
        encoders.load_clip_image_encoder(tmp_path)  # a folder without config.json


def test_full_size_configs_match_the_manifest(shared_dir):
    """The in-code ViT-L/14 and sd-vae-ft-mse configs build exactly the official key sets and parameter counts."""
    import json

    from diffusers import AutoencoderKL
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    manifest = json.loads((shared_dir / "golden" / "full_size_manifest.json").read_text())
    files = {k.split(" ")[0]: v for k, v in manifest["files"].items()}
    assert encoders.VIT_L14_CONFIG == manifest["configs"]["image_encoder"]
    vae_config = {k: v for k, v in encoders.SD_VAE_FT_MSE_CONFIG.items() if k != "scaling_factor"}
    assert vae_config == manifest["configs"]["vae"]
    with torch.device("meta"):
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**encoders.VIT_L14_CONFIG))
        vae = AutoencoderKL.from_config(encoders.SD_VAE_FT_MSE_CONFIG)
    for model, name in [(clip, "sd-image-variations-diffusers/image_encoder"), (vae, "sd-vae-ft-mse")]:
        shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
        assert shapes == files[name]["keys"], name
        assert sum(p.numel() for p in model.parameters()) == files[name]["num_parameters"]  # 303,966,208 / 83,653,863


# ---- VAE ------------------------------------------------------------------------------------------------------


def test_vae_encode_matches_the_golden(vae, module_golden):
    golden = module_golden("vae")
    with torch.no_grad():
        dist = vae.encode(golden["encode_in"]).latent_dist
    # Measured: mean 5.5e-6, logvar 6.7e-6, std 3.1e-6 (diffusers 0.42.1 vs the official's vendored 0.24.0).
    assert max_abs(dist.mean, golden["encode_mean"]) <= 1e-4
    assert max_abs(dist.logvar, golden["encode_logvar"]) <= 1e-4
    assert max_abs(dist.std, golden["encode_std"]) <= 1e-4
    assert max_abs(pipeline.vae_encoder(vae)(golden["encode_in"]), golden["encode_mean"]) <= 1e-4


def test_vae_decode_matches_the_golden(vae, module_golden):
    golden = module_golden("vae")
    with torch.no_grad():
        assert max_abs(vae.decode(golden["decode_in"]).sample, golden["decode_out"]) <= 1e-4  # measured 6.6e-6
    frames = pipeline.vae_decoder(vae)(golden["decode_in"])
    assert max_abs(frames, (golden["decode_out"] / 2 + 0.5).clamp(0, 1)) <= 1e-4  # measured 6.0e-6


def test_reference_latent_of_run1_from_the_astronaut(vae, astronaut_rgb, run1_golden):
    canvas = reference.fit_and_pad(astronaut_rgb, 512, 512)
    golden = run1_golden["shared.ref_image_latents_mean_unscaled"]
    exact = pipeline.vae_encoder(vae)(reference.vae_input(canvas, 128, 128, official_round_trip=True))
    assert max_abs(exact, golden) <= 1e-4  # measured 6.0e-6
    fixed = pipeline.vae_encoder(vae)(reference.vae_input(canvas, 128, 128))
    assert max_abs(fixed, golden) > 1e-3  # measured 0.014: the round trip matters at this tolerance


def test_vae_single_files_in_every_layout(vae, tiny_models_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tiny_models_dir / "sd-vae-ft-mse"
    sd = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    legacy = {re.sub(r"attentions\.0\.to_(q|k|v)\.", lambda m: "attentions.0." + {"q": "query.", "k": "key.",
                                                                                 "v": "value."}[m[1]], k)
              .replace("attentions.0.to_out.0.", "attentions.0.proj_attn."): v for k, v in sd.items()}
    ldm = diffusers_vae_to_ldm(sd)
    assert "encoder.down.0.block.0.conv1.weight" in ldm and "decoder.up.3.block.0.conv1.weight" in ldm
    files = {
        "diffusers.safetensors": sd,
        "legacy.safetensors": legacy,
        "ldm.safetensors": ldm,
        "sd-checkpoint.safetensors": {**{f"first_stage_model.{k}": v for k, v in ldm.items()},
                                      "model.diffusion_model.conv_in.weight": torch.zeros(4, 4, 3, 3)},
        "unpruned.safetensors": {**ldm, "loss.logvar": torch.zeros(())},  # training leftovers are not weights
    }
    for name, tensors in files.items():
        save_file(tensors, str(tmp_path / name))
    torch.save({"state_dict": ldm}, tmp_path / "ldm.ckpt")
    expected = vae.state_dict()
    for name in [*files, "ldm.ckpt"]:
        loaded = encoders.load_vae(tmp_path / name, config=folder / "config.json").state_dict()
        assert loaded.keys() == expected.keys(), name
        assert all(torch.equal(loaded[k], expected[k]) for k in expected), name
    half = encoders.load_vae(tmp_path / "ldm.safetensors", dtype=torch.float16, config=folder / "config.json")
    assert all(p.dtype == torch.float16 for p in half.parameters())
    with pytest.raises(ModelFileError, match=r"does not match the VAE config .*: \d+ missing"):
        encoders.load_vae(tmp_path / "diffusers.safetensors",
                          config={**encoders.SD_VAE_FT_MSE_CONFIG, "block_out_channels": [16, 16, 32, 32],
                                  "norm_num_groups": 8})  # layers_per_block 2 ≠ the file's 1
    save_file({"foo": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not an SD VAE"):
        encoders.load_vae(tmp_path / "other.safetensors")


def test_vae_loader_dtype_and_folder(tiny_models_dir):
    model = encoders.load_vae(tiny_models_dir / "sd-vae-ft-mse", dtype=torch.float16)
    assert next(model.parameters()).dtype == torch.float16 and not model.training
    assert model.config.scaling_factor == 0.18215
