"""``sampling.animate`` with ``windows="official"`` against the official pipeline runs (``pipeline_goldens`` run1–3):
the tiny official networks from the golden folder, fp32, CPU, 4 steps, guidance 3.5, seed 12580.

Measured max abs errors of the latents after steps 0–3 (2 CPU threads; they move by ~1e-6 with the thread count):
- run1 (8 frames, one window), from the stored CLIP states and reference features: 8.3e-7, 2.1e-6, 2.7e-6, 4.7e-6;
  frames 6.3e-6;
- run2 (31 frames, 24-frame windows, the second wrapping to frames 0–16): 9.5e-7, 1.9e-6, 3.0e-6, 4.6e-6;
- run3 (20 frames, 8-frame windows, the last wrapping to frames 0–3): 1.2e-6, 1.9e-6, 2.9e-6, 4.5e-6;
- frames decoded from our last latents vs from the official's: run2 4.2e-6, run3 5.7e-6;
- run1 end to end from the astronaut (encode_reference with the tiny CLIP and VAE, the official round trip): latent
  6.0e-6, CLIP states 0, ReferenceNet features 8.0e-5; steps 1.1e-6, 1.8e-6, 3.4e-6, 4.4e-6; frames 7.3e-6 (float),
  uint8 frames at most 1 level off the rounded official frames (rounding ties).
Bounds, from the goldens' fp32-vs-fp64 errors (conftest's ``golden_atol``: 4 × the official's own fp32 rounding):
- step k (0-based): (k + 1) × golden_atol of the CFG UNet3D call (unet_cfg: 4.1e-6) — each step adds one guided UNet
  call's rounding, and the measured errors grow by about that much a step (1.1e-6);
- frames: golden_atol of the VAE decode (4.5e-5); frames are decode / 2 + 0.5, which halves its error again;
- encode_reference from the astronaut: latent golden_atol(vae encode_mean) 2.0e-5, CLIP states golden_atol(clip)
  8.2e-6; ReferenceNet features 16 × the latent bound + golden_atol(referencenet) (its features moved 13× the
  latent's error here: 8.0e-5 from 6.0e-6).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from emoji_model import encoders, pipeline
from emoji_model.checkpoints import load_follow_your_emoji
from emoji_model.sampling.animate import (
    SCALING_FACTOR,
    Reference,
    SamplingOptions,
    decode,
    encode_reference,
    initial_noise,
    sample,
)

FEATURES = [f"down.{i}" for i in range(6)] + ["mid.0"] + [f"up.{i}" for i in range(9)]
RUNS = {"run1_official_call": 24, "run2_long_ctx24": 24, "run3_long_ctx8": 8}  # run → the official window length



pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def networks(tiny_models_dir, tiny_network_configs):
    return load_follow_your_emoji(tiny_models_dir, configs=tiny_network_configs)


@pytest.fixture(scope="module")
def vae(tiny_models_dir):
    return encoders.load_vae(tiny_models_dir / "sd-vae-ft-mse")


@pytest.fixture(scope="module")
def clip(tiny_models_dir):
    return encoders.load_clip_image_encoder(tiny_models_dir / "sd-image-variations-diffusers" / "image_encoder")


@pytest.fixture(scope="module")
def stored_reference(run1_golden) -> Reference:
    """The portrait as the official pipeline saw it: its VAE mean, CLIP states and ReferenceNet features (cond row)."""
    return Reference(
        latent=run1_golden["shared.ref_image_latents_mean_unscaled"] * SCALING_FACTOR,
        clip_states=run1_golden["shared.encoder_hidden_states_cond"],
        features=tuple(run1_golden[f"shared.reference.{name}"][1:] for name in FEATURES),
        width=128,
        height=128,
    )


@pytest.fixture(scope="module")
def aligned_landmarks(golden_landmarks_dir, run1_golden) -> np.ndarray:
    """The 31 official aligned drawings, (31, 128, 128, 3) uint8, resized as the pipeline does (PIL Lanczos)."""
    frames = [np.asarray(Image.open(golden_landmarks_dir / f"aligned_lmk_{i:03d}.png").convert("RGB")
                         .resize((128, 128), Image.LANCZOS)) for i in range(31)]
    frames = np.stack(frames)
    run1 = run1_golden["shared.lmk_cond_tensor_uint8"][0].permute(1, 2, 3, 0).numpy()  # (8, 128, 128, 3)
    assert np.array_equal(frames[:8], run1), "run1's stored landmark tensor is the first 8 resized drawings"
    return frames


@pytest.fixture(scope="module")
def official_run(golden_pipeline_run, networks, stored_reference, aligned_landmarks):
    """Run → (stored tensors, our latents after every step, our final latents), each run sampled once."""
    done = {}

    def run(name: str):
        if name not in done:
            _, tensors = golden_pipeline_run(name)
            num_frames = tensors["init_latents"].shape[2]
            steps, out = run_and_record(networks, stored_reference, aligned_landmarks[:num_frames],
                                        official(RUNS[name]))
            done[name] = tensors, steps, out
        return done[name]

    return run


def run_and_record(networks, reference, landmarks, options, noise=None):
    """Latents after every step (1, 4, F, h, w) and the final ones (F, 4, h, w)."""
    steps = []
    out = sample(networks, reference, landmarks, options, noise=noise,
                 callback=lambda info: steps.append(info["x"].clone()) if "x" in info else None)
    return steps, out


def step_errors(steps, tensors) -> list[float]:
    return [(x - tensors[f"step{s}.prev_sample"]).abs().max().item() for s, x in enumerate(steps)]


@pytest.fixture(scope="module")
def step_atol(golden_atol):
    """The bound on the latents after step k: k + 1 guided UNet calls' rounding."""
    return lambda k: (k + 1) * golden_atol("unet_cfg", "out_sample")


