"""Context windows, fusion, the progressive plan and the window samplers, without weights (closed-form denoisers)."""

from __future__ import annotations

import json
import random
from functools import partial

import pytest
import torch

from emoji_model.sampling.context import (
    MAX_WINDOW,
    WEIGHTS,
    WINDOW_SCHEDULES,
    WindowFusion,
    get_weights,
    get_window_schedule,
    uniform_official,
    weights_flat,
    weights_linear,
    weights_pyramid,
    windows_official,
    windows_overlap,
)
from emoji_model.sampling.progressive import FixedFrames, hold_fixed, plan_progressive
from emoji_model.sampling.sampler import sample_progressive, sample_windows
from emoji_model.sampling.schedule import get_timesteps, make_scheduler, prev_timestep, renoise

SCHEDULER = make_scheduler()
ALPHAS = SCHEDULER.alphas_cumprod


def oracle(target: torch.Tensor, calls: list | None = None):
    """A denoiser whose v-prediction means "the clean latents are ``target``" at every frame (closed form)."""

    def denoise(x, t, frames):
        if calls is not None:
            calls.append((t, list(frames), x.shape[2]))
        alpha = ALPHAS[t]
        return (alpha.sqrt() * x - target[:, :, frames]) / (1 - alpha).sqrt()

    return denoise


def starts(windows):
    return [window[0] for window in windows]


# ---- official windows ---------------------------------------------------------------------------------------------


def test_official_windows_match_every_pipeline_row(golden_scheduler_dir):
    rows = json.loads((golden_scheduler_dir / "context_windows.json").read_text())["rows"]
    pipeline = [row for row in rows if row["call"] == "pipeline"]
    assert len(pipeline) == 27
    for row in pipeline:
        step, _, num_frames, length, stride, overlap = row["args"]
        assert (step, stride, overlap) == (0, 1, 0)  # what the pipeline hard-codes
        for step_index in (0, 1, 3):  # fixed across steps
            assert windows_official(num_frames, length, 4, step_index) == row["windows"], row["args"]


def test_uniform_official_matches_every_row(golden_scheduler_dir):
    """The official ``uniform`` in all its arguments (dilated levels, bit-reversed phase, open loop)."""
    rows = json.loads((golden_scheduler_dir / "context_windows.json").read_text())["rows"]
    assert len(rows) == 43
    for row in rows:
        step, _, num_frames, length, stride, overlap, *closed = row["args"]
        assert uniform_official(step, num_frames, length, stride, overlap, *closed) == row["windows"], row["args"]


@pytest.mark.parametrize("run", ["run1_official_call", "run2_long_ctx24", "run3_long_ctx8"])
def test_official_windows_match_the_pipeline_runs(run, golden_pipeline_run):
    info, _ = golden_pipeline_run(run)
    (call,) = info["context_scheduler_calls"]
    _, steps, num_frames, length, _, _ = next(iter(call.values()))
    assert len(info["context_schedule_per_step"]) == steps
    for step_index, windows in enumerate(info["context_schedule_per_step"]):
        assert windows_official(num_frames, length, step_index=step_index) == windows


@pytest.mark.parametrize("run", ["run1_official_call", "run2_long_ctx24", "run3_long_ctx8"])
def test_official_step0_through_the_sampler(run, golden_pipeline_run):
    """Replaying the official step-0 UNet outputs per window (CFG 3.5, flat fusion, DDIM) gives its step-0 latents."""
    info, tensors = golden_pipeline_run(run)
    (call,) = info["context_scheduler_calls"]
    _, steps, num_frames, length, _, _ = next(iter(call.values()))
    init = tensors["init_latents"]
    outputs = iter(tensors[f"unet_call{k}.out"] for k in range(len(info["context_schedule_per_step"][0])))

    def denoise(x, t, frames):
        assert t == 999 and torch.equal(x, init[:, :, frames])  # the window's latents, wrapped modulo F
        uncond, cond = next(outputs).chunk(2)
        return uncond + info["guidance_scale"] * (cond - uncond)

    after_step0 = []

    def callback(progress):
        if "x" in progress:
            after_step0.append(progress["x"])
            raise InterruptedError  # only step 0's UNet outputs are stored: stop there

    with pytest.raises(InterruptedError):
        sample_windows(denoise, init, get_timesteps(steps), partial(windows_official, length=length), weights_flat,
                       callback=callback)
    assert (after_step0[0] - tensors["step0.prev_sample"]).abs().max() <= 1e-5


