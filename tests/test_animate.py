"""``sampling.animate`` mechanics with tiny random networks built here (no ../shared): long videos in every window
mode, window-sized memory, guidance, bad inputs, NaN, cancel, decoding. Parity with the official numbers is
``test_sampling_parity.py``'s job."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from emoji_model.checkpoints import FollowYourEmojiNetworks
from emoji_model.errors import EmojiError, SamplingError
from emoji_model.landmarks.draw import Drawings, draw_motion
from emoji_model.landmarks.types import Motion
from emoji_model.networks import (
    GuiderConfig,
    MotionModuleConfig,
    UNet3DConfig,
    UNetConfig,
    build_guider,
    build_referencenet,
    build_unet3d,
)
from emoji_model.reference import fit_and_pad, vae_input
from emoji_model.sampling.animate import (
    SCALING_FACTOR,
    Reference,
    SamplingOptions,
    check_options,
    decode,
    encode_reference,
    initial_noise,
    sample,
    window_plan,
)
from emoji_model.sampling.context import windows_overlap
from emoji_model.sampling.progressive import plan_progressive

# Every official key and block, at a size that runs in milliseconds: 64×64 px → 8×8 latents, CLIP hidden size 16.
_UNET = UNetConfig(block_out_channels=(32, 32, 32, 64), num_attention_heads=4, norm_num_groups=16,
                   cross_attention_dim=32, clip_dim=16)
_MOTION = MotionModuleConfig(num_attention_heads=4)
_GUIDER = GuiderConfig(block_out_channels=(8, 16, 24, 32), conditioning_embedding_channels=32)
SIZE = 64
FAST = {"steps": 2, "window_length": 16, "overlap": 4}



pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Recording(nn.Module):
    """A network wrapped to record each call's frame count (dim 2) and batch size."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, []

    def forward(self, x, *args, **kwargs):
        self.calls.append((x.shape[0], x.shape[2]))
        return self.inner(x, *args, **kwargs)


def tiny_networks(dtype: torch.dtype = torch.float32, seed: int = 0) -> FollowYourEmojiNetworks:
    torch.manual_seed(seed)
    referencenet, unet, guider = build_referencenet(_UNET), build_unet3d(UNet3DConfig(_UNET, _MOTION)), \
        build_guider(_GUIDER)
    nn.init.normal_(guider.conv_out.weight, std=0.05)  # zero-initialised: let the landmarks matter
    networks = FollowYourEmojiNetworks(referencenet, Recording(unet), Recording(guider), files=None)
    return networks.to(dtype).requires_grad_(False).eval()


@pytest.fixture(scope="module")
def networks() -> FollowYourEmojiNetworks:
    return tiny_networks()


@pytest.fixture
def calls(networks):
    """The UNet's and the guider's calls during one test: (batch, frames) each."""
    networks.unet.calls.clear()
    networks.guider.calls.clear()
    yield networks.unet.calls, networks.guider.calls


def fake_vae_encode(x: torch.Tensor) -> torch.Tensor:
    assert x.shape == (1, 3, SIZE, SIZE) and x.min() >= -1 and x.max() <= 1
    return torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4] * 5  # (1, 4, 8, 8), "raw" mean


def fake_clip_encode(pixels: torch.Tensor) -> torch.Tensor:
    assert pixels.shape == (1, 3, 32, 32)
    return pixels.flatten(2)[:, :, :80].reshape(1, 15, 16)  # (1, 15 tokens, 16)


def portrait(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (48, 40, 3), dtype=np.uint8)  # any size: fitted and padded


@pytest.fixture(scope="module")
def reference(networks) -> Reference:
    return encode_reference(networks, portrait(), vae_encode=fake_vae_encode, clip_encode=fake_clip_encode,
                            width=SIZE, height=SIZE, clip_size=32)


def landmarks(num_frames: int, size: tuple[int, int] = (SIZE, SIZE), seed: int = 0) -> np.ndarray:
    """(F, H, W, 3) uint8: a moving bright square per frame (anything the guider can tell apart)."""
    out = np.zeros((num_frames, *size, 3), dtype=np.uint8)
    for f in range(num_frames):
        y, x = (f * 3 + seed) % (size[0] - 8), (f * 5) % (size[1] - 8)
        out[f, y:y + 8, x:x + 8] = (255, 60, 10)
    return out


class LazyFrames:
    """A (F, H, W, 3) landmark source that records how many frames each read asks for."""

    def __init__(self, frames: np.ndarray):
        self.frames, self.shape, self.reads = frames, frames.shape, []

    def __getitem__(self, index):
        self.reads.append(len(index))
        return self.frames[index]


