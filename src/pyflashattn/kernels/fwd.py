"""Forward kernel (FlashAttention-2, Algorithm 1 with FA2's partitioning) and its launcher.

One program per (query block, batch x head). The program walks its key range in up to three
pieces (masked, unmasked, masked: see ``block_info``) with one inner loop whose ``MASKED`` flag
is a compile-time constant, so the bulk of the blocks pays for no masking. Softmax runs in
base 2 with ``softmax_scale * log2(e)`` folded into one multiply; the accumulator is rescaled
once per block and divided by the row sum once at the end. The log-sum-exp (natural log) is
saved for the backward. A row that sees no key writes 0 and ``lse = +inf`` (flash-attn's
convention, so that the backward's ``exp(s - lse)`` is 0 there).
"""
import torch
import triton
import triton.language as tl

from .block_info import kv_block_range, visible
from .common import LN2, LOG2E, dot_precision, interpreting, mma


@triton.jit
def _fwd_inner(b_acc, b_l, b_m, b_q, p_k, p_v, stride_kn, stride_vn,
               n_begin, n_end, o_m, o_n, o_d, o_dv,
               seqlen_q, seqlen_k, window_left, window_right, qk_scale,
               MASKED: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_N: tl.constexpr,
               PRECISION: tl.constexpr, UPCAST: tl.constexpr):
    m_d = o_d < HEAD_DIM
    m_dv = o_dv < HEAD_DIM_V
    # pointers to the first block of the range; advanced by BLOCK_N rows each step (64-bit)
    p_kt = p_k + (n_begin + o_n)[None, :].to(tl.int64) * stride_kn + o_d[:, None]   # [BD, BN]
    p_vb = p_v + (n_begin + o_n)[:, None].to(tl.int64) * stride_vn + o_dv[None, :]  # [BN, BDV]
    for n_start in tl.range(n_begin, n_end, BLOCK_N):
        o_cols = n_start + o_n
        if MASKED:
            m_kn = o_cols < seqlen_k
            b_kt = tl.load(p_kt, mask=m_d[:, None] & m_kn[None, :], other=0.0)
        elif HEAD_DIM == BLOCK_D:
            b_kt = tl.load(p_kt)
        else:
            b_kt = tl.load(p_kt, mask=m_d[:, None], other=0.0)
        b_s = mma(b_q, b_kt, tl.zeros([b_q.shape[0], BLOCK_N], dtype=tl.float32), PRECISION, UPCAST)
        if MASKED:
            m_vis = visible(o_m, o_cols, seqlen_q, seqlen_k, window_left, window_right)
            b_s = tl.where(m_vis, b_s * qk_scale, float("-inf"))
            b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
            # a row that has seen nothing yet keeps m = -inf: shift by 0 instead (no NaN)
            b_shift = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
            b_p = tl.math.exp2(b_s - b_shift[:, None])
        else:
            b_m_new = tl.maximum(b_m, tl.max(b_s, 1) * qk_scale)
            b_shift = b_m_new
            b_p = tl.math.exp2(b_s * qk_scale - b_shift[:, None])
        b_alpha = tl.math.exp2(b_m - b_shift)
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        if MASKED:
            b_v = tl.load(p_vb, mask=m_kn[:, None] & m_dv[None, :], other=0.0)
        elif HEAD_DIM_V == BLOCK_DV:
            b_v = tl.load(p_vb)
        else:
            b_v = tl.load(p_vb, mask=m_dv[None, :], other=0.0)
        b_acc = mma(b_p.to(b_v.dtype), b_v, b_acc * b_alpha[:, None], PRECISION, UPCAST)
        b_m = b_m_new
        p_kt += BLOCK_N * stride_kn
        p_vb += BLOCK_N * stride_vn
    return b_acc, b_l, b_m