def test_official_windows_refuse_more_than_32_frames():
    with pytest.raises(ValueError, match="positional encoding"):
        windows_official(100, 33)


# ---- overlap windows: properties over many configurations --------------------------------------------------------


def _configurations(count: int, seed: int = 0):
    """Random (num_frames 1..300, length 1..32, overlap 0..length−1, step 0..29, loop) plus the small corners."""
    rng = random.Random(seed)
    corners = [(f, length, overlap, step, loop) for f in range(1, 12) for length in range(1, 8)
               for overlap in range(length) for step in range(4) for loop in (False, True)]
    drawn = []
    for _ in range(count):
        length = rng.randint(1, MAX_WINDOW)
        drawn.append((rng.randint(1, 300), length, rng.randint(0, length - 1), rng.randint(0, 29), rng.random() < 0.5))
    return corners + drawn


def _check_windows(windows, num_frames, length, overlap, loop):
    assert windows, "no window"
    covered = set()
    for window in windows:
        assert len(window) == min(length, num_frames) <= length
        assert len(set(window)) == len(window), "duplicate frame inside a window"
        assert all(0 <= f < num_frames for f in window)
        if loop:  # consecutive modulo F
            assert all((b - a) % num_frames == 1 for a, b in zip(window, window[1:]))
        else:  # consecutive, no wrap-around
            assert window == list(range(window[0], window[0] + len(window)))
        covered.update(window)
    assert covered == set(range(num_frames)), "uncovered frames"
    if len(windows) > 1:  # neighbouring windows share at least `overlap` frames (around the circle when looping)
        first = sorted(starts(windows))
        gaps = [b - a for a, b in zip(first, first[1:])] + ([first[0] + num_frames - first[-1]] if loop else [])
        assert max(gaps) <= length - overlap


def test_overlap_windows_properties():
    for num_frames, length, overlap, step, loop in _configurations(6000):
        for s in (step, step + 1):
            _check_windows(windows_overlap(num_frames, length, overlap, s, loop), num_frames, length, overlap, loop)


def test_overlap_windows_move_between_steps():
    """Consecutive steps differ whenever another arrangement exists; when none does, the windows are that one."""
    for num_frames, length, overlap, step, loop in _configurations(6000, seed=1):
        now = windows_overlap(num_frames, length, overlap, step, loop)
        after = windows_overlap(num_frames, length, overlap, step + 1, loop)
        stride = length - overlap
        if num_frames <= length:
            assert now == after == [list(range(num_frames))]
        elif stride == 1 and not loop:  # every start is used: nothing can move
            assert starts(now) == starts(after) == list(range(num_frames - length + 1))
        elif stride == 1:
            assert sorted(starts(now)) == sorted(starts(after)) == list(range(num_frames))
        elif num_frames - length == 1 and not loop:  # only frames 0..L−1 and 1..L fit
            assert starts(now) == starts(after) == [0, 1]
        else:
            assert len(now) > 1 and now != after, (num_frames, length, overlap, step, loop)


def test_overlap_window_offsets_visit_every_phase():
    """Over ``stride`` consecutive steps, seams sit at ``stride`` different places (all offsets of the grid)."""
    for num_frames, length, overlap in [(100, 16, 4), (64, 24, 8), (300, 32, 0), (50, 8, 3)]:
        stride = length - overlap
        for loop in (False, True):
            arrangements = {tuple(map(tuple, windows_overlap(num_frames, length, overlap, s, loop)))
                            for s in range(stride)}
            assert len(arrangements) == stride


