"""The denoising UNet3D: the SD-1.x UNet applied per frame, a motion module after every layer, reference attention.

Layout (official keys): CrossAttnDown×3 + Down, mid CrossAttn, Up + CrossAttnUp×3; motion modules after every
spatial transformer (cross-attention blocks) and after every resnet (plain blocks), 21 in all for SD-1.x. The
landmark guider's features are added right after ``conv_in``; the CLIP states go through the UNet's own
``clip_fc``. Internally frames are folded into the batch, (B·F, C, h, w) with row ``b·F + f``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import ProjectedContext, ProjectedReference
from .blocks import build_unet_body, timestep_embedding
from .config import UNet3DConfig
from .motion import check_window
from .speed import SpeedOptions, set_matmul_projections, to_memory_format, use_channels_last


@dataclass(frozen=True, eq=False)
class PreparedConditions:
    """The conditions of UNet3D calls, routed to the layers (``UNet3D.prepare``): per block (down, mid, up) one entry
    per spatial transformer — the cross-attention context (``ProjectedContext`` or the ``clip_fc`` output) and the
    reference (``ProjectedReference``, the raw ReferenceNet feature, or nothing)."""

    contexts: tuple
    references: tuple
    mask: tuple[bool, ...] | None
    speed: SpeedOptions


class UNet3D(nn.Module):
    def __init__(self, cfg: UNet3DConfig):
        super().__init__()
        self.config = cfg
        u, motion = cfg.unet, cfg.motion
        build_unet_body(self, u, motion)
        widths = u.block_out_channels
        self.conv_norm_out = nn.GroupNorm(u.norm_num_groups, widths[0], eps=u.norm_eps)
        self.conv_out = nn.Conv2d(widths[0], u.out_channels, kernel_size=3, padding=1)
        self.speed = SpeedOptions()  # the exact speed-ups a call uses unless ``prepare`` was given others

    def prepare(
        self,
        encoder_hidden_states: torch.Tensor,
        reference_features: Sequence[torch.Tensor] | None = None,
        reference_mask: Sequence[bool] | torch.Tensor | None = None,
        speed: SpeedOptions | None = None,
        *,
        project: bool = True,
    ) -> PreparedConditions:
        """The conditions of ``forward`` (same arguments), ready for any number of calls: ``clip_fc`` applied and,
        with ``project``, every layer's reference keys/values and context keys/values projected once
        (``ProjectedReference``/``ProjectedContext``); with ``speed.constant_uncond`` the rows of
        ``encoder_hidden_states`` whose tokens are all equal get their constant cross-attention output."""
        speed = self.speed if speed is None else speed
        context = self.clip_fc(encoder_hidden_states)  # (B | 1, L, D): shared by the frames of a row
        if speed.constant_uncond:
            uniform = tuple(bool((row == row[:1]).all()) for row in encoder_hidden_states)
        else:
            uniform = (False,) * encoder_hidden_states.shape[0]
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        routed = self._route(reference_features)
        contexts, references = [], []
        for block, refs in zip(blocks, routed):
            layers = [attention.transformer_blocks[0] for attention in block.attentions or ()]
            if project or any(uniform):
                contexts.append(tuple(ProjectedContext.of(layer.attn2, context, uniform) for layer in layers))
            else:
                contexts.append(context)
            if project and refs:
                refs = tuple(ProjectedReference.of(layer.attn1, ref) for layer, ref in zip(layers, refs))
            references.append(refs)
        mask = _as_mask(reference_mask, len(reference_mask)) if reference_mask is not None else None
        return PreparedConditions(tuple(contexts), tuple(references), mask, speed)

    def forward(
        self,
        sample: torch.Tensor,
        timestep,
        encoder_hidden_states: torch.Tensor | None = None,
        landmark_features: torch.Tensor | None = None,
        reference_features: Sequence[torch.Tensor] | None = None,
        reference_mask: Sequence[bool] | torch.Tensor | None = None,
        *,
        conditions: PreparedConditions | None = None,
    ) -> torch.Tensor:
        """One denoiser call on a window of frames → the model output (v-prediction for FYE), (B, 4, F, h, w).

        - ``sample`` (B, 4, F, h, w): noisy latents, F ≤ ``config.motion.max_frames`` (32) or ValueError.
        - ``timestep``: number, 0-d, (1,) or (B,) tensor.
        - ``encoder_hidden_states`` (B | 1, L, 1024): CLIP ``last_hidden_state`` (``clip_fc`` is applied here);
          zeros for the CFG uncond row.
        - ``landmark_features`` (B | 1, 320, F, h, w) or None: the landmark guider's output.
        - ``reference_features``: the ReferenceNet's 16 features (1 | B, h_i·w_i, C_i) in its output order, or None.
          Routed in order: pairs to down_blocks 0..2, one to the mid block, triples to up_blocks 1..3.
        - ``reference_mask``: B booleans (list or tensor) or None (= all True). Rows marked False run plain
          self-attention and never see the reference. The official CFG call ([uncond, cond] with
          ``set_do_classifier_free_guidance(True)``) is ``reference_mask=(False, True)``; a batch-1 reference
          (the ReferenceNet on the cond row only) then gives the same result.
        - ``conditions``: instead of the last three and ``encoder_hidden_states``, their ``prepare``d form (projected
          once for all the calls of a sampling run).
        """
        b, _, f, h, w = sample.shape
        check_window(f, self.config.motion.max_frames)
        if conditions is None:
            if encoder_hidden_states is None:
                raise ValueError("UNet3D needs encoder_hidden_states or prepared conditions")
            conditions = self.prepare(encoder_hidden_states, reference_features, reference_mask, project=False)
        elif encoder_hidden_states is not None or reference_features is not None or reference_mask is not None:
            raise ValueError("pass either prepared conditions or encoder_hidden_states/reference_*, not both")
        mask = conditions.mask
        if mask is not None and len(mask) != b:
            raise ValueError(f"reference_mask has {len(mask)} entries for a batch of {b}")
        contexts, routed, nhwc = conditions.contexts, conditions.references, conditions.speed.channels_last
        use_channels_last(self, self.conv_in.weight, nhwc)
        set_matmul_projections(self, conditions.speed.matmul_projections)

        temb = timestep_embedding(self.time_proj, self.time_embedding, timestep, b, sample.device)
        temb = temb.repeat_interleave(f, dim=0)  # (B·F, T)

        x = self.conv_in(to_memory_format(sample.transpose(1, 2).flatten(0, 1), nhwc))  # (B·F, C0, h, w)
        if landmark_features is not None:
            x = to_memory_format((x.unflatten(0, (b, f)) + landmark_features.transpose(1, 2)).flatten(0, 1), nhwc)

        skips = [x]
        down = len(self.down_blocks)
        for block, context, refs in zip(self.down_blocks, contexts, routed):
            x, block_skips = block(x, temb, context, f, refs, mask)
            skips += block_skips
        x = self.mid_block(x, temb, contexts[down], f, routed[down], mask)
        for block, context, refs in zip(self.up_blocks, contexts[down + 1 :], routed[down + 1 :]):
            x = block(x, skips, temb, context, f, refs, mask)

        x = self.conv_out(F.silu(self.conv_norm_out(x)))  # (B·F, 4, h, w)
        return x.unflatten(0, (b, f)).transpose(1, 2).contiguous()

    def _route(self, reference_features: Sequence[torch.Tensor] | None) -> list[tuple[torch.Tensor, ...]]:
        """One tuple of features per block (down blocks, mid, up blocks), each as long as its transformer count."""
        blocks = [*self.down_blocks, self.mid_block, *self.up_blocks]
        if reference_features is None:
            return [()] * len(blocks)
        counts = [block.num_transformers for block in blocks]
        if len(reference_features) != sum(counts):
            raise ValueError(f"{len(reference_features)} reference features for {sum(counts)} spatial transformers")
        routed, start = [], 0
        for n in counts:
            routed.append(tuple(reference_features[start : start + n]))
            start += n
        return routed


def _as_mask(mask: Sequence[bool] | torch.Tensor | None, batch: int) -> tuple[bool, ...] | None:
    if mask is None:
        return None
    mask = tuple(bool(m) for m in (mask.tolist() if isinstance(mask, torch.Tensor) else mask))
    if len(mask) != batch:
        raise ValueError(f"reference_mask has {len(mask)} entries for a batch of {batch}")
    return mask
