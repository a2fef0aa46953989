"""Padding helpers for the varlen functions, behaving like ``flash_attn.bert_padding``."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """``x[indices]`` along the first axis (differentiable; a gather, so the backward is a scatter)."""
    return x[indices]


def unpad_input(hidden_states: torch.Tensor, attention_mask: torch.Tensor, unused_mask: torch.Tensor | None = None):
    """``(batch, seqlen, ...)`` and a ``(batch, seqlen)`` mask (1 = keep) ->
    ``(hidden_unpadded (total, ...), indices (total,), cu_seqlens (batch + 1,) int32,
    max_seqlen_in_batch (int), seqused (batch,) int32)``.

    ``unused_mask`` (optional, same shape) marks tokens that are packed but not attended to;
    they count in ``cu_seqlens`` and not in ``seqused``, as in flash-attn.
    """
    all_masks = attention_mask + unused_mask if unused_mask is not None else attention_mask
    seqlens = all_masks.sum(dim=-1, dtype=torch.int32)
    used = attention_mask.sum(dim=-1, dtype=torch.int32)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()
    max_seqlen = int(seqlens.max().item()) if seqlens.numel() else 0
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])
    return index_first_axis(flat, indices), indices, cu_seqlens, max_seqlen, used


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of ``unpad_input``: ``(total, ...)`` -> ``(batch, seqlen, ...)`` with zeros at padding."""
    out = hidden_states.new_zeros((batch * seqlen, *hidden_states.shape[1:]))
    out = out.index_put((indices,), hidden_states)
    return out.reshape(batch, seqlen, *hidden_states.shape[1:])
