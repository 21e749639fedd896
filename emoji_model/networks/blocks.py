"""Down, mid and up blocks of the SD-1.x UNet, for both networks: diffusers resnets and resamplers, our spatial
transformers, and (UNet3D only) a motion module after each layer.
``context`` is one tensor for every transformer of a block, or one entry per transformer (``ProjectedContext``s).

Tensors are images (N, C, h, w) with N = B·F (frames folded into the batch, frame-major per row; F = 1 for the
ReferenceNet). Keys follow the official layout: ``resnets.i``, ``attentions.i``, ``motion_modules.i``,
``downsamplers.0.conv``, ``upsamplers.0.conv``. Spatial transformers consume ``references`` in order (one per
transformer) and, when a ``features`` list is given, append their ``norm1`` tokens to it (the ReferenceNet output).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import Downsample2D, ResnetBlock2D, Upsample2D  # defined there before 0.26, re-exported since
from torch import nn

from .config import MotionModuleConfig, UNetConfig
from .motion import MotionModule
from .transformer import SpatialTransformer


def timestep_embedding(time_proj: Timesteps, time_embedding: TimestepEmbedding, timestep, batch: int,
                       device: torch.device) -> torch.Tensor:
    """timestep: number, 0-d, (1,) or (B,) tensor → (B, T) embedding in the embedding's dtype."""
    t = torch.as_tensor(timestep, device=device)
    t = t.reshape(-1).expand(batch) if t.numel() == 1 else t.reshape(batch)
    return time_embedding(time_proj(t).to(time_embedding.linear_1.weight.dtype))


def _resnet(cfg: UNetConfig, in_channels: int, out_channels: int, output_scale_factor: float = 1.0) -> ResnetBlock2D:
    return ResnetBlock2D(
        in_channels=in_channels, out_channels=out_channels, temb_channels=cfg.time_embed_dim,
        groups=cfg.norm_num_groups, eps=cfg.norm_eps, output_scale_factor=output_scale_factor,
    )


def _transformers(cfg: UNetConfig, channels: int, n: int, norm1_only_last: bool = False) -> nn.ModuleList:
    return nn.ModuleList(
        SpatialTransformer(
            channels, cfg.num_attention_heads, cfg.cross_attention_dim, cfg.norm_num_groups,
            norm1_only=norm1_only_last and i == n - 1,
        )
        for i in range(n)
    )


def _motion_modules(motion: MotionModuleConfig | None, channels: int, n: int) -> nn.ModuleList | None:
    return nn.ModuleList(MotionModule(channels, motion) for _ in range(n)) if motion is not None else None


class _Block(nn.Module):
    """The per-layer step shared by all blocks: [spatial transformer] → [motion module]."""

    attentions: nn.ModuleList | None
    motion_modules: nn.ModuleList | None

    @property
    def num_transformers(self) -> int:
        return len(self.attentions) if self.attentions is not None else 0

    def _layer(self, i, x, context, frames, references, reference_mask, features):
        """Layer i after its resnet: x (B·F, C, h, w) → same shape, or None after a truncated transformer."""
        if self.attentions is not None:
            layer_context = context[i] if isinstance(context, (tuple, list)) else context  # per layer when projected
            x, normed = self.attentions[i](x, layer_context, frames, reference=references[i] if references else None,
                                           reference_mask=reference_mask)
            if features is not None:
                features.append(normed)
            if x is None:  # the ReferenceNet's truncated last transformer: nothing after it is used
                return None
        if self.motion_modules is not None:
            x = self.motion_modules[i](x, frames)
        return x


