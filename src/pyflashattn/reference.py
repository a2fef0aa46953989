"""Dense references: standard attention as the papers start from (materializes the N x N matrix).

``attention_ref`` computes in float64 (or any dtype asked for) and is what the tests and the
benchmark's correctness column compare against. It shares no code with the kernels or the
tiled CPU path, only the visibility rule, written out again here as a dense mask.
"""
from __future__ import annotations

import math

import torch


def dense_mask(seqlen_q: int, seqlen_k: int, window_left: int, window_right: int,
               device=None) -> torch.Tensor:
    """``[seqlen_q, seqlen_k]`` bool, bottom-right aligned; ``-1`` means an unbounded side."""
    i = torch.arange(seqlen_q, device=device)[:, None]
    j = torch.arange(seqlen_k, device=device)[None, :]
    rel = j - (i + seqlen_k - seqlen_q)
    keep = torch.ones(seqlen_q, seqlen_k, dtype=torch.bool, device=device)
    if window_left >= 0:
        keep &= rel >= -window_left
    if window_right >= 0:
        keep &= rel <= window_right
    return keep


def attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float | None = None,
                  causal: bool = False, window_size: tuple[int, int] = (-1, -1),
                  dtype: torch.dtype | None = torch.float64, softcap: float = 0.0,
                  alibi_slopes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard attention in the flash-attn layout. q ``(b, sq, h, d)``, k/v ``(b, sk, hk, d)``.

    Computes in ``dtype`` (float64 by default; ``None`` keeps the inputs' dtype, which is how
    "PyTorch's same-dtype attention" is measured). Returns out ``(b, sq, h, dv)`` in ``dtype``
    and lse ``(b, h, sq)``; rows that see no key give 0 and lse ``+inf`` (flash-attn's rule).
    """
    dtype = dtype or q.dtype
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    group = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2).to(dtype)
    kh = k.transpose(1, 2).to(dtype).repeat_interleave(group, dim=1)
    vh = v.transpose(1, 2).to(dtype).repeat_interleave(group, dim=1)
    left, right = window_size
    if causal:
        right = 0
    keep = dense_mask(q.shape[1], k.shape[1], left, right, device=q.device)
    scores = (qh @ kh.transpose(-1, -2)) * scale
    if softcap > 0:
        scores = softcap * torch.tanh(scores / softcap)
    if alibi_slopes is not None:
        i = torch.arange(q.shape[1], device=q.device)[:, None]
        j = torch.arange(k.shape[1], device=q.device)[None, :]
        distance = (i + k.shape[1] - q.shape[1] - j).abs().to(dtype)
        slopes = alibi_slopes.to(dtype).expand(q.shape[0], q.shape[2])[:, :, None, None]
        scores = scores - slopes * distance
    scores = scores.masked_fill(~keep, -math.inf)
    lse = torch.logsumexp(scores.float() if dtype in (torch.float16, torch.bfloat16) else scores, dim=-1)
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully masked rows -> 0
    out = probs @ vh
    lse = lse.masked_fill(lse == -math.inf, math.inf)
    return out.transpose(1, 2), lse


def varlen_attention_ref(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                         cu_seqlens_k: torch.Tensor, alibi_slopes: torch.Tensor | None = None,
                         **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """``attention_ref`` per packed sequence: q ``(total_q, h, d)`` -> out ``(total_q, h, dv)``,
    lse ``(h, total_q)``."""
    outs, lses = [], []
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    for i in range(len(cq) - 1):
        slopes = alibi_slopes[i] if alibi_slopes is not None and alibi_slopes.dim() == 2 else alibi_slopes
        o, lse = attention_ref(q[None, cq[i]:cq[i + 1]], k[None, ck[i]:ck[i + 1]], v[None, ck[i]:ck[i + 1]],
                               alibi_slopes=slopes, **kw)
        outs.append(o[0])
        lses.append(lse[0])
    return torch.cat(outs), torch.cat(lses, dim=-1)


def standard_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool = False,
                       softmax_scale: float | None = None) -> torch.Tensor:
    """The unfused baseline of the papers (matmul, mask, softmax, matmul) in the inputs' dtype,
    ``(b, h, s, d)`` layout, no GQA: what the benchmark calls "standard"."""
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(q.shape[-1])
    scores = (q @ k.transpose(-1, -2)) * scale
    if causal:
        keep = dense_mask(q.shape[-2], k.shape[-2], -1, 0, device=q.device)
        scores = scores.masked_fill(~keep, -math.inf)
    return torch.softmax(scores.float(), dim=-1).to(q.dtype) @ v