@triton.jit(do_not_specialize=["seqlen_q", "seqlen_k", "window_left", "window_right"])
def _attn_fwd_kernel(
    Q, K, V, O, LSE,
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_ob, stride_os, stride_oh,
    nheads, group_size, seqlen_q, seqlen_k, window_left, window_right, qk_scale,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr,
):
    # 1-D grid, query blocks fastest so that programs in flight share K/V in L2; the
    # heaviest (last, under causal) query blocks of each head go first.
    num_m = tl.cdiv(seqlen_q, BLOCK_M)
    pid = tl.program_id(0)
    bh = pid // num_m
    start_m = num_m - 1 - pid % num_m
    b = bh // nheads
    h = bh % nheads
    hk = h // group_size

    o_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    m_rows = o_m < seqlen_q

    p_q = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh
    p_k = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh
    p_v = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh
    b_q = tl.load(p_q + o_m[:, None].to(tl.int64) * stride_qs + o_d[None, :],
                  mask=m_rows[:, None] & (o_d < HEAD_DIM)[None, :], other=0.0)  # [BM, BD]

    b_m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)

    lo, full_lo, full_hi, hi = kv_block_range(start_m * BLOCK_M, seqlen_q, seqlen_k,
                                              window_left, window_right, BLOCK_M, BLOCK_N)
    # unmasked middle first: the masked diagonal blocks then rescale an already large sum
    b_acc, b_l, b_m = _fwd_inner(b_acc, b_l, b_m, b_q, p_k, p_v, stride_ks, stride_vs,
                                 full_lo, full_hi, o_m, o_n, o_d, o_dv,
                                 seqlen_q, seqlen_k, window_left, window_right, qk_scale,
                                 False, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
                                 PRECISION, UPCAST)
    b_acc, b_l, b_m = _fwd_inner(b_acc, b_l, b_m, b_q, p_k, p_v, stride_ks, stride_vs,
                                 lo, full_lo, o_m, o_n, o_d, o_dv,
                                 seqlen_q, seqlen_k, window_left, window_right, qk_scale,
                                 True, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
                                 PRECISION, UPCAST)
    b_acc, b_l, b_m = _fwd_inner(b_acc, b_l, b_m, b_q, p_k, p_v, stride_ks, stride_vs,
                                 full_hi, hi, o_m, o_n, o_d, o_dv,
                                 seqlen_q, seqlen_k, window_left, window_right, qk_scale,
                                 True, HEAD_DIM, HEAD_DIM_V, BLOCK_D, BLOCK_DV, BLOCK_N,
                                 PRECISION, UPCAST)

    m_empty = b_l == 0.0
    b_l = tl.where(m_empty, 1.0, b_l)
    b_o = b_acc / b_l[:, None]
    b_lse = tl.where(m_empty, float("inf"), (b_m + tl.math.log2(b_l)) * LN2)
    p_o = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    tl.store(p_o + o_m[:, None].to(tl.int64) * stride_os + o_dv[None, :], b_o.to(O.dtype.element_ty),
             mask=m_rows[:, None] & (o_dv < HEAD_DIM_V)[None, :])
    tl.store(LSE + bh.to(tl.int64) * seqlen_q + o_m, b_lse, mask=m_rows)


def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, softmax_scale: float,
             window_left: int, window_right: int, config) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward. q ``(b, sq, h, d)``, k ``(b, sk, hk, d)``, v ``(b, sk, hk, dv)``,
    window values already made finite (``params.kernel_window``). Returns out ``(b, sq, h, dv)``
    and lse ``(b, h, sq)`` float32."""
    batch, seqlen_q, nheads, head_dim = q.shape
    _, seqlen_k, nheads_k, head_dim_v = v.shape
    out = torch.empty((batch, seqlen_q, nheads, head_dim_v), dtype=q.dtype, device=q.device)
    lse = torch.empty((batch, nheads, seqlen_q), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(seqlen_q, config.block_m) * batch * nheads,)
    _attn_fwd_kernel[grid](
        q, k, v, out, lse,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2),
        out.stride(0), out.stride(1), out.stride(2),
        nheads, nheads // nheads_k, seqlen_q, seqlen_k, window_left, window_right,
        softmax_scale * LOG2E.value,
        HEAD_DIM=head_dim, HEAD_DIM_V=head_dim_v,
        BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        BLOCK_D=config.block_d, BLOCK_DV=config.block_dv,
        PRECISION=dot_precision(q.dtype), UPCAST=interpreting(),
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out, lse