@pytest.fixture(scope="module")
def frame_atol(golden_atol):
    return golden_atol("vae", "decode_out")


def within_step_bounds(errors, step_atol) -> bool:
    return len(errors) == 4 and all(error <= step_atol(k) for k, error in enumerate(errors))


def official(window_length: int) -> SamplingOptions:
    return SamplingOptions(steps=4, cfg=3.5, seed=12580, windows="official", window_length=window_length)


@pytest.mark.parametrize("run", sorted(RUNS))
def test_the_seed_draws_the_official_initial_noise(run, golden_pipeline_run):
    _, tensors = golden_pipeline_run(run)
    f, h, w = tensors["init_latents"].shape[2:]
    assert torch.equal(initial_noise(f, h, w, 12580), tensors["init_latents"])


@pytest.mark.parametrize("run", sorted(RUNS))
def test_official_windows_reproduce_every_step(run, golden_pipeline_run, official_run, step_atol):
    info, _ = golden_pipeline_run(run)
    assert info["num_inference_steps"] == 4 and info["guidance_scale"] == 3.5
    tensors, steps, out = official_run(run)
    errors = step_errors(steps, tensors)
    assert within_step_bounds(errors, step_atol), errors
    assert torch.equal(out, steps[-1][0].transpose(0, 1))  # (F, 4, h, w), the last step's latents
    if "final_latents_div_scaling" in tensors:
        assert (out / SCALING_FACTOR - tensors["final_latents_div_scaling"]).abs().max() <= step_atol(3) / SCALING_FACTOR


def test_given_noise_is_used_as_is(official_run, networks, stored_reference, aligned_landmarks):
    """The stored init latents, as (1, 4, F, h, w) or (F, 4, h, w), give the run exactly as the seed does."""
    tensors, _, seeded = official_run("run1_official_call")
    init = tensors["init_latents"]
    for noise in (init, init[0].transpose(0, 1)):
        given = sample(networks, stored_reference, aligned_landmarks[:8], official(24), noise=noise)
        assert torch.equal(given, seeded)