def test_overlap_windows_step_zero_is_the_plain_grid():
    assert windows_overlap(40, 16, 4, 0) == [list(range(0, 16)), list(range(12, 28)), list(range(24, 40))]
    assert windows_overlap(10, 16, 4, 5) == [list(range(10))]
    assert windows_overlap(40, 16, 4, 0, loop=True)[-1] == list(range(36, 40)) + list(range(12))


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((100, 33, 4), "positional encoding"),
        ((100, 64, 0), "positional encoding"),
        ((100, 0, 0), "length"),
        ((100, 16, 16), "overlap"),
        ((100, 16, -1), "overlap"),
        ((0, 16, 4), "frame"),
    ],
)
def test_overlap_windows_refuse_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        windows_overlap(*args)


def test_named_lookups():
    assert get_window_schedule("official") is windows_official
    assert get_window_schedule("overlap") is windows_overlap
    assert get_weights("pyramid") is weights_pyramid
    with pytest.raises(ValueError, match=r"Unknown window schedule 'uniform'; choose one of official, overlap"):
        get_window_schedule("uniform")
    with pytest.raises(ValueError, match=r"Unknown fusion weights 'gauss'; choose one of pyramid, flat, linear"):
        get_weights("gauss")


# ---- fusion weights and fusion ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(WEIGHTS))
def test_weights_are_positive_and_symmetric(name):
    for length in range(1, MAX_WINDOW + 1):
        for overlap in range(length):
            weights = get_weights(name)(length, overlap)
            assert weights.shape == (length,) and weights.dtype == torch.float32
            assert (weights > 0).all() and torch.equal(weights, weights.flip(0))


def test_weight_shapes():
    assert weights_pyramid(5).tolist() == [1, 2, 3, 2, 1] and weights_pyramid(4).tolist() == [1, 2, 2, 1]
    assert torch.equal(weights_linear(8, 0), weights_flat(8))
    assert weights_linear(8, 3).tolist() == [0.25, 0.5, 0.75, 1, 1, 0.75, 0.5, 0.25]


def test_fusion_reproduces_constants_and_frame_indices():
    """Normalised weights: fusing a constant gives it back; fusing each frame's index gives the frame index."""
    for num_frames, length, overlap, step, loop in _configurations(150, seed=2):
        for schedule in WINDOW_SCHEDULES.values():
            windows = schedule(num_frames, length, overlap, step, loop)
            like = torch.zeros(1, 2, num_frames, 1, 1)
            for name, weights_fn in WEIGHTS.items():
                constant, index = WindowFusion(like), WindowFusion(like)
                for window in windows:
                    weights = weights_fn(len(window), overlap)
                    constant.add(window, torch.full((1, 2, len(window), 1, 1), 3.25, dtype=torch.float16), weights)
                    frames = torch.tensor(window, dtype=torch.float32).view(1, 1, -1, 1, 1).expand(1, 2, -1, 1, 1)
                    index.add(window, frames, weights)
                constant, index = constant.result(), index.result()
                assert constant.dtype == torch.float32
                assert torch.allclose(constant, torch.full_like(constant, 3.25), atol=1e-6), name
                expected = torch.arange(num_frames, dtype=torch.float32).view(1, 1, -1, 1, 1).expand_as(index)
                assert torch.allclose(index, expected, atol=1e-4), name


def test_fusion_is_a_weighted_average():
    fusion = WindowFusion(torch.zeros(1, 1, 3))
    fusion.add([0, 1], torch.tensor([[[1.0, 1.0]]]), torch.tensor([1.0, 1.0]))
    fusion.add([1, 2], torch.tensor([[[4.0, 4.0]]]), torch.tensor([3.0, 1.0]))
    assert fusion.result().flatten().tolist() == [1.0, (1 + 12) / 4, 4.0]


def test_fusion_refuses_uncovered_frames():
    fusion = WindowFusion(torch.zeros(1, 1, 4, 2, 2))
    fusion.add([0, 1], torch.ones(1, 1, 2, 2, 2), weights_flat(2))
    with pytest.raises(ValueError, match=r"not covered by any window: \[2, 3\]"):
        fusion.result()


# ---- the generic sampler ------------------------------------------------------------------------------------------

SCHEDULES = {
    "official": partial(windows_official, length=8),
    "overlap": partial(windows_overlap, length=8, overlap=3),
    "overlap-loop": partial(windows_overlap, length=8, overlap=2, loop=True),
}


