"""The tiled algorithm in plain PyTorch: the CPU backend and the readable version of the kernels.

Forward is FlashAttention's Algorithm 1 (online softmax over key blocks, never materializing
the N x N matrix: memory is O(N) beyond a BLOCK_M x BLOCK_N tile); backward is Algorithm 2
(recompute P from the saved log-sum-exp). Loops, block ranges and masks follow the Triton
kernels one for one (``kernels/fwd.py``, ``kernels/bwd.py``), computed in float32, with every
(batch, head) of a tile handled at once. Layout as the public API: ``(batch, seq, heads, dim)``.
"""
from __future__ import annotations

import math

import torch

BLOCK_M = 128
BLOCK_N = 128


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def kv_block_range(m_start: int, seqlen_q: int, seqlen_k: int, window_left: int, window_right: int,
                   block_m: int, block_n: int) -> tuple[int, int, int, int]:
    """Python twin of ``kernels.block_info.kv_block_range`` (see there for the rule)."""
    diag = seqlen_k - seqlen_q
    m_last = min(m_start + block_m, seqlen_q) - 1
    lo = max(m_start + diag - window_left, 0) // block_n * block_n
    hi = min(m_last + diag + window_right + 1, seqlen_k)
    full_lo = _cdiv(max(m_last + diag - window_left, lo), block_n) * block_n
    full_hi = max(min(m_start + diag + window_right + 1, seqlen_k), 0) // block_n * block_n
    if full_hi <= full_lo:
        full_lo = full_hi = max(hi, lo)
    return lo, full_lo, full_hi, hi


def q_block_range(n_start: int, seqlen_q: int, seqlen_k: int, window_left: int, window_right: int,
                  block_m: int, block_n: int) -> tuple[int, int, int, int]:
    """Python twin of ``kernels.block_info.q_block_range``."""
    diag = seqlen_k - seqlen_q
    n_last = min(n_start + block_n, seqlen_k) - 1
    lo = max(n_start - diag - window_right, 0) // block_m * block_m
    hi = min(n_last - diag + window_left + 1, seqlen_q)
    full_lo = _cdiv(max(n_last - diag - window_right, lo), block_m) * block_m
    full_hi = max(min(n_start - diag + window_left + 1, seqlen_q), 0) // block_m * block_m
    if full_hi <= full_lo:
        full_lo = full_hi = max(hi, lo)
    return lo, full_lo, full_hi, hi


def visible(rows: torch.Tensor, cols: torch.Tensor, seqlen_q: int, seqlen_k: int,
            window_left: int, window_right: int) -> torch.Tensor:
    """``[len(rows), len(cols)]`` bool: query row sees key column (``kernels.block_info.visible``)."""
    rel = cols[None, :] - (rows[:, None] + seqlen_k - seqlen_q)
    return (rel >= -window_left) & (rel <= window_right) & (cols[None, :] < seqlen_k)


def _block_steps(lo: int, full_lo: int, full_hi: int, hi: int, block: int):
    """Yield ``(start, masked)`` for the three ranges, in the kernels' order."""
    for start in range(full_lo, full_hi, block):
        yield start, False
    for start in range(lo, full_lo, block):
        yield start, True
    for start in range(full_hi, hi, block):
        yield start, True


def _heads_first(x: torch.Tensor, group: int = 1) -> torch.Tensor:
    """``(b, s, h, d)`` -> float32 ``(b, h * group, s, d)``; ``group`` repeats kv heads for GQA."""
    x = x.transpose(1, 2).float()
    return x.repeat_interleave(group, dim=1) if group > 1 else x