class DownBlock(_Block):
    """``layers × (resnet → [transformer] → [motion])``, then an optional stride-2 conv; every output is a skip."""

    def __init__(self, cfg: UNetConfig, in_channels: int, out_channels: int, *, cross_attention: bool,
                 motion: MotionModuleConfig | None, downsample: bool):
        super().__init__()
        n = cfg.layers_per_block
        self.resnets = nn.ModuleList(_resnet(cfg, in_channels if i == 0 else out_channels, out_channels) for i in range(n))
        self.attentions = _transformers(cfg, out_channels, n) if cross_attention else None
        self.motion_modules = _motion_modules(motion, out_channels, n)
        self.downsamplers = (
            nn.ModuleList([Downsample2D(out_channels, use_conv=True, padding=cfg.downsample_padding, name="op")])
            if downsample else None
        )

    def forward(self, x, temb, context, frames=1, references: Sequence[torch.Tensor] = (), reference_mask=None,
                features: list | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """x (N, C_in, h, w), temb (N, T), context (B, L, D) → (x (N, C, h/2, w/2), skips)."""
        skips = []
        for i, resnet in enumerate(self.resnets):
            x = self._layer(i, resnet(x, temb), context, frames, references, reference_mask, features)
            skips.append(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
            skips.append(x)
        return x, skips


class MidBlock(_Block):
    """``resnet → (transformer → [motion] → resnet)``, the official order."""

    def __init__(self, cfg: UNetConfig, channels: int, *, motion: MotionModuleConfig | None):
        super().__init__()
        scale = cfg.mid_block_scale_factor
        self.resnets = nn.ModuleList([_resnet(cfg, channels, channels, scale), _resnet(cfg, channels, channels, scale)])
        self.attentions = _transformers(cfg, channels, 1)
        self.motion_modules = _motion_modules(motion, channels, 1)

    def forward(self, x, temb, context, frames=1, references: Sequence[torch.Tensor] = (), reference_mask=None,
                features: list | None = None) -> torch.Tensor:
        x = self.resnets[0](x, temb)
        for i, resnet in enumerate(self.resnets[1:]):
            x = resnet(self._layer(i, x, context, frames, references, reference_mask, features), temb)
        return x


class UpBlock(_Block):
    """``(layers + 1) × (concat skip → resnet → [transformer] → [motion])``, then an optional ×2 nearest + conv."""

    def __init__(self, cfg: UNetConfig, in_channels: int, prev_channels: int, out_channels: int, *,
                 cross_attention: bool, motion: MotionModuleConfig | None, upsample: bool,
                 norm1_only_last: bool = False):
        super().__init__()
        n = cfg.layers_per_block + 1
        self.resnets = nn.ModuleList(
            _resnet(cfg, (prev_channels if i == 0 else out_channels) + (in_channels if i == n - 1 else out_channels),
                    out_channels)
            for i in range(n)
        )
        self.attentions = _transformers(cfg, out_channels, n, norm1_only_last) if cross_attention else None
        self.motion_modules = _motion_modules(motion, out_channels, n)
        self.upsamplers = nn.ModuleList([Upsample2D(out_channels, use_conv=True)]) if upsample else None

    def forward(self, x, skips: list[torch.Tensor], temb, context, frames=1, references: Sequence[torch.Tensor] = (),
                reference_mask=None, features: list | None = None) -> torch.Tensor | None:
        """Pops its skips from the end of ``skips``; returns None after a truncated (ReferenceNet) transformer."""
        for i, resnet in enumerate(self.resnets):
            x = self._layer(i, resnet(torch.cat([x, skips.pop()], dim=1), temb), context, frames, references,
                            reference_mask, features)
            if x is None:
                return None
        if self.upsamplers is not None:
            x = self.upsamplers[0](x, output_size=skips[-1].shape[-2:] if skips else None)
        return x


def build_unet_body(module: nn.Module, cfg: UNetConfig, motion, *, norm1_only_last: bool = False) -> None:
    """The SD-1.x UNet layout both our UNets share, set on ``module`` under the official names: ``conv_in``,
    ``time_proj``, ``time_embedding``, ``clip_fc``, ``down_blocks``, ``mid_block``, ``up_blocks`` (motion modules in
    each block when ``motion`` is given; ``norm1_only_last``: the ReferenceNet's truncated last transformer)."""
    widths = cfg.block_out_channels
    levels = len(widths)
    module.conv_in = nn.Conv2d(cfg.in_channels, widths[0], kernel_size=3, padding=1)
    module.time_proj = Timesteps(widths[0], cfg.flip_sin_to_cos, cfg.freq_shift)
    module.time_embedding = TimestepEmbedding(widths[0], cfg.time_embed_dim)
    module.clip_fc = nn.Linear(cfg.clip_dim, cfg.cross_attention_dim)
    module.down_blocks = nn.ModuleList(
        DownBlock(cfg, widths[max(i - 1, 0)], widths[i], cross_attention=i < levels - 1, motion=motion,
                  downsample=i < levels - 1)
        for i in range(levels)
    )
    module.mid_block = MidBlock(cfg, widths[-1], motion=motion)
    rev = widths[::-1]
    module.up_blocks = nn.ModuleList(
        UpBlock(cfg, rev[min(i + 1, levels - 1)], rev[max(i - 1, 0)], rev[i], cross_attention=i > 0, motion=motion,
                upsample=i < levels - 1, norm1_only_last=norm1_only_last and i == levels - 1)
        for i in range(levels)
    )
