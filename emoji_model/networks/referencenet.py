"""The ReferenceNet: the SD 2-D UNet run once on the clean reference latent, handing out its transformers' ``norm1``.

The official runs it at timestep 0 with the CLIP context (through its own ``clip_fc``) and keeps, from every spatial
transformer block, the LayerNorm'd input of its self-attention: 16 features for SD-1.x, in call order (down 6, mid 1,
up 9). The last transformer (``up_blocks.3.attentions.2``) computes only ``norm1``, and there is no ``conv_norm_out``
/ ``conv_out``, so the state dict has exactly the official keys (666 full size) and nothing past the last feature
is computed. Under CFG the official runs it on [uncond, cond], but the uncond features are never read: batch 1
(the cond row) is enough.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import build_unet_body, timestep_embedding
from .config import UNetConfig
from .speed import SpeedOptions, set_matmul_projections, to_memory_format, use_channels_last


class ReferenceNet(nn.Module):
    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.config = cfg
        build_unet_body(self, cfg, motion=None, norm1_only_last=True)
        self.speed = SpeedOptions()  # only ``channels_last`` and ``matmul_projections`` apply here

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """sample (B, 4, h, w) clean reference latent, timestep (0 in the pipeline), encoder_hidden_states
        (B, L, clip_dim) CLIP ``last_hidden_state`` → 16 norm1 features (B, h_i·w_i, C_i): down 6, mid 1, up 9."""
        context = self.clip_fc(encoder_hidden_states)  # (B, L, cross_attention_dim)
        temb = timestep_embedding(self.time_proj, self.time_embedding, timestep, sample.shape[0], sample.device)
        features: list[torch.Tensor] = []
        use_channels_last(self, self.conv_in.weight, self.speed.channels_last)
        set_matmul_projections(self, self.speed.matmul_projections)
        x = self.conv_in(to_memory_format(sample, self.speed.channels_last))
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x, temb, context, features=features)
            skips += block_skips
        x = self.mid_block(x, temb, context, features=features)
        for block in self.up_blocks:
            x = block(x, skips, temb, context, features=features)
        return tuple(features)