def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float,
             window_left: int, window_right: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 1. Returns out ``(b, sq, h, dv)`` in q's dtype and lse ``(b, h, sq)`` float32."""
    batch, seqlen_q, nheads, _ = q.shape
    seqlen_k, nheads_k, head_dim_v = v.shape[1], v.shape[2], v.shape[3]
    group = nheads // nheads_k
    qh, kh, vh = _heads_first(q), _heads_first(k, group), _heads_first(v, group)
    out = torch.empty((batch, nheads, seqlen_q, head_dim_v), dtype=torch.float32, device=q.device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=q.device)
    for m_start in range(0, seqlen_q, BLOCK_M):
        rows = torch.arange(m_start, min(m_start + BLOCK_M, seqlen_q), device=q.device)
        q_blk = qh[:, :, rows] * softmax_scale                       # [b, h, BM, d]
        row_max = torch.full(q_blk.shape[:-1], -math.inf, device=q.device)
        row_sum = torch.zeros(q_blk.shape[:-1], device=q.device)
        acc = torch.zeros((*q_blk.shape[:-1], head_dim_v), device=q.device)
        ranges = kv_block_range(m_start, seqlen_q, seqlen_k, window_left, window_right, BLOCK_M, BLOCK_N)
        for n_start, masked in _block_steps(*ranges, BLOCK_N):
            cols = torch.arange(n_start, min(n_start + BLOCK_N, seqlen_k), device=q.device)
            s = q_blk @ kh[:, :, cols].transpose(-1, -2)               # [b, h, BM, BN]
            if masked:
                s = s.masked_fill(~visible(rows, cols, seqlen_q, seqlen_k, window_left, window_right), -math.inf)
            new_max = torch.maximum(row_max, s.amax(-1))
            shift = new_max.masked_fill(new_max == -math.inf, 0.0)    # rows that saw nothing yet
            p = torch.exp(s - shift[..., None])
            alpha = torch.exp(row_max - shift)
            row_sum = row_sum * alpha + p.sum(-1)
            acc = acc * alpha[..., None] + p @ vh[:, :, cols]
            row_max = new_max
        empty = row_sum == 0
        out[:, :, rows] = acc / row_sum.masked_fill(empty, 1.0)[..., None]
        lse[:, :, rows] = torch.where(empty, math.inf, row_max + torch.log(row_sum))
    return out.transpose(1, 2).to(q.dtype).contiguous(), lse


def attn_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, dlse: torch.Tensor | None, softmax_scale: float,
             window_left: int, window_right: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Algorithm 2, organised like the dK/dV kernel: outer loop over key blocks, inner over the
    query blocks that see them; dQ accumulates in an fp32 buffer (on the GPU it has its own pass)."""
    batch, seqlen_q, nheads, _ = q.shape
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    group = nheads // nheads_k
    qh, kh, vh = _heads_first(q), _heads_first(k, group), _heads_first(v, group)
    doh, oh = _heads_first(dout), _heads_first(out)
    delta = (doh * oh).sum(-1)                                          # [b, h, sq]
    if dlse is not None:
        delta = delta - dlse.float()
    dq = torch.zeros_like(qh)
    dk = torch.zeros_like(kh)
    dv = torch.zeros(vh.shape, device=q.device)
    for n_start in range(0, seqlen_k, BLOCK_N):
        cols = torch.arange(n_start, min(n_start + BLOCK_N, seqlen_k), device=q.device)
        k_blk, v_blk = kh[:, :, cols], vh[:, :, cols]
        ranges = q_block_range(n_start, seqlen_q, seqlen_k, window_left, window_right, BLOCK_M, BLOCK_N)
        for m_start, masked in _block_steps(*ranges, BLOCK_M):
            rows = torch.arange(m_start, min(m_start + BLOCK_M, seqlen_q), device=q.device)
            q_blk, do_blk = qh[:, :, rows], doh[:, :, rows]
            p = torch.exp(softmax_scale * (q_blk @ k_blk.transpose(-1, -2)) - lse[:, :, rows, None])
            if masked:
                p = p.masked_fill(~visible(rows, cols, seqlen_q, seqlen_k, window_left, window_right), 0.0)
            dv[:, :, cols] += p.transpose(-1, -2) @ do_blk
            ds = p * (do_blk @ v_blk.transpose(-1, -2) - delta[:, :, rows, None])
            dk[:, :, cols] += ds.transpose(-1, -2) @ q_blk
            dq[:, :, rows] += ds @ k_blk
    dq, dk = dq * softmax_scale, dk * softmax_scale
    if group > 1:  # sum each GQA group's query heads into its kv head
        dk = dk.unflatten(1, (nheads_k, group)).sum(2)
        dv = dv.unflatten(1, (nheads_k, group)).sum(2)
    return tuple(g.transpose(1, 2).to(q.dtype).contiguous() for g in (dq, dk, dv))
