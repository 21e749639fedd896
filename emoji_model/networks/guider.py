"""The landmark guider: drawn landmark frames → features added to the UNet3D right after its ``conv_in``."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import GuiderConfig
from .speed import to_memory_format, use_channels_last


class LandmarkGuider(nn.Module):
    """Per-frame 3×3 convs, each followed by SiLU: ``conv_in``, then per level a same-width conv and a stride-2 conv
    to the next width, then the zero-initialised ``conv_out`` (no activation). Keys: ``conv_in``, ``blocks.0..``,
    ``conv_out`` (the official ``Guider``'s)."""

    def __init__(self, cfg: GuiderConfig):
        super().__init__()
        self.config = cfg
        widths = cfg.block_out_channels
        self.conv_in = nn.Conv2d(cfg.conditioning_channels, widths[0], kernel_size=3, padding=1)
        blocks = []
        for c_in, c_out in zip(widths[:-1], widths[1:]):
            blocks.append(nn.Conv2d(c_in, c_in, kernel_size=3, padding=1))
            blocks.append(nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, stride=2))
        self.blocks = nn.ModuleList(blocks)
        self.conv_out = nn.Conv2d(widths[-1], cfg.conditioning_embedding_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # untrained, the guider adds nothing
        nn.init.zeros_(self.conv_out.bias)
        self.channels_last = True  # NHWC convolutions (exact; measured 1.4× faster on CPU at 256²)

    def _frames(self, x: torch.Tensor) -> torch.Tensor:
        # x: (N, 3, H, W) → (N, C_out, H/8, W/8) for three stride-2 levels
        x = F.silu(self.conv_in(to_memory_format(x, self.channels_last)))
        for conv in self.blocks:
            x = F.silu(conv(x))
        return self.conv_out(x)

    def forward(self, landmarks: torch.Tensor, frames_per_chunk: int | None = None) -> torch.Tensor:
        """landmarks (B, 3, F, H, W) in [0, 1] → (B, C_out, F, H/8, W/8). At most ``frames_per_chunk`` frames go
        through the convs at once (bounds the memory of long clips; same result)."""
        b, c, f, h, w = landmarks.shape
        use_channels_last(self, self.conv_in.weight, self.channels_last)
        x = landmarks.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w)  # frames folded into the batch, (b f) order
        step = frames_per_chunk or b * f
        out = torch.cat([self._frames(x[i : i + step]) for i in range(0, b * f, step)])
        return out.reshape(b, f, *out.shape[1:]).permute(0, 2, 1, 3, 4)
