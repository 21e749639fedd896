"""The SD spatial transformer (GroupNorm → 1×1 conv → transformer block → 1×1 conv → residual), shared by both UNets.

It works on single images; the UNet3D folds frames into the batch and says how many (``frames``) so that the
reference tokens and the CLIP context are shared by the frames of a batch row. Keys are the official/diffusers ones:
``norm``, ``proj_in``, ``transformer_blocks.0.{norm1, attn1, norm2, attn2, norm3, ff}``, ``proj_out``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from torch import nn

from .attention import ReferenceAttnProcessor, SharedContextAttnProcessor


class TransformerBlock(nn.Module):
    """LayerNorm → self-attention (+ reference tokens) → LayerNorm → cross-attention → LayerNorm → GEGLU FF.

    ``norm1_only`` builds the ReferenceNet's last block, of which the official keeps (and computes) only ``norm1``.
    """

    def __init__(self, dim: int, heads: int, context_dim: int, norm1_only: bool = False):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm1_only = norm1_only
        if norm1_only:
            return
        self.attn1 = Attention(dim, heads=heads, dim_head=dim // heads, processor=ReferenceAttnProcessor())
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = Attention(
            dim, cross_attention_dim=context_dim, heads=heads, dim_head=dim // heads,
            processor=SharedContextAttnProcessor(),
        )
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, activation_fn="geglu")

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor,
        frames: int = 1,
        reference: torch.Tensor | None = None,
        reference_mask: Sequence[bool] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        """x (B·F, N, C), context (B, L, D), reference (1 | B, M, C) → (x out or None if norm1_only, norm1(x))."""
        normed = self.norm1(x)
        if self.norm1_only:
            return None, normed
        x = x + self.attn1(normed, reference=reference, reference_mask=reference_mask, frames=frames)
        x = x + self.attn2(self.norm2(x), encoder_hidden_states=context)
        x = x + self.ff(self.norm3(x))
        return x, normed


class SpatialTransformer(nn.Module):
    """One transformer block over the h·w tokens of each image, between GroupNorm + 1×1 convs, plus the residual."""

    def __init__(self, channels: int, heads: int, context_dim: int, groups: int, norm1_only: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6)
        self.proj_in = nn.Conv2d(channels, channels, kernel_size=1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(channels, heads, context_dim, norm1_only)])
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)  # kept (and loaded) even when norm1_only

    matmul_projections = True  # SpeedOptions.matmul_projections (set by the UNets' forward)

    def forward(self, x: torch.Tensor, context: torch.Tensor, frames: int = 1, **reference) -> tuple:
        """x (B·F, C, h, w) → (out (B·F, C, h, w) or None if norm1_only, norm1 tokens (B·F, h·w, C));
        ``reference``: ``TransformerBlock``'s ``reference`` and ``reference_mask``.

        ``matmul_projections`` (NCHW activations): the 1×1 ``proj_in``/``proj_out`` as batched matrix products that
        read the NCHW map as transposed token matrices (no copy either way) and give an NCHW output; otherwise the
        convolutions, whose output on the token view is channels-last-strided (and so is everything after it)."""
        n, c, h, w = x.shape
        nchw = self.matmul_projections and x.is_contiguous()
        if nchw:
            weight = self.proj_in.weight.view(c, c)
            tokens = torch.baddbmm(self.proj_in.bias, self.norm(x).flatten(2).transpose(1, 2),
                                   weight.t().expand(n, c, c))  # (B·F, h·w, C), contiguous
        else:
            tokens = self.proj_in(self.norm(x)).flatten(2).transpose(1, 2)  # (B·F, h·w, C); a view when NHWC
        normed = None
        for block in self.transformer_blocks:
            tokens, normed = block(tokens, context, frames, **reference)
            if tokens is None:
                return None, normed
        if nchw:
            out = torch.bmm(self.proj_out.weight.view(c, c).expand(n, c, c), tokens.transpose(1, 2))
            out = out.add_(self.proj_out.bias[:, None]).view(n, c, h, w)
        else:
            out = self.proj_out(tokens.transpose(1, 2).reshape(n, c, h, w))  # channels-last view of the tokens
        return out + x, normed
