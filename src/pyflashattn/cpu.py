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


class _WindowSteps:
    """Which blocks a tile visits and their masks, for dense (window) attention."""

    def __init__(self, p, seqlen_q: int, seqlen_k: int):
        self.block_m, self.block_n = BLOCK_M, BLOCK_N
        self.sq, self.sk, self.left, self.right = seqlen_q, seqlen_k, p.window_left, p.window_right

    def keys(self, m_start: int, rows: torch.Tensor):
        """Forward / dQ: ``(cols, mask or None)`` for the key blocks query block ``m_start`` sees."""
        ranges = kv_block_range(m_start, self.sq, self.sk, self.left, self.right, self.block_m, self.block_n)
        for n_start, masked in _block_steps(*ranges, self.block_n):
            cols = torch.arange(n_start, min(n_start + self.block_n, self.sk), device=rows.device)
            yield cols, (visible(rows, cols, self.sq, self.sk, self.left, self.right) if masked else None)

    def queries(self, n_start: int, cols: torch.Tensor):
        """dK/dV: ``(rows, mask or None)`` for the query blocks that see key block ``n_start``."""
        ranges = q_block_range(n_start, self.sq, self.sk, self.left, self.right, self.block_m, self.block_n)
        for m_start, masked in _block_steps(*ranges, self.block_m):
            rows = torch.arange(m_start, min(m_start + self.block_m, self.sq), device=cols.device)
            yield rows, (visible(rows, cols, self.sq, self.sk, self.left, self.right) if masked else None)


