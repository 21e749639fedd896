"""One denoiser call at full-size architecture, ours against a naive baseline of the same math.

Ours: ReferenceNet on the cond row only (batch 1), UNet3D on the CFG batch [uncond, cond] with the uncond rows
skipping reference attention (``reference_mask=(False, True)``), SDPA everywhere, the CLIP context and reference
keys/values projected once per batch row. Baseline (the official way): ReferenceNet on the CFG batch of 2, every row
attends to the reference and the uncond rows are then recomputed with plain self-attention, context and reference
repeated per frame, plain (non-SDPA) attention everywhere (diffusers ``AttnProcessor``, as the official forces in the
motion modules). Same weights (random, full-size shapes), 256×256 px (32×32 latents), 8 frames, CPU.
Default dtype bf16 (4.4 GB of weights; fp32 needs 8.7 GB): ``--dtype fp32`` to change. It takes minutes.
Run: ./dev bench networks [--dtype fp32|bf16] [--frames 8] [--size 256]

Measured (bf16, 2 shared EPYC cores with AVX512-BF16, load ~3): naive 1.52 s + 19.17 s = 20.69 s, ours 0.99 s +
14.32 s = 15.32 s, 1.35x (UNet3D alone 1.34x); convolutions and linear layers, identical on both sides, are ~70%
of our UNet3D time. Outputs differ by 0.05 (max |out| 2.5): bf16 rounding of SDPA vs plain attention.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0  # noqa: E402

from emoji_model.networks import FULL, build_referencenet, build_unet3d, sinusoid_table  # noqa: E402
from emoji_model.networks.attention import ReferenceAttnProcessor, SharedContextAttnProcessor  # noqa: E402
from emoji_model.networks.motion import TemporalSelfAttention  # noqa: E402
from emoji_model.networks.transformer import TransformerBlock  # noqa: E402


class NaiveReferenceAttnProcessor:
    """The official order: reference tokens (repeated per frame) for every row, then rows off the mask recomputed."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 reference=None, reference_mask=None, frames=1):
        plain = AttnProcessor()
        if reference is None:
            return plain(attn, hidden_states)
        batch = hidden_states.shape[0] // frames
        per_frame = reference.expand(batch, -1, -1).repeat_interleave(frames, dim=0)
        out = plain(attn, hidden_states, torch.cat([hidden_states, per_frame], dim=1))
        if reference_mask is not None:
            off = torch.tensor(reference_mask).repeat_interleave(frames).logical_not()
            out[off] = plain(attn, hidden_states[off])
        return out


class NaiveContextAttnProcessor:
    """Cross-attention with the context repeated for every frame."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None):
        context = encoder_hidden_states.repeat_interleave(hidden_states.shape[0] // encoder_hidden_states.shape[0], 0)
        return AttnProcessor()(attn, hidden_states, context)


def set_processors(module: torch.nn.Module, naive: bool) -> None:
    for m in module.modules():
        if isinstance(m, TransformerBlock) and not m.norm1_only:
            m.attn1.set_processor(NaiveReferenceAttnProcessor() if naive else ReferenceAttnProcessor())
            m.attn2.set_processor(NaiveContextAttnProcessor() if naive else SharedContextAttnProcessor())
        elif isinstance(m, TemporalSelfAttention):
            m.set_processor(AttnProcessor() if naive else AttnProcessor2_0())


def random_network(build, dtype: torch.dtype) -> torch.nn.Module:
    """Built on meta, then filled in place: matrices ~ N(0, 1/fan_in), norm scales 1, biases 0, official ``pe``."""
    with torch.device("meta"):
        net = build()
    net = net.to_empty(device="cpu").to(dtype)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=gen)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
        for b in net.buffers():
            b.copy_(sinusoid_table(b.shape[1], b.shape[2]))
    return net


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=["bf16", "fp32"], default="bf16")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=256, help="pixels (latents are size/8)")
    args = parser.parse_args()
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    torch.set_flush_denormal(True)
    side, f = args.size // 8, args.frames

    t_build, (referencenet, unet) = timed(lambda: (random_network(build_referencenet, dtype),
                                                    random_network(build_unet3d, dtype)))
    gen = torch.Generator().manual_seed(1)
    clip = torch.randn(1, 257, 1024, generator=gen).to(dtype)
    context = torch.cat([torch.zeros_like(clip), clip])  # [uncond, cond]
    reference_latent = torch.randn(1, 4, side, side, generator=gen).to(dtype)
    latents = torch.randn(1, 4, f, side, side, generator=gen).to(dtype).repeat(2, 1, 1, 1, 1)
    landmarks = (0.05 * torch.randn(1, FULL.guider.conditioning_embedding_channels, f, side, side, generator=gen)).to(dtype)
    print(f"full-size ReferenceNet + UNet3D, {args.dtype}, {args.size}x{args.size} px ({side}x{side} latents), "
          f"{f} frames, CFG batch 2, {torch.get_num_threads()} threads; random weights built in {t_build:.0f} s")

    def call(naive: bool, lat, ctx, ref_latent, lmk):
        set_processors(referencenet, naive)
        set_processors(unet, naive)
        rows = 2 if naive else 1  # the official runs the ReferenceNet on the CFG batch; only the cond row is used
        t_ref, features = timed(lambda: referencenet(ref_latent.expand(rows, -1, -1, -1), 0, ctx[-rows:]))
        t_unet, out = timed(lambda: unet(lat, 749, ctx, lmk, features, (False, True)))
        return t_ref, t_unet, out

    with torch.inference_mode():
        for naive in (True, False):  # warm-up at 8x8 latents, 2 frames (one-time kernel and allocator set-up)
            call(naive, latents[:, :, :2, :8, :8], context, reference_latent[..., :8, :8], landmarks[:, :, :2, :8, :8])
        naive_ref, naive_unet, naive_out = call(True, latents, context, reference_latent, landmarks)
        ours_ref, ours_unet, ours_out = call(False, latents, context, reference_latent, landmarks)

    diff = (ours_out.float() - naive_out.float()).abs().max().item()
    scale = naive_out.float().abs().max().item()
    print(f"naive : ReferenceNet {naive_ref:7.2f} s + UNet3D {naive_unet:7.2f} s = {naive_ref + naive_unet:7.2f} s")
    print(f"ours  : ReferenceNet {ours_ref:7.2f} s + UNet3D {ours_unet:7.2f} s = {ours_ref + ours_unet:7.2f} s")
    print(f"speed-up: {(naive_ref + naive_unet) / (ours_ref + ours_unet):.2f}x (UNet3D alone "
          f"{naive_unet / ours_unet:.2f}x); max |ours - naive| = {diff:.3g} (output max {scale:.3g})")


if __name__ == "__main__":
    main()