# ---- long videos: every frame, any mode, window-sized memory ---------------------------------------------------


@pytest.mark.parametrize("mode", ["overlap", "progressive", "official"])
def test_every_frame_of_a_100_frame_video_is_generated(networks, reference, calls, mode):
    unet_calls, guider_calls = calls
    source = LazyFrames(landmarks(100))
    options = SamplingOptions(windows=mode, **FAST)
    noise = initial_noise(100, 8, 8, options.seed)
    out = sample(networks, reference, source, options)
    assert out.shape == (100, 4, 8, 8) and out.dtype == torch.float32 and torch.isfinite(out).all()
    # every frame denoised: 2 steps end clean, far from the initial noise
    change = (out - noise[0].transpose(0, 1)).flatten(1).abs().mean(1)
    assert (change > 0.1).all(), change.min()
    # memory: neither the guider, nor the UNet, nor the landmark reads ever see more than one window of frames
    assert max(frames for _, frames in guider_calls) <= 16 and max(frames for _, frames in unet_calls) <= 16
    assert max(source.reads) <= 16 and len(guider_calls) == len(unet_calls) == sum(window_plan(options, 100))


def test_progressive_generates_keyframes_first_then_the_frames_between(networks, reference, calls):
    options = SamplingOptions(windows="progressive", keyframe_stride=8, **FAST)
    seen = []
    sample(networks, reference, landmarks(40), options, callback=lambda info: seen.append(info) if "x" not in info
           else None)
    plan = plan_progressive(40, 8, 16, 4)
    stages = [(i["stage"], i["segment"]) for i in seen]
    keyframe_calls = sum(len(windows_overlap(len(plan.keyframes.frames), 16, 4, s)) for s in range(2))
    assert stages[:keyframe_calls] == [("keyframes", 0)] * keyframe_calls
    assert {s for stage, s in stages[keyframe_calls:]} == set(range(1, len(plan.inbetweens) + 1))
    assert all(i["segments"] == len(plan.inbetweens) + 1 for i in seen)


def test_drawings_are_read_one_window_at_a_time(networks, reference):
    """The lazy ``Drawings`` of a motion give the same result as the drawn array."""
    rng = np.random.default_rng(1)
    motion = Motion(points=rng.uniform(5, 59, (20, 478, 2)), width=SIZE, height=SIZE, source_frames=np.arange(20))
    lazy = Drawings(motion)
    assert lazy.shape == (20, SIZE, SIZE, 3) and np.array_equal(lazy[[3, 1]], draw_motion(motion.points[[3, 1]],
                                                                                             SIZE, SIZE))
    assert np.array_equal(lazy[4], draw_motion(motion.points[4:5], SIZE, SIZE)[0])
    options = SamplingOptions(**FAST)
    assert torch.equal(sample(networks, reference, lazy, options), sample(networks, reference, np.asarray(lazy),
                                                                          options))


# ---- guidance, steps, lengths --------------------------------------------------------------------------------


def test_cfg_batches_uncond_and_cond_and_cfg_1_is_one_conditional_pass():
    """At 64² the tiny UNet's lowest level is 1×1 and its GroupNorms normalise two values: for some random weights
    (seed 0) that turns batch-1 against batch-2 rounding into 4e-3 after one step (golden README B: the 8×8 case is
    ill-conditioned). Seed 1 is a well-conditioned draw, where the two passes agree to 1e-6 a step."""
    networks = tiny_networks(seed=1)
    reference = encode_reference(networks, portrait(), vae_encode=fake_vae_encode, clip_encode=fake_clip_encode,
                                 width=SIZE, height=SIZE, clip_size=32)
    unet_calls = networks.unet.calls
    frames = landmarks(8)
    guided = sample(networks, reference, frames, SamplingOptions(cfg=3.5, **FAST))
    assert {batch for batch, _ in unet_calls} == {2}
    unet_calls.clear()
    single = sample(networks, reference, frames, SamplingOptions(cfg=1.0, **FAST))
    assert {batch for batch, _ in unet_calls} == {1}
    barely = sample(networks, reference, frames, SamplingOptions(cfg=1.0 + 1e-7, **FAST))
    assert (single - barely).abs().max() <= 1e-4  # the guided formula at 1 is the cond row
    assert (single - guided).abs().max() > 1e-2


@pytest.mark.parametrize("cfg", [0.99, 0.0, -1.0, float("nan"), float("inf")])
def test_cfg_below_1_or_not_finite_is_refused(networks, reference, cfg):
    with pytest.raises(ValueError, match="cfg must be a finite number ≥ 1"):
        sample(networks, reference, landmarks(4), SamplingOptions(cfg=cfg, **FAST))