@pytest.mark.parametrize("steps", [1, 4, 30])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("weights", sorted(WEIGHTS))
def test_sampler_converges_to_the_known_x0(steps, schedule, weights):
    generator = torch.Generator().manual_seed(steps)
    target = torch.randn(1, 4, 21, 3, 3, generator=generator)
    noise = torch.randn(1, 4, 21, 3, 3, generator=generator)
    calls = []
    out = sample_windows(oracle(target, calls), noise, get_timesteps(steps), SCHEDULES[schedule],
                         partial(get_weights(weights), overlap=3))
    assert out.dtype == torch.float32
    assert (out - target).abs().max() <= 1e-5
    assert max(size for _, _, size in calls) <= 8  # the denoiser only ever sees windows
    assert [t for t, _, _ in calls][0] == 999 and len({t for t, _, _ in calls}) == steps


def test_sampler_matches_a_plain_ddim_loop_without_windows():
    """One window of all frames: the sampler is exactly the scheduler's loop."""
    generator = torch.Generator().manual_seed(3)
    noise = torch.randn(1, 4, 6, 2, 2, generator=generator)
    weight = torch.randn(4, 4, generator=generator) * 0.3

    def denoise(x, t, frames):  # a non-trivial linear "model"
        return torch.einsum("dc,bcfhw->bdfhw", weight, x) * (t / 1000)

    from emoji_model.sampling.schedule import make_scheduler

    scheduler = make_scheduler()
    scheduler.set_timesteps(5)
    expected = noise.clone()
    for t in scheduler.timesteps:
        expected = scheduler.step(denoise(expected, int(t), None), t, expected, eta=0.0).prev_sample
    windows_fn = partial(windows_overlap, length=16, overlap=4)
    out = sample_windows(denoise, noise, get_timesteps(5), windows_fn, weights_pyramid)
    assert (out - expected).abs().max() <= 1e-5


def test_sampler_keeps_float32_latents_with_a_half_denoiser():
    target = torch.randn(1, 4, 10, 2, 2)
    seen = []

    def denoise(x, t, frames):
        seen.append(x.dtype)
        return oracle(target)(x, t, frames).half()

    steps = []
    out = sample_windows(denoise, torch.randn(1, 4, 10, 2, 2).half(), get_timesteps(4),
                         partial(windows_overlap, length=4, overlap=1), weights_pyramid,
                         callback=lambda p: steps.append(p["x"].dtype) if "x" in p else None)
    assert out.dtype == torch.float32 and set(seen) == {torch.float32} and set(steps) == {torch.float32}
    assert (out - target).abs().max() <= 1e-2  # half-precision predictions


def test_sampler_does_not_modify_its_input():
    noise = torch.randn(1, 4, 10, 2, 2)
    before = noise.clone()
    windows_fn = partial(windows_overlap, length=4, overlap=1)
    sample_windows(oracle(torch.zeros_like(noise)), noise, get_timesteps(3), windows_fn, weights_flat)
    assert torch.equal(noise, before)


def test_callback_reports_every_window_and_step():
    progress = []
    windows_fn = partial(windows_overlap, length=6, overlap=2)
    sample_windows(oracle(torch.zeros(1, 1, 20, 1, 1)), torch.randn(1, 1, 20, 1, 1), get_timesteps(3), windows_fn,
                   weights_flat, callback=progress.append)
    expected = []
    for step in range(3):
        total = len(windows_fn(20, step_index=step))
        expected += [(step, 3, w, total) for w in range(total + 1)]
    assert [(p["step"], p["steps"], p["window"], p["windows"]) for p in progress] == expected
    ends = [p for p in progress if p["window"] == p["windows"]]
    assert all(p["x"].shape == p["denoised"].shape == (1, 1, 20, 1, 1) for p in ends)


def test_a_raising_callback_stops_at_once():
    calls = []

    def callback(progress):
        if (progress["step"], progress["window"]) == (1, 1):
            raise KeyboardInterrupt("cancelled")

    windows_fn = partial(windows_overlap, length=6, overlap=2)
    with pytest.raises(KeyboardInterrupt):
        sample_windows(oracle(torch.zeros(1, 1, 20, 1, 1), calls), torch.randn(1, 1, 20, 1, 1), get_timesteps(4),
                       windows_fn, weights_flat, callback=callback)
    assert len(calls) == len(windows_fn(20, step_index=0)) + 1  # step 0's windows, then step 1's first one


