"""Attention processors of the spatial transformers: reference self-attention and frame-shared cross-attention.

Both are diffusers-style processors (``processor(attn, hidden_states, encoder_hidden_states, attention_mask, ...)``)
for a diffusers ``Attention`` layer that holds the weights; extra inputs come in as call arguments through
``Attention.forward``. Frames are folded into the batch, frame-major within each batch row: row ``b·F + f``.
SDPA throughout.

What stays the same over the UNet calls of a sampling run can come in already projected (``UNet3D.prepare``):
``ProjectedReference`` (a layer's reference keys/values) for ``attn1`` and ``ProjectedContext`` (a layer's context
keys/values, and the one output of rows whose context tokens are all equal) for ``attn2``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention


@dataclass(frozen=True, eq=False)
class ProjectedReference:
    """A layer's reference tokens through its ``attn1.to_k``/``to_v``: k, v (1 | B, M, C'), projected once."""

    k: torch.Tensor
    v: torch.Tensor

    @property
    def shape(self) -> torch.Size:
        return self.k.shape

    def __getitem__(self, rows) -> ProjectedReference:
        return ProjectedReference(self.k[rows], self.v[rows])

    @classmethod
    def of(cls, attn: Attention, reference: torch.Tensor) -> ProjectedReference:
        return cls(attn.to_k(reference), attn.to_v(reference))


@dataclass(frozen=True, eq=False)
class ProjectedContext:
    """A layer's cross-attention context (B rows), projected once.

    ``k``/``v`` (B, L, C') hold the rows that vary over their tokens (zeros elsewhere, never read); ``constant[b]``
    is, for a row whose L context tokens are all equal, the layer's whole ``attn2`` output (1, C): identical keys give
    every query the same uniform softmax, so the output is that one value row through ``to_out`` — the CFG uncond row
    (all-zero CLIP states, so ``clip_fc`` gives its bias in every token) costs one token per layer instead of F·N
    queries against 257 keys. None for the other rows.
    """

    k: torch.Tensor | None
    v: torch.Tensor | None
    constant: tuple[torch.Tensor | None, ...]

    @classmethod
    def of(cls, attn: Attention, context: torch.Tensor, uniform_rows: Sequence[bool]) -> ProjectedContext:
        """``context`` (B, L, D) after ``clip_fc``; ``uniform_rows``: B booleans, True where all L tokens are equal."""
        varying = [b for b, uniform in enumerate(uniform_rows) if not uniform]
        k = v = None
        if varying:
            rows = context if len(varying) == len(uniform_rows) else context[varying]
            k, v = attn.to_k(rows), attn.to_v(rows)
            if len(varying) != len(uniform_rows):  # back to B rows, so that row b is k[b]
                k = k.new_zeros(len(uniform_rows), *k.shape[1:]).index_copy(0, torch.tensor(varying, device=k.device), k)
                v = v.new_zeros(len(uniform_rows), *v.shape[1:]).index_copy(0, torch.tensor(varying, device=v.device), v)
        constant = tuple(_project_out(attn, attn.to_v(context[b, :1])) if uniform else None
                         for b, uniform in enumerate(uniform_rows))
        return cls(k, v, constant)


def _split_heads(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    # (N, T, H·D) → (N, H, T, D)
    return x.unflatten(-1, (attn.heads, -1)).transpose(1, 2)


def _attend(attn: Attention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Multi-head SDPA: q (N, Tq, H·D), k/v (N, Tk, H·D) → (N, Tq, H·D)."""
    out = F.scaled_dot_product_attention(
        _split_heads(attn, q), _split_heads(attn, k), _split_heads(attn, v), scale=attn.scale
    )
    return out.transpose(1, 2).flatten(2)


def _project_out(attn: Attention, x: torch.Tensor) -> torch.Tensor:
    return attn.to_out[1](attn.to_out[0](x))  # linear, dropout


def _per_frame(x: torch.Tensor, rows: int, frames: int) -> torch.Tensor:
    # (1 | rows, M, C) → (rows·F, M, C): one row's tokens for each of its frames
    return x.unsqueeze(1).expand(rows, frames, *x.shape[1:]).flatten(0, 1)


def _reference_rows(reference: torch.Tensor | None, mask: Sequence[bool] | None, batch: int) -> list[int]:
    """The batch rows that attend to the reference."""
    if reference is None:
        return []
    if reference.shape[0] not in (1, batch):
        raise ValueError(f"reference batch {reference.shape[0]} fits neither 1 nor the batch {batch}")
    if mask is None:
        return list(range(batch))
    if len(mask) != batch:
        raise ValueError(f"reference_mask has {len(mask)} entries for a batch of {batch}")
    return [b for b in range(batch) if mask[b]]


class ReferenceAttnProcessor:
    """``attn1`` of the UNet3D's spatial transformers (the official ``attention_mode: SpatialAtten``).

    Each frame attends to its own tokens and to the reference image's: q = norm1(x), k = v = [norm1(x); reference].
    Call arguments (through ``Attention.forward``):

    - ``hidden_states`` (B·F, N, C): norm1(x) of every frame.
    - ``reference`` (1 | B, M, C) or None: this layer's ReferenceNet ``norm1`` tokens; one row serves all frames of
      its batch row, a batch of 1 serves every row. None: plain self-attention.
    - ``reference_mask``: B booleans or None (= all True). False rows run plain self-attention: the official CFG
      uncond half (golden quirk 7). Those rows never pay for reference tokens, and the reference keys/values are
      projected once per batch row, not once per frame.
    - ``frames``: F.
    """

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        reference: torch.Tensor | None = None,
        reference_mask: Sequence[bool] | None = None,
        frames: int = 1,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("ReferenceAttnProcessor is a self-attention: no encoder_hidden_states, no mask")
        n, t, _ = hidden_states.shape
        batch = n // frames
        q, k, v = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)  # (B·F, N, C')
        rows = _reference_rows(reference, reference_mask, batch)
        if not rows:
            return _project_out(attn, _attend(attn, q, k, v))

        if not isinstance(reference, ProjectedReference):
            if reference.shape[0] != 1 and len(rows) != batch:
                reference = reference[rows]
            reference = ProjectedReference.of(attn, reference)
        elif reference.shape[0] != 1 and len(rows) != batch:
            reference = reference[rows]
        ref_k = _per_frame(reference.k, len(rows), frames)  # (R·F, M, C')
        ref_v = _per_frame(reference.v, len(rows), frames)
        if len(rows) == batch:
            out = _attend(attn, q, torch.cat([k, ref_k], dim=1), torch.cat([v, ref_v], dim=1))
            return _project_out(attn, out)

        # row by row (slices, no gathers): the rows off the mask run plain self-attention
        outs, r = [], 0
        for b in range(batch):
            span = slice(b * frames, (b + 1) * frames)
            if b in rows:
                ks, vs = ref_k[r * frames : (r + 1) * frames], ref_v[r * frames : (r + 1) * frames]
                outs.append(_attend(attn, q[span], torch.cat([k[span], ks], dim=1), torch.cat([v[span], vs], dim=1)))
                r += 1
            else:
                outs.append(_attend(attn, q[span], k[span], v[span]))
        return _project_out(attn, torch.cat(outs))