def test_one_step_works(networks, reference, calls):
    out = sample(networks, reference, landmarks(20), SamplingOptions(steps=1, window_length=8, overlap=2))
    assert out.shape == (20, 4, 8, 8) and torch.isfinite(out).all()
    assert len(calls[0]) == len(windows_overlap(20, 8, 2))  # one step: each window once


@pytest.mark.parametrize("mode", ["overlap", "progressive", "official"])
def test_fewer_frames_than_a_window(networks, reference, calls, mode):
    out = sample(networks, reference, landmarks(5), SamplingOptions(windows=mode, **FAST))
    assert out.shape == (5, 4, 8, 8) and torch.isfinite(out).all()
    assert max(frames for _, frames in calls[0]) <= 5


def test_a_single_frame(networks, reference):
    assert sample(networks, reference, landmarks(1), SamplingOptions(**FAST)).shape == (1, 4, 8, 8)


@pytest.mark.parametrize("mode", ["overlap", "progressive", "official"])
def test_windows_longer_than_32_frames_are_refused_with_the_reason(mode):
    with pytest.raises(ValueError, match="positional encoding"):
        check_options(SamplingOptions(windows=mode, window_length=33))


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (SamplingOptions(steps=0), "steps"),
        (SamplingOptions(windows="uniform"), "Unknown window mode"),
        (SamplingOptions(window_length=8, overlap=8), "overlap"),
        (SamplingOptions(fusion="gauss"), "Unknown fusion"),
        (SamplingOptions(windows="progressive", keyframe_stride=0), "keyframe_stride"),
    ],
)
def test_bad_options_are_named(options, match):
    with pytest.raises(ValueError, match=match):
        check_options(options)


def test_official_mode_ignores_the_overlap():
    check_options(SamplingOptions(windows="official", window_length=8, overlap=8))


def test_default_window_fits_the_motion_module():
    assert SamplingOptions().window_length <= 32


# ---- bad inputs --------------------------------------------------------------------------------------------------


def test_landmarks_of_another_size_than_the_reference(networks, reference):
    with pytest.raises(ValueError, match=r"drawings are 80×64 but the reference was encoded at 64×64"):
        sample(networks, reference, landmarks(4, size=(64, 80)), SamplingOptions(**FAST))
    with pytest.raises(ValueError, match=r"\(frames, height, width, 3\)"):
        sample(networks, reference, landmarks(4)[..., 0], SamplingOptions(**FAST))
    with pytest.raises(ValueError, match="no landmark frames"):
        sample(networks, reference, landmarks(0), SamplingOptions(**FAST))


def test_noise_of_the_wrong_shape(networks, reference):
    with pytest.raises(ValueError, match=r"noise must be \(1, 4, 4, 8, 8\)"):
        sample(networks, reference, landmarks(4), SamplingOptions(**FAST), noise=torch.zeros(1, 4, 5, 8, 8))


def test_a_network_returning_nan_is_a_clear_error(reference):
    broken = tiny_networks()
    broken.unet.inner.conv_out.bias.fill_(float("nan"))
    with pytest.raises(SamplingError, match="NaN or infinity") as error:
        sample(broken, reference, landmarks(20), SamplingOptions(**FAST))
    assert isinstance(error.value, EmojiError) and "timestep 999" in str(error.value)


def test_nan_in_the_initial_noise_is_a_clear_error(networks, reference):
    noise = torch.zeros(1, 4, 4, 8, 8)
    noise[0, 0, 2, 3, 3] = float("nan")
    with pytest.raises(SamplingError, match="initial noise contains NaN"):
        sample(networks, reference, landmarks(4), SamplingOptions(**FAST), noise=noise)


# ---- progress and cancel --------------------------------------------------------------------------------------


def test_callback_reports_every_window_with_totals(networks, reference):
    options = SamplingOptions(**FAST)
    seen = []
    sample(networks, reference, landmarks(40), options, callback=seen.append)
    before = [i for i in seen if "x" not in i]
    total = sum(window_plan(options, 40))
    assert [i["done"] for i in before] == list(range(total)) and {i["total"] for i in seen} == {total}
    assert all({"step", "steps", "window", "windows"} <= set(i) for i in seen)
    ends = [i for i in seen if "x" in i]
    assert len(ends) == 2 and ends[-1]["done"] == total and ends[0]["x"].shape == (1, 4, 40, 8, 8)