class _SparseSteps:
    """The same for block-sparse attention: blocks that any (batch, head) lists, with each
    (batch, head)'s element mask (full: all True, partial: its tile, unlisted: all False)."""

    def __init__(self, p, seqlen_q: int, seqlen_k: int):
        from .block_mask import block_layout
        self.kinds, self.tile_of = block_layout(p.sparse)            # [B, H, nq, nk]
        self.tiles = p.sparse[5].bool()
        self.block_m, self.block_n = p.sparse_blocks
        self.sq, self.sk = seqlen_q, seqlen_k

    def _mask(self, qi: int, ki: int, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        kinds, tiles = self.kinds[:, :, qi, ki], self.tile_of[:, :, qi, ki]
        block = self.tiles[tiles.clamp(min=0)][..., rows - qi * self.block_m, :][..., cols - ki * self.block_n]
        full = (kinds == 2)[..., None, None]
        return full | ((kinds == 1)[..., None, None] & block)

    def keys(self, m_start: int, rows: torch.Tensor):
        qi = m_start // self.block_m
        for ki in (self.kinds[:, :, qi] > 0).flatten(0, 1).any(0).nonzero().flatten().tolist():
            cols = torch.arange(ki * self.block_n, min((ki + 1) * self.block_n, self.sk), device=rows.device)
            yield cols, self._mask(qi, ki, rows, cols)

    def queries(self, n_start: int, cols: torch.Tensor):
        ki = n_start // self.block_n
        for qi in (self.kinds[:, :, :, ki] > 0).flatten(0, 1).any(0).nonzero().flatten().tolist():
            rows = torch.arange(qi * self.block_m, min((qi + 1) * self.block_m, self.sq), device=cols.device)
            yield rows, self._mask(qi, ki, rows, cols)


def _heads_first(x: torch.Tensor, group: int = 1) -> torch.Tensor:
    """``(b, s, h, d)`` -> float32 ``(b, h * group, s, d)``; ``group`` repeats kv heads for GQA."""
    x = x.transpose(1, 2).float()
    return x.repeat_interleave(group, dim=1) if group > 1 else x


def scores(s: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, seqlen_q: int, seqlen_k: int,
            softcap: float, slopes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | float]:
    """Scaled scores ``scale * q.k`` ``[b, h, BM, BN]`` -> the logits the softmax sees, and
    their derivative factor (``kernels/mask.py``'s ``scores_log2``, in natural log)."""
    dmod = 1.0
    if softcap > 0.0:
        th = torch.tanh(s / softcap)
        s, dmod = softcap * th, 1.0 - th * th
    if slopes is not None:
        rel = cols[None, :] - (rows[:, None] + seqlen_k - seqlen_q)
        s = s - slopes[:, :, None, None] * rel.abs()
    return s, dmod


def _slopes(p, batch: int, nheads: int, index: int | None = None) -> torch.Tensor | None:
    """ALiBi slopes as ``(batch, nheads)`` float32 (``index``: one varlen sequence)."""
    s = p.alibi_slopes
    if s is None:
        return None
    if s.dim() == 2 and index is not None:
        s = s[index:index + 1]
    return s.float().expand(batch, nheads)


def _per_sequence(p):
    """Varlen: yield ``(index, q_slice, k_slice)`` row ranges of each packed sequence."""
    cq, ck = p.cu_seqlens_q.tolist(), p.cu_seqlens_k.tolist()
    for i in range(len(cq) - 1):
        yield i, slice(cq[i], cq[i + 1]), slice(ck[i], ck[i + 1])


def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward for ``p`` (``params.KernelParams``): dense ``(b, s, h, d)`` -> out, lse ``(b, h, sq)``;
    varlen ``(total, h, d)`` -> out, lse ``(h, total_q)`` (one dense call per sequence)."""
    if not p.is_varlen:
        return _fwd_dense(q, k, v, p, _slopes(p, q.shape[0], q.shape[2]))
    out = q.new_zeros((*q.shape[:-1], v.shape[-1]))
    lse = torch.full((q.shape[1], q.shape[0]), torch.inf, dtype=torch.float32, device=q.device)
    for i, rq, rk in _per_sequence(p):
        o_i, l_i = _fwd_dense(q[None, rq], k[None, rk], v[None, rk], p, _slopes(p, 1, q.shape[1], i), i)
        out[rq], lse[:, rq] = o_i[0], l_i[0]
    return out, lse


def attn_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor,
             lse: torch.Tensor, dlse: torch.Tensor | None, p) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backward for ``p``; shapes as in ``attn_fwd``."""
    if not p.is_varlen:
        return _bwd_dense(dout, q, k, v, out, lse, dlse, p, _slopes(p, q.shape[0], q.shape[2]))
    dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
    for i, rq, rk in _per_sequence(p):
        g = _bwd_dense(dout[None, rq], q[None, rq], k[None, rk], v[None, rk], out[None, rq], lse[None, :, rq],
                       None if dlse is None else dlse[None, :, rq], p, _slopes(p, 1, q.shape[1], i), i)
        dq[rq], dk[rk], dv[rk] = g[0][0], g[1][0], g[2][0]
    return dq, dk, dv


def _dropper(p, batch: int, nheads: int, first_batch: int, device):
    """``drop(x, rows, cols)``: x ``[b, h, BM, BN]`` with dropout applied (kept / P(keep)), the
    kernels' Philox numbers (``dropout.py``); the identity without dropout."""
    if not p.has_dropout:
        return lambda x, rows, cols: x
    from .dropout import keep_mask, keep_scale
    seed, scale = int(p.seed.item()), keep_scale(p.dropout_p)
    bh = ((torch.arange(batch, device=device) + first_batch)[:, None] * nheads
          + torch.arange(nheads, device=device)[None, :])
    return lambda x, rows, cols: torch.where(keep_mask(seed, p.dropout_p, bh, rows, cols),
                                             x * scale, 0.0)


def _fwd_dense(q, k, v, p, slopes, first_batch: int = 0):
    """Algorithm 1. Returns out ``(b, sq, h, dv)`` in q's dtype and lse ``(b, h, sq)`` float32."""
    batch, seqlen_q, nheads, _ = q.shape
    drop = _dropper(p, batch, nheads, first_batch, q.device)
    seqlen_k, nheads_k, head_dim_v = v.shape[1], v.shape[2], v.shape[3]
    group = nheads // nheads_k
    qh, kh, vh = _heads_first(q), _heads_first(k, group), _heads_first(v, group)
    out = torch.empty((batch, nheads, seqlen_q, head_dim_v), dtype=torch.float32, device=q.device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=q.device)
    steps = (_SparseSteps if p.is_sparse else _WindowSteps)(p, seqlen_q, seqlen_k)
    for m_start in range(0, seqlen_q, steps.block_m):
        rows = torch.arange(m_start, min(m_start + steps.block_m, seqlen_q), device=q.device)
        q_blk = qh[:, :, rows] * p.softmax_scale                      # [b, h, BM, d]
        row_max = torch.full(q_blk.shape[:-1], -math.inf, device=q.device)
        row_sum = torch.zeros(q_blk.shape[:-1], device=q.device)
        acc = torch.zeros((*q_blk.shape[:-1], head_dim_v), device=q.device)
        for cols, mask in steps.keys(m_start, rows):
            s, _ = scores(q_blk @ kh[:, :, cols].transpose(-1, -2), rows, cols, seqlen_q, seqlen_k,
                           p.softcap, slopes)                         # [b, h, BM, BN]
            if mask is not None:
                s = s.masked_fill(~mask, -math.inf)
            new_max = torch.maximum(row_max, s.amax(-1))
            shift = new_max.masked_fill(new_max == -math.inf, 0.0)    # rows that saw nothing yet
            p_blk = torch.exp(s - shift[..., None])
            alpha = torch.exp(row_max - shift)
            row_sum = row_sum * alpha + p_blk.sum(-1)
            acc = acc * alpha[..., None] + drop(p_blk, rows, cols) @ vh[:, :, cols]
            row_max = new_max
        empty = row_sum == 0
        out[:, :, rows] = acc / row_sum.masked_fill(empty, 1.0)[..., None]
        lse[:, :, rows] = torch.where(empty, math.inf, row_max + torch.log(row_sum))
    return out.transpose(1, 2).to(q.dtype).contiguous(), lse


def _bwd_dense(dout, q, k, v, out, lse, dlse, p, slopes, first_batch: int = 0):
    """Algorithm 2, organised like the dK/dV kernel: outer loop over key blocks, inner over the
    query blocks that see them; dQ accumulates in an fp32 buffer (on the GPU it has its own pass)."""
    batch, seqlen_q, nheads, _ = q.shape
    drop = _dropper(p, batch, nheads, first_batch, q.device)
    seqlen_k, nheads_k = k.shape[1], k.shape[2]
    scale = p.softmax_scale
    group = nheads // nheads_k
    qh, kh, vh = _heads_first(q), _heads_first(k, group), _heads_first(v, group)
    doh, oh = _heads_first(dout), _heads_first(out)
    delta = (doh * oh).sum(-1)                                          # [b, h, sq]
    if dlse is not None:
        delta = delta - dlse.float()
    dq = torch.zeros_like(qh)
    dk = torch.zeros_like(kh)
    dv = torch.zeros(vh.shape, device=q.device)
    steps = (_SparseSteps if p.is_sparse else _WindowSteps)(p, seqlen_q, seqlen_k)
    for n_start in range(0, seqlen_k, steps.block_n):
        cols = torch.arange(n_start, min(n_start + steps.block_n, seqlen_k), device=q.device)
        k_blk, v_blk = kh[:, :, cols], vh[:, :, cols]
        for rows, mask in steps.queries(n_start, cols):
            q_blk, do_blk = qh[:, :, rows], doh[:, :, rows]
            s, dmod = scores(scale * (q_blk @ k_blk.transpose(-1, -2)), rows, cols, seqlen_q, seqlen_k,
                              p.softcap, slopes)
            p_blk = torch.exp(s - lse[:, :, rows, None])
            if mask is not None:
                p_blk = p_blk.masked_fill(~mask, 0.0)
            dv[:, :, cols] += drop(p_blk, rows, cols).transpose(-1, -2) @ do_blk
            dp = drop(do_blk @ v_blk.transpose(-1, -2), rows, cols)
            ds = p_blk * (dp - delta[:, :, rows, None]) * dmod
            dk[:, :, cols] += ds.transpose(-1, -2) @ q_blk
            dq[:, :, rows] += ds @ k_blk
    dq, dk = dq * scale, dk * scale
    if group > 1:  # sum each GQA group's query heads into its kv head
        dk = dk.unflatten(1, (nheads_k, group)).sum(2)
        dv = dv.unflatten(1, (nheads_k, group)).sum(2)
    return tuple(g.transpose(1, 2).to(q.dtype).contiguous() for g in (dq, dk, dv))