def test_sampler_refuses_no_timesteps():
    with pytest.raises(ValueError, match="at least one timestep"):
        zeros = torch.zeros(1, 1, 4, 1, 1)
        sample_windows(oracle(zeros), zeros, [], windows_official, weights_flat)


def test_windows_longer_than_the_motion_module_are_refused_by_the_sampler():
    with pytest.raises(ValueError, match="positional encoding"):
        sample_windows(oracle(torch.zeros(1, 1, 40, 1, 1)), torch.zeros(1, 1, 40, 1, 1), get_timesteps(2),
                       partial(windows_overlap, length=40, overlap=4), weights_flat)


# ---- progressive: the plan ----------------------------------------------------------------------------------------


def test_progressive_plan_properties():
    for num_frames in range(1, 90):
        for stride in (1, 2, 3, 7, 8, 16, 31, 40, 100):
            plan = plan_progressive(num_frames, stride, 16, 4)
            keys = list(plan.keyframes.frames)
            assert plan.keyframes.fixed == ()
            assert keys == sorted(set(range(0, num_frames, stride)) | {num_frames - 1})
            interiors = [f for segment in plan.inbetweens for f in segment.generated]
            assert sorted(keys + interiors) == list(range(num_frames)), "every frame generated exactly once"
            pairs = [(a, b) for a, b in zip(keys, keys[1:]) if b - a > 1]
            assert [(s.frames[0], s.frames[-1]) for s in plan.inbetweens] == pairs
            for segment in plan.inbetweens:
                a, b = segment.frames[0], segment.frames[-1]
                assert segment.frames == tuple(range(a, b + 1)) and segment.fixed == (a, b)
                assert segment.fixed_positions == (0, len(segment.frames) - 1)
                for step in range(3):
                    windows = segment.windows(16, 4, step)
                    assert max(map(len, windows)) <= 16
                    assert set().union(*map(set, windows)) == set(range(len(segment.frames)))


def test_progressive_plan_example():
    plan = plan_progressive(20, 8, 16)
    assert plan.keyframes.frames == (0, 8, 16, 19)
    assert [(s.frames[0], s.frames[-1], s.fixed) for s in plan.inbetweens] == [(0, 8, (0, 8)), (8, 16, (8, 16)),
                                                                                (16, 19, (16, 19))]
    assert plan_progressive(5, 1, 16).inbetweens == ()  # every frame a keyframe


@pytest.mark.parametrize(("args", "match"), [((10, 0, 16), "stride"), ((10, 4, 33), "positional encoding"),
                                             ((0, 4, 16), "frame"), ((10, 4, 8, 8), "overlap")])
def test_progressive_plan_refuses_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        plan_progressive(*args)


def test_hold_fixed_replaces_only_the_fixed_frames():
    x = torch.randn(1, 2, 6, 2, 2)
    clean, noise = torch.randn(1, 2, 2, 2, 2), torch.randn(1, 2, 2, 2, 2)
    fixed = FixedFrames((0, 5), clean, noise)
    for t in (999, 500, 3, -1):
        held = hold_fixed(x, fixed, t, SCHEDULER)
        assert torch.equal(held[:, :, 1:5], x[:, :, 1:5])
        assert torch.equal(held[:, :, [0, 5]], renoise(clean, noise, t, SCHEDULER))
    assert torch.equal(hold_fixed(x, fixed, 999, SCHEDULER)[:, :, [0, 5]], noise)
    assert torch.equal(hold_fixed(x, fixed, -1, SCHEDULER)[:, :, [0, 5]], clean)


# ---- progressive: the sampler -------------------------------------------------------------------------------------