def test_a_raising_callback_cancels_within_one_window(networks, reference, calls):
    unet_calls, _ = calls

    def cancel(info):
        if info.get("window") == 2:
            raise InterruptedError("cancelled")

    with pytest.raises(InterruptedError, match="cancelled"):
        sample(networks, reference, landmarks(60), SamplingOptions(**FAST), callback=cancel)
    assert len(unet_calls) == 2  # windows 0 and 1 of step 0 ran, nothing after the callback raised


# ---- dtypes ------------------------------------------------------------------------------------------------------


def test_latents_stay_float32_with_bf16_networks(reference):
    networks = tiny_networks(torch.bfloat16)
    steps = []
    out = sample(networks, reference, landmarks(10), SamplingOptions(**FAST),
                 callback=lambda info: steps.append(info["x"].dtype) if "x" in info else None)
    assert out.dtype == torch.float32 and set(steps) == {torch.float32} and torch.isfinite(out).all()


# ---- the portrait --------------------------------------------------------------------------------------------


def test_encode_reference_scales_the_raw_mean_and_runs_the_referencenet_once_at_batch_1(networks):
    calls = []
    referencenet = networks.referencenet
    hook = referencenet.register_forward_hook(lambda module, args, out: calls.append((args[0].shape, int(args[1]))))
    try:
        ref = encode_reference(networks, portrait(), vae_encode=fake_vae_encode, clip_encode=fake_clip_encode,
                               width=SIZE, height=SIZE, clip_size=32)
    finally:
        hook.remove()
    assert calls == [((1, 4, 8, 8), 0)]
    assert (ref.width, ref.height) == (SIZE, SIZE) and ref.latent.dtype == ref.clip_states.dtype == torch.float32
    pixels = vae_input(fit_and_pad(portrait(), SIZE, SIZE), SIZE, SIZE)  # the fitted portrait's VAE input
    assert torch.equal(ref.latent, fake_vae_encode(pixels) * SCALING_FACTOR)
    assert len(ref.features) == 16 and all(f.shape[0] == 1 for f in ref.features)


def test_encode_reference_refuses_bad_sizes_and_encoders(networks):
    with pytest.raises(ValueError, match="multiples of 8"):
        encode_reference(networks, portrait(), vae_encode=fake_vae_encode, clip_encode=fake_clip_encode,
                         width=60, height=64, clip_size=32)
    with pytest.raises(ValueError, match=r"vae_encode returned \(1, 4, 4, 4\)"):
        encode_reference(networks, portrait(), vae_encode=lambda x: torch.zeros(1, 4, 4, 4),
                         clip_encode=fake_clip_encode, width=SIZE, height=SIZE, clip_size=32)


# ---- decoding ----------------------------------------------------------------------------------------------------


def test_decode_yields_uint8_chunks_from_unscaled_latents():
    latents = torch.randn(10, 4, 8, 8)
    seen = []

    def vae_decode(z):
        seen.append(z.clone())
        return torch.sigmoid(z.mean(1, keepdim=True)).repeat(1, 3, 8, 8)  # (n, 3, 64, 64) in [0, 1]

    chunks = list(decode(vae_decode, latents, chunk=4))
    assert [len(c) for c in chunks] == [4, 4, 2] and all(c.dtype == np.uint8 and c.shape[1:] == (64, 64, 3)
                                                         for c in chunks)
    assert torch.allclose(torch.cat(seen), latents / SCALING_FACTOR)
    expected = (torch.sigmoid((latents / SCALING_FACTOR).mean(1)) * 255).round().to(torch.uint8).numpy()
    assert np.array_equal(np.concatenate(chunks)[:, :8, :8, 0], expected)  # the map is tiled 8×8 times


def test_decode_takes_channel_last_frames_clamps_and_cancels():
    latents = torch.zeros(6, 4, 2, 2)
    frames = list(decode(lambda z: torch.full((len(z), 16, 16, 3), 1.7), latents, chunk=6))  # ComfyUI layout
    assert frames[0].shape == (6, 16, 16, 3) and (frames[0] == 255).all()

    def cancel(info):
        if info["done"] >= 2:
            raise InterruptedError

    decoded = []
    with pytest.raises(InterruptedError):
        for chunk in decode(lambda z: torch.zeros(len(z), 3, 16, 16), latents, chunk=2, callback=cancel):
            decoded.append(chunk)
    assert len(decoded) == 1


def test_decode_refuses_nan_frames():
    with pytest.raises(SamplingError, match="VAE's output"):
        list(decode(lambda z: torch.full((len(z), 3, 8, 8), float("nan")), torch.zeros(2, 4, 1, 1)))
