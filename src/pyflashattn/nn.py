"""``torch.nn`` modules for people who write their own models.

``MultiheadAttention`` is self-attention with one fused QKV projection, optional grouped-query
heads (GQA/MQA), optional rotary position embeddings and a causal option, computed by
``flash_attn_func`` (the N x N score matrix is never stored). Inputs are batch-first
``(batch, seq, embed_dim)``. The module traces under ``torch.compile(fullgraph=True)``: the
attention is one custom op per pass and everything else is plain tensor code.

Unlike ``torch.nn.MultiheadAttention`` it is self-attention only (one input, not query/key/value),
has no attention dropout and no ``attn_mask`` (use ``causal``/``window_size``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from . import validate
from .interface import flash_attn_func

__all__ = ["MultiheadAttention", "RotaryEmbedding", "apply_rotary"]


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate ``x`` ``(batch, seq, heads, head_dim)`` by angles given as ``cos``/``sin``
    ``(seq, head_dim)`` or ``(batch, seq, head_dim)``; computed in float32, returned in x's dtype.

    The "rotate half" pairing (dimension ``i`` with ``i + head_dim / 2``) of GPT-NeoX and Llama,
    so weights from those models keep their meaning.
    """
    if cos.dim() == 2:
        cos, sin = cos[None], sin[None]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]  # broadcast over heads
    xf = x.float()
    return (xf * cos + _rotate_half(xf) * sin).to(x.dtype)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoFormer), the angles ``position * base ** (-2i / dim)``.

    Args:
        dim: rotated size, the head dimension (even).
        base: the frequency base (10000 in RoFormer, GPT-NeoX and Llama 2).

    ``forward(positions)`` with integer ``positions`` ``(seq,)`` or ``(batch, seq)`` returns
    ``(cos, sin)``, each ``(..., seq, dim)`` float32. Nothing is cached, so any length works and
    a compiled graph does not depend on a maximum length.
    """

    inv_freq: Tensor

    def __init__(self, dim: int, base: float = 10000.0, device: Optional[torch.device] = None):
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"RotaryEmbedding dim must be a positive even number (the head dim), got {dim}")
        self.dim, self.base = dim, float(base)
        inv_freq = 1.0 / (self.base ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        freqs = positions.to(torch.float32)[..., None] * self.inv_freq  # [..., seq, dim / 2]
        emb = torch.cat((freqs, freqs), dim=-1)  # [..., seq, dim]
        return emb.cos(), emb.sin()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base:g}"


class MultiheadAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, computed by pyflashattn.

    Args:
        embed_dim: model width ``E``: input and output size.
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads ``Hk`` (GQA; 1 is MQA); ``H % Hk == 0``. Default ``H``.
        head_dim: per-head size ``D``; default ``E // H`` (then ``E`` must divide by ``H``).
        causal: each position sees itself and earlier positions only.
        window_size: ``(left, right)`` local attention, ``-1`` unbounded (as ``flash_attn_func``).
        bias: biases in the QKV and output projections.
        rotary: rotate q and k by position (``RotaryEmbedding``, Llama's convention).
        rotary_base: the rotary frequency base.
        softmax_scale: default ``1 / sqrt(D)``.

    Shapes: ``forward(x)`` takes ``x`` ``(batch, seq, E)`` and returns ``(batch, seq, E)``.
    ``qkv`` is ``Linear(E, (H + 2 * Hk) * D)`` laid out ``[q heads | k heads | v heads]``;
    ``out_proj`` is ``Linear(H * D, E)``.

    Subclasses can override ``attend(q, k, v)`` (all ``(batch, seq, heads, D)``) to swap the
    attention computation, e.g. to compare against another kernel with identical weights.
    """

    def __init__(self, embed_dim: int, num_heads: int, *, num_kv_heads: Optional[int] = None,
                 head_dim: Optional[int] = None, causal: bool = False,
                 window_size: tuple[int, int] = (-1, -1), bias: bool = True, rotary: bool = False,
                 rotary_base: float = 10000.0, softmax_scale: Optional[float] = None,
                 device: Optional[torch.device] = None, dtype: Optional[torch.dtype] = None):
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a positive multiple of num_kv_heads ({num_kv_heads})")
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(f"embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads}), "
                                 "or pass head_dim")
            head_dim = embed_dim // num_heads
        validate.check_flags(causal=causal, bias=bias, rotary=rotary)
        validate.check_window(window_size)
        if rotary and head_dim % 2:
            raise ValueError(f"rotary needs an even head_dim, got {head_dim}")
        self.embed_dim, self.num_heads, self.num_kv_heads, self.head_dim = embed_dim, num_heads, num_kv_heads, head_dim
        self.causal, self.window_size, self.softmax_scale = causal, tuple(window_size), softmax_scale
        factory = {"device": device, "dtype": dtype}
        self.qkv = nn.Linear(embed_dim, (num_heads + 2 * num_kv_heads) * head_dim, bias=bias, **factory)
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias, **factory)
        self.rotary = RotaryEmbedding(head_dim, rotary_base, device=device) if rotary else None

    def project_qkv(self, x: Tensor, positions: Optional[Tensor] = None) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` ``(batch, seq, E)`` -> q ``(batch, seq, H, D)``, k and v ``(batch, seq, Hk, D)``,
        rotary applied to q and k when enabled (``positions`` default ``0 .. seq-1``)."""
        batch, seqlen, _ = x.shape
        qkv = self.qkv(x).view(batch, seqlen, self.num_heads + 2 * self.num_kv_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=2)  # views
        if self.rotary is not None:
            if positions is None:
                positions = torch.arange(seqlen, device=x.device)
            cos, sin = self.rotary(positions)
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        return q, k, v

    def attend(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """q ``(batch, seq, H, D)``, k/v ``(batch, seq, Hk, D)`` -> ``(batch, seq, H, D)``."""
        return flash_attn_func(q, k, v, softmax_scale=self.softmax_scale, causal=self.causal,
                               window_size=self.window_size)

    def forward(self, x: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """``x`` ``(batch, seq, E)`` -> ``(batch, seq, E)``. ``positions`` (rotary only): integer
        ``(seq,)`` or ``(batch, seq)``, default ``0 .. seq-1``."""
        if x.dim() != 3 or x.shape[-1] != self.embed_dim:
            raise ValueError(f"x must be (batch, seq, {self.embed_dim}), got shape {tuple(x.shape)}")
        q, k, v = self.project_qkv(x, positions)
        out = self.attend(q, k, v)
        return self.out_proj(out.reshape(x.shape[0], x.shape[1], self.num_heads * self.head_dim))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, num_kv_heads={self.num_kv_heads}, "
                f"head_dim={self.head_dim}, causal={self.causal}")