class SharedContextAttnProcessor:
    """``attn2``: cross-attention to a context shared by all frames of a batch row.

    ``hidden_states`` (B·F, N, C) and ``encoder_hidden_states`` (B, L, D): the queries of a row's F frames are
    attended as one sequence of F·N queries against that row's keys/values (queries do not interact, so this is
    exactly per-frame attention), and the context is projected once per row instead of once per frame. With
    ``B·F == B`` (F = 1) it is ordinary cross-attention. ``encoder_hidden_states`` may be a ``ProjectedContext``
    (projected once per sampling run; constant rows answered without attention).
    """

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        if attention_mask is not None:
            raise ValueError("SharedContextAttnProcessor takes no attention mask")
        if isinstance(encoder_hidden_states, ProjectedContext):
            return _projected_cross_attention(attn, hidden_states, encoder_hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        n, t, _ = hidden_states.shape
        batch = context.shape[0]
        if n % batch:
            raise ValueError(f"{n} query rows do not split into {batch} context rows")
        q = attn.to_q(hidden_states).reshape(batch, (n // batch) * t, -1)  # (B, F·N, C')
        out = _attend(attn, q, attn.to_k(context), attn.to_v(context))  # (B, F·N, C')
        return _project_out(attn, out.reshape(n, t, -1))


def _projected_cross_attention(attn: Attention, hidden_states: torch.Tensor, context: ProjectedContext) -> torch.Tensor:
    """``attn2`` against a ``ProjectedContext``: hidden_states (B·F, N, C) → (B·F, N, C)."""
    n, t, _ = hidden_states.shape
    batch = len(context.constant)
    if n % batch:
        raise ValueError(f"{n} query rows do not split into {batch} context rows")
    per = n // batch
    outs = []
    for b, constant in enumerate(context.constant):
        if constant is not None:
            outs.append(constant.to(hidden_states.dtype).expand(per, t, -1))
            continue
        q = attn.to_q(hidden_states[b * per : (b + 1) * per]).reshape(1, per * t, -1)  # (1, F·N, C')
        out = _attend(attn, q, context.k[b : b + 1], context.v[b : b + 1])
        outs.append(_project_out(attn, out.reshape(per, t, -1)))
    return outs[0].contiguous() if batch == 1 else torch.cat(outs)