@pytest.mark.parametrize("steps", [4, 7])
@pytest.mark.parametrize(("num_frames", "stride", "length", "overlap"), [(50, 8, 16, 4), (45, 20, 8, 3), (7, 3, 4, 1)])
def test_progressive_keeps_keyframes_and_generates_every_frame(num_frames, stride, length, overlap, steps):
    """Stage 2's denoiser pulls every frame elsewhere; the keyframes stay what stage 1 made, the rest follow it.
    7 steps end at t = 0, not clean, and step from t to t − 142 while the next step runs at the listed t (856, not
    857): the oracle's frames end near their target re-noised to t = 0."""
    generator = torch.Generator().manual_seed(num_frames)
    stage1_target = torch.randn(1, 4, num_frames, 2, 2, generator=generator)
    stage2_target = torch.randn(1, 4, num_frames, 2, 2, generator=generator) + 5
    noise = torch.randn(1, 4, num_frames, 2, 2, generator=generator)
    plan = plan_progressive(num_frames, stride, length, overlap)
    keys = list(plan.keyframes.frames)
    timesteps = get_timesteps(steps)
    t_last = prev_timestep(timesteps[-1], steps)
    tol = 1e-4 if steps == 4 else 5e-3
    stage, calls, inputs = [0], [], []

    def denoise(x, t, frames):
        calls.append((stage[0], list(frames)))
        inputs.append((stage[0], t, list(frames), x.clone()))
        return oracle(stage1_target if stage[0] == 0 else stage2_target)(x, t, frames)

    def callback(progress):
        stage[0] = progress["segment"]

    out = sample_progressive(denoise, noise, timesteps, plan, length, overlap, weights_pyramid, callback=callback)
    alone = sample_windows(oracle(stage1_target[:, :, keys]), noise[:, :, keys], timesteps,
                           partial(windows_overlap, length=length, overlap=overlap), weights_pyramid)
    assert torch.equal(out[:, :, keys], alone), "keyframes changed by stage 2"
    others = [f for f in range(num_frames) if f not in keys]
    expected = renoise(stage2_target, noise, t_last, SCHEDULER)
    assert (out[:, :, others] - expected[:, :, others]).abs().max() <= tol, "in-between frames not generated"
    expected = renoise(stage1_target, noise, t_last, SCHEDULER)
    assert (out[:, :, keys] - expected[:, :, keys]).abs().max() <= tol
    # stage 1 sees keyframes only; each stage-2 call stays inside one segment; no call sees more than a window
    assert {f for s, frames in calls if s == 0 for f in frames} == set(keys)
    for s, frames in calls:
        assert len(frames) <= length
        if s:
            segment = plan.inbetweens[s - 1]
            assert set(frames) <= set(segment.frames)
    # at every stage-2 step the fixed frames show the stage-1 keyframe re-noised with its own initial noise
    checked = 0
    for s, t, frames, x in inputs:
        for j, f in enumerate(frames):
            if s and f in plan.inbetweens[s - 1].fixed:
                expected = renoise(alone[:, :, keys.index(f)], noise[:, :, f], t, SCHEDULER)
                assert torch.allclose(x[:, :, j], expected, atol=1e-6)
                checked += 1
    assert checked > 0


def test_progressive_with_one_step_and_a_single_frame():
    target = torch.randn(1, 4, 1, 2, 2)
    out = sample_progressive(oracle(target), torch.randn(1, 4, 1, 2, 2), get_timesteps(1), plan_progressive(1, 4, 16),
                             16, 4, weights_flat)
    assert (out - target).abs().max() <= 1e-5


def test_held_frames_end_at_the_last_noise_level():
    """After the last step the held frames sit at its t_prev: clean when it is < 0 (4 steps), t = 0 at 7 steps."""
    noise = torch.randn(1, 1, 9, 1, 1)
    clean = torch.ones(1, 1, 2, 1, 1)
    fixed = FixedFrames((0, 8), clean, noise[:, :, [0, 8]])
    for steps in (4, 7):
        t_last = prev_timestep(get_timesteps(steps)[-1], steps)
        out = sample_windows(oracle(torch.zeros(1, 1, 9, 1, 1)), noise, get_timesteps(steps),
                             partial(windows_overlap, length=9, overlap=0), weights_flat, fixed=fixed)
        assert torch.equal(out[:, :, [0, 8]], renoise(clean, noise[:, :, [0, 8]], t_last, SCHEDULER))
        assert torch.equal(out[:, :, [0, 8]], clean) == (t_last < 0)
