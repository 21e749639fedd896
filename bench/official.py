"""The official Follow-Your-Emoji networks beside ours: same random weights, same torch, one process each, timed.

    python bench/official.py --official /tmp/official      # a checkout of mayuelala/FollowYourEmoji (never committed)
    python bench/official.py                               # ours only, beside the last recorded official figures

Both sides build the full-size networks (meta device, then every state-dict tensor filled from a generator seeded by
its key's CRC-32: the keys are identical, so both hold the same weights without a 9 GB file between them) and run, on
the same inputs: the ReferenceNet (official: the CFG batch of 2, as its pipeline; ours: the cond row), one CFG UNet3D
call ([uncond, cond]; uncond = zero CLIP states and no reference attention), one no-CFG call, and one full step of a
16-frame window (landmark guider on the window, CFG UNet3D call, guidance 3.5, DDIM step). Default fp32, 256² px,
8 frames for the UNet calls; bf16 too when the CPU has bf16 units (avx512_bf16 / amx_bf16 in /proc/cpuinfo; emulated
bf16 is 50–80× slower and says nothing). One implementation per process, one process at a time, alternating
official, ours (same torch), ours (this torch) for ``--rounds`` rounds: medians over rounds, their ratio, and the
largest difference between the two sides' outputs (must be ≤ 1e-4 in fp32). Our process also times the CFG call with
each exact speed-up alone (``networks.SpeedOptions``) against none and all ("ablation").

Python interpreters: ``--official-python`` (a venv with the official's old dependencies: torch 2.13.0, transformers
4.45.2, einops 0.4.1, omegaconf, numpy 1.26; default /tmp/official-venv), ``--same-torch-python`` (a venv where our
pack runs on that same torch, default /work/venv213 when present), and this interpreter for "ours (this torch)".
The official checkout imports ``torchvision`` without using it; the worker puts an empty stand-in in
``sys.modules`` instead of editing the checkout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHES = ("referencenet", "cfg", "nocfg", "step")
LABELS = {"referencenet": "ReferenceNet (official batch 2, ours batch 1)", "cfg": "CFG UNet3D call",
          "nocfg": "no-CFG UNet3D call", "step": "16-frame window step with the guider"}
T_CALL = 749  # timestep of the single calls
STEP_INDEX = 7  # the step benchmark steps from the 30-step schedule's 8th timestep
GUIDANCE = 3.5

# The last run with --official (python bench/official.py --official /tmp/official --rounds 2), kept as data.
RECORDED = {
    "machine": "Intel Xeon (Sapphire Rapids, AVX-512 + AMX-BF16), 2 shared cores, KVM; other jobs running",
    "date": "2026-12-02",
    "torch": "2.13.0+cpu (both)",
    "size": 256, "frames": 8, "step_frames": 16, "threads": 2,
    # the official's medians of 3 (bf16: 2) alternating rounds, --rounds 3 --ablation 1, load 1.8-2.1 (the benchmark's
    # own 2 threads): {dtype: {bench: s, bench + "_cpu": CPU s}}. Ours, same torch, same run: fp32 ReferenceNet 2.01 s,
    # CFG call 18.91, no-CFG 10.94, step 37.95; bf16 0.59, 6.08, 3.65, 11.64.
    "seconds": {"fp32": {"referencenet": 3.05, "cfg": 25.49, "nocfg": 13.46, "step": 53.93,
                         "referencenet_cpu": 6.00, "cfg_cpu": 49.88, "nocfg_cpu": 26.36, "step_cpu": 104.29},
                "bf16": {"referencenet": 0.95, "cfg": 8.38, "nocfg": 16.51, "step": 17.58,
                         "referencenet_cpu": 1.88, "cfg_cpu": 16.53, "nocfg_cpu": 32.06, "step_cpu": 34.53}},
}

SD15_UNET = {  # lambdalabs/sd-image-variations-diffusers unet/config.json
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280], "center_input_sample": False, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "downsample_padding": 1, "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 4, "layers_per_block": 2,
    "mid_block_scale_factor": 1, "norm_eps": 1e-05, "norm_num_groups": 32, "out_channels": 4, "sample_size": 64,
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
}


# ---- shared by both workers: weights and inputs (torch only) ------------------------------------------------------


def sinusoid(length: int, dim: int):
    import math

    import torch

    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


def fill(module, dtype):
    """Every state-dict tensor from a generator seeded by its key: matrices ~ N(0, 1/fan_in), norm scales
    1 + N(0, 0.1²), biases N(0, 0.02²), positional tables the sinusoids (guider's zero conv_out included: random)."""
    import torch

    module.to(dtype)
    module.to_empty(device="cpu")
    with torch.no_grad():
        for name, tensor in module.state_dict(keep_vars=True).items():
            gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            if name.endswith("pos_encoder.pe"):
                value = sinusoid(tensor.shape[1], tensor.shape[2])
            elif tensor.ndim >= 2:
                value = torch.randn(tensor.shape, generator=gen) * tensor[0].numel() ** -0.5
            elif name.endswith("weight"):
                value = 1 + 0.1 * torch.randn(tensor.shape, generator=gen)
            else:
                value = 0.02 * torch.randn(tensor.shape, generator=gen)
            tensor.copy_(value)
        names = set(module.state_dict())
        stray = [n for n, _ in module.named_buffers() if n not in names]
        if stray:
            raise RuntimeError(f"buffers outside the state dict would stay uninitialised: {stray[:3]}")
    return module.eval().requires_grad_(False)


def checksum(*modules) -> float:
    import torch

    return float(sum(p.double().sum() for m in modules for p in m.state_dict().values()))


def inputs(size: int, frames: int, step_frames: int):
    import torch

    gen = torch.Generator().manual_seed(12580)
    side = size // 8
    return {
        "clip": torch.randn(1, 257, 1024, generator=gen),
        "ref_latent": torch.randn(1, 4, side, side, generator=gen),
        "latents": torch.randn(1, 4, frames, side, side, generator=gen),
        "lmk": torch.rand(1, 320, frames, side, side, generator=gen) * 0.1,  # landmark features for the calls
        "step_latents": torch.randn(1, 4, step_frames, side, side, generator=gen),
        "step_drawings": (torch.rand(1, 3, step_frames, size, size, generator=gen) < 0.01).float(),  # sparse lines
    }


CPU_SECONDS: dict[float, float] = {}  # wall seconds of a timed call → its process CPU seconds


def timed(fn):
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    seconds = time.perf_counter() - start
    CPU_SECONDS[seconds] = time.process_time() - cpu
    return seconds, out


# ---- the official side ------------------------------------------------------------------------------------------


def official_worker(args, dtype):
    import types

    import torch

    sys.path.insert(0, str(args.official))
    import transformers  # noqa: F401 - before the stand-in below, which it must not see
    from diffusers import DDIMScheduler  # the checkout's vendored diffusers 0.24.0
    from omegaconf import OmegaConf

    stand_ins = [name for name in ("torchvision", "torchvision.transforms") if name not in sys.modules]
    for name in stand_ins:  # imported by models/__init__.py, never used
        sys.modules[name] = types.ModuleType(name)
    from models.guider import Guider
    from models.referencenet import ReferenceNet2DConditionModel
    from models.unet import UNet3DConditionModel

    for name in stand_ins:
        del sys.modules[name]

    extra = OmegaConf.to_container(OmegaConf.load(Path(args.official) / "configs" / "infer.yaml").model)
    unet_config = {**SD15_UNET, "_class_name": "UNet3DConditionModel",
                   "down_block_types": [t.replace("2D", "3D") for t in SD15_UNET["down_block_types"]],
                   "up_block_types": [t.replace("2D", "3D") for t in SD15_UNET["up_block_types"]],
                   "mid_block_type": "UNetMidBlock3DCrossAttn"}
    t_build = time.perf_counter()
    with torch.device("meta"):
        referencenet = ReferenceNet2DConditionModel.from_config(SD15_UNET)
        unet = UNet3DConditionModel.from_config(unet_config, **extra["unet_additional_kwargs"])
        guider = Guider(conditioning_embedding_channels=320, block_out_channels=(16, 32, 96, 256))
    referencenet, unet, guider = (fill(m, dtype) for m in (referencenet, unet, guider))
    t_build = time.perf_counter() - t_build
    x = {k: v.to(dtype) for k, v in inputs(args.size, args.frames, args.step_frames).items()}
    scheduler = DDIMScheduler(**json.loads(args.scheduler_config))
    scheduler.set_timesteps(30)
    t_step = scheduler.timesteps[STEP_INDEX]
    states = torch.cat([torch.zeros_like(x["clip"]), x["clip"]])

    def ref(batch):
        latent = x["ref_latent"].repeat(batch, 1, 1, 1)
        return referencenet(latent, torch.zeros(()), encoder_hidden_states=states[-batch:], return_dict=False)

    def call(latents, lmk_fea, features, cfg, t=T_CALL):
        unet.set_do_classifier_free_guidance(do_classifier_free_guidance=cfg)
        rows = 2 if cfg else 1
        down, mid, up = features
        return unet(latents.repeat(rows, 1, 1, 1, 1), t, lmk_cond_fea=lmk_fea.repeat(rows, 1, 1, 1, 1), encoder_hidden_states=states[-rows:],
                    reference_down_block_res_samples=down, reference_mid_block_res_sample=mid,
                    reference_up_block_res_samples=up).sample

    def step(features, frames=None):  # the pipeline's loop body for one window holding all frames
        lmk_fea = guider(x["step_drawings"][:, :, :frames])
        pred = call(x["step_latents"][:, :, :frames], lmk_fea, features, True, t_step)
        uncond, cond = pred.chunk(2)
        noise_pred = uncond + GUIDANCE * (cond - uncond)
        return scheduler.step(noise_pred.float(), t_step, x["step_latents"][:, :, :frames].float()).prev_sample

    with torch.inference_mode():
        _, feats2 = timed(lambda: ref(2))
        _, feats1 = timed(lambda: ref(1))
        for cfg, feats in ((True, feats2), (False, feats1)):  # warm-up: one frame at the same size
            call(x["latents"][:, :, :1], x["lmk"][:, :, :1], feats, cfg)
        step(feats2, 1)
        results, outputs = {"build_s": t_build}, {}
        for bench in args.benches:
            if bench == "referencenet":
                seconds, out = timed(lambda: ref(2))
                outputs["referencenet"] = torch.cat([t[1:].flatten() for t in _flat(out)])
            elif bench == "cfg":
                seconds, out = timed(lambda: call(x["latents"], x["lmk"], feats2, True))
                outputs["cfg"] = out
            elif bench == "nocfg":
                seconds, out = timed(lambda: call(x["latents"], x["lmk"], feats1, False))
                outputs["nocfg"] = out
            else:
                seconds, out = timed(lambda: step(feats2))
                outputs["step"] = out
            results[bench], results[f"{bench}_cpu"] = seconds, CPU_SECONDS[seconds]
            print(f"  official {bench}: {seconds:.2f} s (CPU {CPU_SECONDS[seconds]:.2f} s), load "
                  f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    return results, outputs, checksum(referencenet, unet, guider)


def _flat(features):
    down, mid, up = features
    return [*down, *(mid if isinstance(mid, (list, tuple)) else [mid]), *up]


# ---- our side ---------------------------------------------------------------------------------------------------


def ours_worker(args, dtype):
    import dataclasses

    import torch

    sys.path.insert(0, str(REPO))
    from emoji_model.networks import FULL, SpeedOptions, build_guider, build_referencenet, build_unet3d
    from emoji_model.networks.speed import cpu_heap, use_channels_last
    from emoji_model.sampling.animate import Reference
    from emoji_model.sampling.denoiser import build_denoiser
    from emoji_model.sampling.schedule import make_scheduler

    t_build = time.perf_counter()
    with torch.device("meta"):
        referencenet, unet, guider = build_referencenet(), build_unet3d(), build_guider()
    referencenet, unet, guider = (fill(m, dtype) for m in (referencenet, unet, guider))
    t_build = time.perf_counter() - t_build
    x = {k: v.to(dtype) for k, v in inputs(args.size, args.frames, args.step_frames).items()}
    scheduler = make_scheduler()
    scheduler.set_timesteps(30)
    t_step = scheduler.timesteps[STEP_INDEX]
    states = torch.cat([torch.zeros_like(x["clip"]), x["clip"]])
    speed = SpeedOptions()

    class Networks:  # what build_denoiser reads
        pass

    networks = Networks()
    networks.unet, networks.guider, networks.referencenet = unet, guider, referencenet

    def call(conditions, cfg, frames=None):
        sample = x["latents"][:, :, :frames].expand(2 if cfg else 1, -1, -1, -1, -1)
        return unet(sample, T_CALL, landmark_features=x["lmk"][:, :, :frames], conditions=conditions)

    heap = cpu_heap(speed.cpu_heap)
    heap.__enter__()  # the main benchmarks as ``sample`` runs them; the ablation below toggles it
    with torch.inference_mode():
        features = referencenet(x["ref_latent"], torch.zeros((), dtype=torch.long), x["clip"])
        t_prepare, cfg_conditions = timed(lambda: unet.prepare(states, features, (False, True), speed))
        nocfg_conditions = unet.prepare(x["clip"], features, None, speed)
        drawings = x["step_drawings"][0].permute(1, 2, 3, 0)  # (F, H, W, 3) in [0, 1]
        reference = Reference(x["ref_latent"].float(), x["clip"].float(), tuple(features), args.size, args.size)
        t_denoiser, denoise = timed(lambda: build_denoiser(networks, reference, drawings, GUIDANCE, speed))

        def step(frames=None):
            latents = x["step_latents"][:, :, :frames].float()
            v = denoise(latents, int(t_step), list(range(latents.shape[2])))
            return scheduler.step(v, t_step, latents, eta=0.0).prev_sample

        for cfg, conditions in ((True, cfg_conditions), (False, nocfg_conditions)):  # warm-up, as the official's
            call(conditions, cfg, 1)
        step(1)

        results = {"build_s": t_build, "prepare_s": t_prepare, "denoiser_s": t_denoiser}
        outputs = {}
        for bench in args.benches:
            if bench == "referencenet":
                seconds, out = timed(lambda: referencenet(x["ref_latent"], torch.zeros((), dtype=torch.long),
                                                          x["clip"]))
                outputs["referencenet"] = torch.cat([t.flatten() for t in out])
            elif bench == "cfg":
                seconds, out = timed(lambda: call(cfg_conditions, True))
                outputs["cfg"] = out
            elif bench == "nocfg":
                seconds, out = timed(lambda: call(nocfg_conditions, False))
                outputs["nocfg"] = out
            else:
                seconds, out = timed(step)
                outputs["step"] = out
            results[bench], results[f"{bench}_cpu"] = seconds, CPU_SECONDS[seconds]
            print(f"  ours {bench}: {seconds:.2f} s (CPU {CPU_SECONDS[seconds]:.2f} s), load "
                  f"{os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)

        heap.__exit__(None, None, None)
        if args.ablation:  # the CFG call with each exact speed-up alone, none and all, alternating
            none = SpeedOptions.none()
            configs = {"none": none, "all (default)": speed}
            for field in ("project_once", "constant_uncond", "matmul_projections", "channels_last", "cpu_heap"):
                configs[f"{field} alone"] = dataclasses.replace(none, **{field: True})
            configs["all + channels_last"] = dataclasses.replace(speed, channels_last=True)
            ablation = {name: [] for name in configs}
            ablation_cpu = {name: [] for name in configs}
            for _ in range(args.ablation):
                for name, options in configs.items():
                    use_channels_last(unet, unet.conv_in.weight, options.channels_last)
                    prepared = unet.prepare(states, features, (False, True), options, project=True)
                    with cpu_heap(options.cpu_heap):
                        call(prepared, True, 1)  # warm-up in this configuration
                        if not options.project_once:  # prepared in the call, as the denoiser then does
                            seconds, _ = timed(lambda: call(unet.prepare(states, features, (False, True), options,
                                                                         project=False), True))
                        else:
                            seconds, _ = timed(lambda: call(prepared, True))
                    ablation[name].append(seconds)
                    ablation_cpu[name].append(CPU_SECONDS[seconds])
                    print(f"  ablation {name}: {seconds:.2f} s (CPU {CPU_SECONDS[seconds]:.2f} s)", file=sys.stderr,
                          flush=True)
            results["ablation"], results["ablation_cpu"] = ablation, ablation_cpu
            use_channels_last(unet, unet.conv_in.weight, speed.channels_last)
    return results, outputs, checksum(referencenet, unet, guider)


def worker(args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    run = official_worker if args.worker == "official" else ours_worker
    results, outputs, weights_sum = run(args, dtype)
    results.update(torch=torch.__version__, weights_checksum=weights_sum, peak_rss_gib=_peak_rss_gib(),
                   load=os.getloadavg()[0])
    out = Path(args.out)
    torch.save({k: v.float().contiguous() for k, v in outputs.items()}, out / "outputs.pt")
    (out / "result.json").write_text(json.dumps(results))


def _peak_rss_gib() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


# ---- the parent: processes one at a time, medians, ratios ---------------------------------------------------------


def bf16_units() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_python(*candidates) -> str | None:
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            return str(candidate)
    return None


def run_side(side: str, python: str, args, dtype: str, benches, ablation: int, tmp: Path):
    out = tmp / f"{side}-{dtype}-{time.monotonic_ns()}"
    out.mkdir()
    from emoji_model.sampling.schedule import OFFICIAL_SCHEDULER_CONFIG

    cmd = [python, str(Path(__file__).resolve()), "--worker", "official" if side == "official" else "ours",
           "--out", str(out), "--dtype", dtype, "--size", str(args.size), "--frames", str(args.frames),
           "--step-frames", str(args.step_frames), "--threads", str(args.threads), "--benches", *benches,
           "--ablation", str(ablation), "--scheduler-config", json.dumps(OFFICIAL_SCHEDULER_CONFIG)]
    if args.official:
        cmd += ["--official", str(args.official)]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONWARNINGS": "ignore"}
    print(f"[{side}, {dtype}] {python}", flush=True)
    done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=None)
    if done.returncode:
        raise SystemExit(f"the {side} worker failed ({done.returncode})")
    import torch

    return json.loads((out / "result.json").read_text()), torch.load(out / "outputs.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", type=Path, help="checkout of mayuelala/FollowYourEmoji")
    parser.add_argument("--official-python", default=default_python("/tmp/official-venv/bin/python"))
    parser.add_argument("--same-torch-python", default=default_python(os.environ.get("FYE_TORCH213_PYTHON"),
                                                                      "/work/venv213/bin/python"))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--step-frames", type=int, default=16)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--dtypes", nargs="+", default=None, help="default: fp32, plus bf16 where the CPU has units")
    parser.add_argument("--benches", nargs="+", default=list(BENCHES), choices=BENCHES)
    parser.add_argument("--ablation", type=int, default=1, help="ablation repeats in our first round (0: none)")
    parser.add_argument("--no-current", action="store_true", help="skip ours on this interpreter's torch")
    # worker side
    parser.add_argument("--worker", choices=["official", "ours"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    parser.add_argument("--scheduler-config", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(REPO))
    has_bf16 = bf16_units()
    dtypes = args.dtypes or (["fp32", "bf16"] if has_bf16 else ["fp32"])
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, "
          f"load {os.getloadavg()[0]:.2f}; {args.size}² px, {args.frames} frames (step: {args.step_frames})")
    if not has_bf16:
        print("this CPU has no bf16 units (no avx512_bf16/amx_bf16): bf16 would be emulated, not measured")
    sides = []
    if args.official:
        if not args.official_python:
            raise SystemExit("--official needs --official-python (a venv with the official's dependencies)")
        sides.append(("official", args.official_python))
    if args.same_torch_python:
        sides.append(("ours", args.same_torch_python))
    if not args.no_current and (not sides or os.path.abspath(sys.executable) != os.path.abspath(
            args.same_torch_python or "")):  # venvs: not resolved (their pythons may link to one binary)
        sides.append(("ours (this torch)", sys.executable))

    with tempfile.TemporaryDirectory(prefix="fye-bench-") as tmp:
        for dtype in dtypes:
            runs = {side: [] for side, _ in sides}
            outputs = {}
            for r in range(args.rounds if dtype == "fp32" else max(1, args.rounds - 1)):
                for side, python in sides:
                    first_ours = side == next(name for name, _ in sides if name.startswith("ours"))
                    ablation = args.ablation if first_ours and r == 0 and dtype == "fp32" else 0
                    result, out = run_side(side, python, args, dtype, args.benches, ablation, Path(tmp))
                    runs[side].append(result)
                    outputs[side] = out
                    os.sync()
            report(dtype, runs, outputs, args)


def report(dtype: str, runs: dict, outputs: dict, args) -> None:
    sides = list(runs)
    print(f"\n== {dtype}: medians of {len(next(iter(runs.values())))} alternating runs (seconds) ==")
    torch_of = {side: runs[side][0]["torch"] for side in sides}
    print("  " + " | ".join(f"{side}: torch {torch_of[side]}, peak RSS {runs[side][0]['peak_rss_gib']:.1f} GiB"
                            for side in sides))
    header = f"{'':42s}" + "".join(f"{side:>20s}" for side in sides)
    official = "official" in runs
    print(header + ("  ratio (official / ours, same torch)" if official and "ours" in runs else ""))
    recorded = RECORDED["seconds"].get(dtype, {})
    for suffix, what in (("", "wall seconds"), ("_cpu", "process CPU seconds (less sensitive to other jobs)")):
        print(f"  {what}:")
        for bench in args.benches:
            med = {side: statistics.median(r[bench + suffix] for r in runs[side]) for side in sides}
            line = f"{LABELS[bench]:42s}" + "".join(f"{med[side]:20.2f}" for side in sides)
            if official and "ours" in med:
                line += f"  {med['official'] / med['ours']:.2f}×"
            elif bench + suffix in recorded:
                was = recorded[bench + suffix]
                line += f"  [recorded official {was:.2f} s: {was / med[sides[-1]]:.2f}×]"
            print(line)
    loads = [r.get("load", 0.0) for side in sides for r in runs[side]]
    print(f"  1-minute load during the runs: {min(loads):.1f} … {max(loads):.1f}")
    ours = "ours" if "ours" in runs else sides[-1]
    print(f"  ours, once per sampling run: prepare {statistics.median(r['prepare_s'] for r in runs[ours]):.2f} s "
          f"(reference and context keys/values of all layers)")
    if official:
        checks = [runs[side][0]["weights_checksum"] for side in sides]
        print(f"  same weights: {'yes' if max(checks) - min(checks) <= 1e-6 * abs(checks[0]) else 'NO'} "
              f"(checksums {', '.join(f'{c:.6g}' for c in checks)})")
        bound = 1e-4 if dtype == "fp32" else None
        for bench in args.benches:
            a, b = outputs["official"][bench], outputs["ours"][bench]
            diff = (a - b).abs().max().item()
            verdict = "" if bound is None else (" ok" if diff <= bound else f" EXCEEDS {bound:g}")
            print(f"  max |official − ours| {bench}: {diff:.2e} (max |official| {a.abs().max().item():.3g}){verdict}")
    else:
        print(f"  official figures: recorded {RECORDED['date']} on {RECORDED['machine']}, torch {RECORDED['torch']} "
              "(not measured now: pass --official PATH)")
    for side in sides:
        for key, what in (("ablation", "wall"), ("ablation_cpu", "CPU")):
            ablation = runs[side][0].get(key)
            if ablation:
                base = statistics.median(ablation["none"])
                print(f"  ablation ({side}), CFG call, {what} s, medians of {len(ablation['none'])}: " + "; ".join(
                    f"{name} {statistics.median(v):.2f} ({base / statistics.median(v):.2f}×)"
                    for name, v in ablation.items()))


if __name__ == "__main__":
    main()
