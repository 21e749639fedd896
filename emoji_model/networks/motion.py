"""AnimateDiff v2 "Vanilla" motion module: self-attention across the frames of each pixel, with the official keys.

``temporal_transformer.{norm, proj_in, transformer_blocks.i.{attention_blocks.j.{to_q, to_k, to_v, to_out.0,
pos_encoder.pe}, norms.j, ff, ff_norm}, proj_out}``. The GroupNorm normalises each frame on its own, over
(B·F, C, h, w), as the official does; diffusers' ``AnimateDiffTransformer3D`` normalises over all frames of a row
jointly, which is a different function, so it is not used. The sinusoidal table ``pe`` (1, max_frames, C) is a
persistent buffer, as in the official state dict; it is added after each LayerNorm, before each attention.
"""

from __future__ import annotations

import math

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from torch import nn

from .config import MotionModuleConfig


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """(1, length, dim): sin on even channels, cos on odd ones, computed exactly as the official (float32)."""
    position = torch.arange(length).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * div_term)
    table[0, :, 1::2] = torch.cos(position * div_term)
    return table


def check_window(frames: int, max_frames: int) -> None:
    if frames > max_frames:
        raise ValueError(
            f"{frames} frames in one window, but the motion modules know only {max_frames} frame positions: "
            f"denoise in context windows of at most {max_frames} frames"
        )


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_frames: int):
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_frames, dim))  # (1, max_frames, C), in the state dict

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (N, F, C): + the first F positions
        check_window(x.shape[1], self.pe.shape[1])
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalSelfAttention(Attention):
    """A diffusers ``Attention`` over frames (SDPA) that also owns its positional table (key ``pos_encoder.pe``)."""

    def __init__(self, dim: int, heads: int, max_frames: int):
        super().__init__(dim, heads=heads, dim_head=dim // heads, processor=AttnProcessor2_0())
        self.pos_encoder = PositionalEncoding(dim, max_frames)


class TemporalTransformerBlock(nn.Module):
    """[LayerNorm → + positions → self-attention over frames → residual] × n, then LayerNorm → GEGLU FF → residual."""

    def __init__(self, dim: int, cfg: MotionModuleConfig):
        super().__init__()
        n = cfg.num_attention_blocks
        self.attention_blocks = nn.ModuleList(
            TemporalSelfAttention(dim, cfg.num_attention_heads, cfg.max_frames) for _ in range(n)
        )
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(n))
        self.ff = FeedForward(dim, activation_fn="geglu")
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x (B·h·w, F, C): one sequence of frames per pixel
        for attention, norm in zip(self.attention_blocks, self.norms):
            x = x + attention(attention.pos_encoder(norm(x)))
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, cfg: MotionModuleConfig):
        super().__init__()
        self.norm = nn.GroupNorm(cfg.norm_num_groups, channels, eps=cfg.norm_eps)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList(
            TemporalTransformerBlock(channels, cfg) for _ in range(cfg.num_transformer_blocks)
        )
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B·F, C, h, w), frames of a batch row consecutive → same shape."""
        n, c, h, w = x.shape
        batch = n // frames
        tokens = self.norm(x).reshape(batch, frames, c, h * w).permute(0, 3, 1, 2).reshape(batch * h * w, frames, c)
        tokens = self.proj_in(tokens.contiguous())  # (B·h·w, F, C); at batch 1 reshape leaves a strided view (slow matmul)
        for block in self.transformer_blocks:
            tokens = block(tokens)
        tokens = self.proj_out(tokens).reshape(batch, h * w, frames, c)
        if x.is_contiguous(memory_format=torch.channels_last):  # (B·F, h, w, C) in memory: one copy, C-runs kept
            out = tokens.transpose(1, 2).reshape(n, h, w, c).permute(0, 3, 1, 2)
        else:
            out = tokens.permute(0, 2, 3, 1).reshape(n, c, h, w)
        return out + x


class MotionModule(nn.Module):
    """``motion_modules.i``: x + temporal transformer(x), for x (B·F, C, h, w)."""

    def __init__(self, channels: int, cfg: MotionModuleConfig):
        super().__init__()
        self.max_frames = cfg.max_frames
        self.temporal_transformer = TemporalTransformer(channels, cfg)

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        check_window(frames, self.max_frames)
        return self.temporal_transformer(x, frames)