def test_run1_frames(official_run, vae, frame_atol):
    tensors, _, out = official_run("run1_official_call")
    expected = tensors["videos"][0].permute(1, 0, 2, 3)  # (F, 3, H, W) in [0, 1]
    frames = pipeline.vae_decoder(vae)(out / SCALING_FACTOR)
    assert (frames - expected).abs().max() <= frame_atol
    uint8 = np.concatenate(list(decode(pipeline.vae_decoder(vae), out, chunk=3)))  # (F, H, W, 3)
    official_uint8 = (expected.permute(0, 2, 3, 1) * 255).round().numpy()
    assert uint8.shape == (8, 128, 128, 3) and np.abs(uint8 - official_uint8).max() <= 1


@pytest.mark.parametrize("run", ["run2_long_ctx24", "run3_long_ctx8"])
def test_long_runs_decode_like_the_official_latents(run, official_run, vae, frame_atol):
    """Their videos are not stored: our last latents and the official's decode to the same frames."""
    tensors, _, out = official_run(run)
    vae_decode = pipeline.vae_decoder(vae)
    ours = vae_decode(out / SCALING_FACTOR)
    theirs = vae_decode(tensors["step3.prev_sample"][0].transpose(0, 1) / SCALING_FACTOR)
    assert ours.shape == (out.shape[0], 3, 128, 128) and (ours - theirs).abs().max() <= frame_atol


def test_end_to_end_from_the_astronaut(run1_golden, networks, astronaut_rgb, vae, clip, golden_atol, step_atol,
                                       frame_atol):
    """Portrait → encode_reference (tiny CLIP and VAE, official round trip, the official's 512² fit then 128² VAE
    input) → sample → frames, against run1 — the real ``infer.py`` path."""
    reference = encode_reference(
        networks, astronaut_rgb, vae_encode=pipeline.vae_encoder(vae), clip_encode=pipeline.clip_encoder(clip),
        width=128, height=128, official_round_trip=True, clip_size=pipeline.clip_image_size(clip), fit_size=(512, 512))
    latent_atol = golden_atol("vae", "encode_mean")
    assert (reference.latent / SCALING_FACTOR - run1_golden["shared.ref_image_latents_mean_unscaled"]).abs().max() \
        <= latent_atol
    clip_error = (reference.clip_states - run1_golden["shared.encoder_hidden_states_cond"]).abs().max()
    assert clip_error <= golden_atol("clip", "last_hidden_state")
    feature_atol = 16 * latent_atol + golden_atol("referencenet")
    for name, feature in zip(FEATURES, reference.features):  # magnitude ≈ 3.5
        assert (feature - run1_golden[f"shared.reference.{name}"][1:]).abs().max() <= feature_atol, name
    landmarks = run1_golden["shared.lmk_cond_tensor_uint8"][0].permute(1, 2, 3, 0)  # (8, 128, 128, 3) uint8 tensor
    steps, out = run_and_record(networks, reference, landmarks, official(24))
    errors = step_errors(steps, run1_golden)
    assert within_step_bounds(errors, step_atol), errors
    frames = pipeline.vae_decoder(vae)(out / SCALING_FACTOR)
    assert (frames - run1_golden["videos"][0].permute(1, 0, 2, 3)).abs().max() <= frame_atol


def test_without_the_round_trip_the_portrait_differs_measurably(run1_golden, networks, astronaut_rgb, vae, clip):
    """The round trip is a defect kept only for parity: off (the default), the latent moves by ~1e-2."""
    reference = encode_reference(
        networks, astronaut_rgb, vae_encode=pipeline.vae_encoder(vae), clip_encode=pipeline.clip_encoder(clip),
        width=128, height=128, clip_size=pipeline.clip_image_size(clip), fit_size=(512, 512))
    assert (reference.latent / SCALING_FACTOR - run1_golden["shared.ref_image_latents_mean_unscaled"]).abs().max() \
        > 1e-3
