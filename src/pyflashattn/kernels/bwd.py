"""Backward kernels (FlashAttention-2, Algorithm 2: recompute P from the saved log-sum-exp).

Three launches, no atomics, so gradients are bitwise deterministic:
1. ``_bwd_preprocess_kernel``: ``delta = rowsum(dO * O) - dLSE`` (fp32), per query row.
2. ``_bwd_dkdv_kernel``: one program per (key block, batch x kv-head). It walks every query
   head of its GQA group and the query blocks that see its keys (``q_block_range``), and
   accumulates ``dV += P^T dO`` and ``dK += dS^T Q`` in registers: the group sum happens here,
   K/V heads are never expanded.
3. ``_bwd_dq_kernel``: one program per (query block, batch x head), walking the same key range
   as the forward: ``dQ += dS K``.
Scores are recomputed transposed in (2) (``S^T = K Q^T``) so that no register tile is transposed.
Into caller buffers (``ops.attn_bwd_into``): (2) or (3) alone, and with ``ACCUMULATE`` both add
to what the buffer holds (in fp32, one rounding) instead of writing it.
"""
import torch
import triton
import triton.language as tl

from ..configs import head_dim_parts
from .block_info import kv_block_range, listed_block, listed_step, q_block_range, stage_range
from .common import LOG2E, cdiv, feature_constexprs, mma
from .fwd import seq_bounds
from . import hopper
from . import plan
from .launch import Launcher
from .mask import dropout_keep, element_mask, head_scalars, scores_log2


@triton.jit(do_not_specialize=["seqlen_q", "stats_len"])
def _bwd_preprocess_kernel(O, DO, DLSE, DELTA, DQ_ACC, LSE, STATS,
                           stride_ob, stride_os, stride_oh,
                           stride_dob, stride_dos, stride_doh,
                           nheads, seqlen_q, stats_len,
                           HEAD_DIM_V: tl.constexpr, BLOCK_M: tl.constexpr,
                           BLOCK_DV: tl.constexpr, HAS_DLSE: tl.constexpr, ZERO_DQ_ACC: tl.constexpr,
                           WRITE_STATS: tl.constexpr):
    pid_m = tl.program_id(0)
    bh = tl.program_id(1)
    b = bh // nheads
    h = bh % nheads
    o_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_dv = tl.arange(0, BLOCK_DV)
    m_o = (o_m < seqlen_q)[:, None] & (o_dv < HEAD_DIM_V)[None, :]
    p_o = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh
    p_do = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh
    b_o = tl.load(p_o + o_m[:, None].to(tl.int64) * stride_os + o_dv[None, :], mask=m_o, other=0.0)
    b_do = tl.load(p_do + o_m[:, None].to(tl.int64) * stride_dos + o_dv[None, :], mask=m_o, other=0.0)
    b_delta = tl.sum(b_o.to(tl.float32) * b_do.to(tl.float32), 1)
    p_row = bh.to(tl.int64) * seqlen_q + o_m
    if HAS_DLSE:
        b_delta -= tl.load(DLSE + p_row, mask=o_m < seqlen_q, other=0.0)
    tl.store(DELTA + p_row, b_delta, mask=o_m < seqlen_q)
    if WRITE_STATS:
        # the Gluon dK/dV kernels' (b, h, 2, stats_len): lse in base 2, then delta; rows past
        # seqlen_q (up to stats_len, the grid's rows) +inf and 0, so that those kernels read them
        # without masks and their P is 0 (``_new_stats``)
        b_lse2 = tl.load(LSE + p_row, mask=o_m < seqlen_q, other=float("inf")) * 1.4426950408889634
        p_stats = STATS + bh.to(tl.int64) * (2 * stats_len) + o_m
        tl.store(p_stats, b_lse2, mask=o_m < stats_len)
        tl.store(p_stats + stats_len, tl.where(o_m < seqlen_q, b_delta, 0.0), mask=o_m < stats_len)
    if ZERO_DQ_ACC:
        # the fused dK/dV/dQ kernel's fp32 dQ buffer, contiguous (b, sq, h, d) with d == dv
        p_acc = DQ_ACC + ((b.to(tl.int64) * seqlen_q + o_m[:, None]) * nheads + h) * HEAD_DIM_V + o_dv[None, :]
        tl.store(p_acc, tl.zeros([BLOCK_M, BLOCK_DV], tl.float32), mask=m_o)


_DQ_SCALE_BLOCK = 1024


@triton.jit(do_not_specialize=["numel"])
def _dq_scale_kernel(DQ_ACC, DQ, numel, softmax_scale, BLOCK: tl.constexpr):
    """``dq = dq_acc * softmax_scale`` in dq's dtype, both contiguous: the fused kernel's dQ out."""
    o = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    tl.store(DQ + o, (tl.load(DQ_ACC + o, mask=o < numel) * softmax_scale).to(DQ.dtype.element_ty), mask=o < numel)


@triton.jit
def _dkdv_inner(b_dk, b_dv, b_dk2, b_dv2, b_k, b_v, b_k2, b_v2, p_q, p_do, p_lse, p_delta, stride_qs, stride_dos,
                m_begin, m_end, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale, alibi_slope2, p_tile,
                p_list, p_tile_ids, seed, bh, b, h, drop_threshold, drop_scale,
                MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
                HAS_TILES: tl.constexpr, TILE_W: tl.constexpr, TILE_ELEMS: tl.constexpr, GATHER: tl.constexpr,
                LIST_BLOCK: tl.constexpr, HAS_DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
                BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
                BLOCK_D2: tl.constexpr, BLOCK_DV2: tl.constexpr,
                PRECISION: tl.constexpr, UPCAST: tl.constexpr, MASK_FN: tl.constexpr):
    """Query rows ``[m_begin, m_end)``; with ``GATHER`` (block-sparse), positions in the listed
    query blocks of ``p_list`` instead (``block_info.listed_block``). ``BLOCK_D2``/``BLOCK_DV2``:
    a split head dim's second part (``configs.head_dim_parts``): K's and dK's in ``b_k2``/``b_dk2``,
    V's and dV's in ``b_v2``/``b_dv2``; 0: one block each."""
    m_d = o_d < HEAD_DIM
    m_dv = o_dv < HEAD_DIM_V
    p_qt = p_q + (m_begin + o_m)[None, :].to(tl.int64) * stride_qs + o_d[:, None]      # [BD, BM]
    p_dob = p_do + (m_begin + o_m)[:, None].to(tl.int64) * stride_dos + o_dv[None, :]  # [BM, BDV]
    if BLOCK_D2 > 0:
        m_d2 = o_d2 < HEAD_DIM - BLOCK_D
        p_qt2 = p_q + BLOCK_D + (m_begin + o_m)[None, :].to(tl.int64) * stride_qs + o_d2[:, None]      # [BD2, BM]
    if BLOCK_DV2 > 0:
        m_dv2 = o_dv2 < HEAD_DIM_V - BLOCK_DV
        p_dob2 = p_do + BLOCK_DV + (m_begin + o_m)[:, None].to(tl.int64) * stride_dos + o_dv2[None, :]  # [BM, BDV2]
    n0 = tl.min(o_n, 0)  # first key of this block (dropout's counters)
    if GATHER:  # the first position's query row; each step looks up the next one (see listed_block)
        m_next, p_tile_next = listed_block(m_begin, m_end, p_list, p_tile_ids, p_tile, LIST_BLOCK, TILE_ELEMS,
                                           TILE_W, HAS_TILES and MASK_FN is None)
    for pos in tl.range(m_begin, m_end, BLOCK_M):
        if GATHER:
            m_start, p_tile_blk, m_next, p_tile_next = listed_step(pos, m_end, m_next, p_tile_next, p_list, p_tile_ids,
                                                                   p_tile, LIST_BLOCK, TILE_ELEMS, TILE_W,
                                                                   HAS_TILES and MASK_FN is None, BLOCK_M)
            p_qt_cur = p_q + (m_start + o_m)[None, :].to(tl.int64) * stride_qs + o_d[:, None]
            p_dob_cur = p_do + (m_start + o_m)[:, None].to(tl.int64) * stride_dos + o_dv[None, :]
            if BLOCK_D2 > 0:
                p_qt2_cur = p_q + BLOCK_D + (m_start + o_m)[None, :].to(tl.int64) * stride_qs + o_d2[:, None]
            if BLOCK_DV2 > 0:
                p_dob2_cur = p_do + BLOCK_DV + (m_start + o_m)[:, None].to(tl.int64) * stride_dos + o_dv2[None, :]
        else:
            m_start, p_tile_blk, p_qt_cur, p_dob_cur = pos, p_tile, p_qt, p_dob
            if BLOCK_D2 > 0:
                p_qt2_cur = p_qt2
            if BLOCK_DV2 > 0:
                p_dob2_cur = p_dob2
        o_rows = m_start + o_m
        m_rows = o_rows < seqlen_q
        if MASKED:
            b_qt = tl.load(p_qt_cur, mask=m_d[:, None] & m_rows[None, :], other=0.0)
            b_do = tl.load(p_dob_cur, mask=m_rows[:, None] & m_dv[None, :], other=0.0)
            # rows past seqlen_q get lse = +inf, so their P is 0
            b_lse = tl.load(p_lse + o_rows, mask=m_rows, other=float("inf"))
            b_delta = tl.load(p_delta + o_rows, mask=m_rows, other=0.0)
            if BLOCK_D2 > 0:
                b_qt2 = tl.load(p_qt2_cur, mask=m_d2[:, None] & m_rows[None, :], other=0.0)
            if BLOCK_DV2 > 0:
                b_do2 = tl.load(p_dob2_cur, mask=m_rows[:, None] & m_dv2[None, :], other=0.0)
        else:
            if HEAD_DIM >= BLOCK_D:
                b_qt = tl.load(p_qt_cur)
            else:
                b_qt = tl.load(p_qt_cur, mask=m_d[:, None], other=0.0)
            if HEAD_DIM_V >= BLOCK_DV:
                b_do = tl.load(p_dob_cur)
            else:
                b_do = tl.load(p_dob_cur, mask=m_dv[None, :], other=0.0)
            b_lse = tl.load(p_lse + o_rows)
            b_delta = tl.load(p_delta + o_rows)
            if BLOCK_D2 > 0:
                b_qt2 = tl.load(p_qt2_cur, mask=m_d2[:, None], other=0.0)
            if BLOCK_DV2 > 0:
                b_do2 = tl.load(p_dob2_cur, mask=m_dv2[None, :], other=0.0)
        b_st = mma(b_k, b_qt, tl.zeros([b_k.shape[0], BLOCK_M], dtype=tl.float32), PRECISION, UPCAST)
        if BLOCK_D2 > 0:
            b_st = mma(b_k2, b_qt2, b_st, PRECISION, UPCAST)
        # the transposed tile is the problem with q and k swapped: swap the lengths too
        b_st, b_dmod = scores_log2(b_st, o_n, o_rows, seqlen_k, seqlen_q, qk_scale, softcap_scale,
                                   alibi_slope2, HAS_SOFTCAP, HAS_ALIBI)
        b_pt = tl.math.exp2(b_st - (b_lse * LOG2E)[None, :])                            # [BN, BM]
        if MASKED:
            m_vis = element_mask(o_rows, o_n, seqlen_q, seqlen_k, window_left, window_right,
                                 p_tile_blk, b, h, HAS_TILES, TILE_W, MASK_FN)
            b_pt = tl.where(tl.trans(m_vis), b_pt, 0.0)
        b_dpt = mma(b_v, tl.trans(b_do), tl.zeros([b_k.shape[0], BLOCK_M], dtype=tl.float32),
                    PRECISION, UPCAST)
        if BLOCK_DV2 > 0:
            b_dpt = mma(b_v2, tl.trans(b_do2), b_dpt, PRECISION, UPCAST)
        if HAS_DROPOUT:  # dV sees the dropped P; dP is dropped the same way (FA2, Algorithm 2)
            # drawn as [queries, keys], the layout every kernel shares, then turned to this tile's
            m_keep = tl.trans(dropout_keep(seed, bh, o_rows, n0, drop_threshold, b_k.shape[0]))
            b_dv = mma(tl.where(m_keep, b_pt * drop_scale, 0.0).to(b_do.dtype), b_do, b_dv, PRECISION, UPCAST)
            if BLOCK_DV2 > 0:
                b_dv2 = mma(tl.where(m_keep, b_pt * drop_scale, 0.0).to(b_do2.dtype), b_do2, b_dv2, PRECISION, UPCAST)
            b_dpt = tl.where(m_keep, b_dpt * drop_scale, 0.0)
        else:
            b_dv = mma(b_pt.to(b_do.dtype), b_do, b_dv, PRECISION, UPCAST)
            if BLOCK_DV2 > 0:
                b_dv2 = mma(b_pt.to(b_do2.dtype), b_do2, b_dv2, PRECISION, UPCAST)
        b_dst = b_pt * (b_dpt - b_delta[None, :]) * b_dmod
        b_dk = mma(b_dst.to(b_qt.dtype), tl.trans(b_qt), b_dk, PRECISION, UPCAST)
        if BLOCK_D2 > 0:
            b_dk2 = mma(b_dst.to(b_qt2.dtype), tl.trans(b_qt2), b_dk2, PRECISION, UPCAST)
        if not GATHER:
            p_qt += BLOCK_M * stride_qs
            p_dob += BLOCK_M * stride_dos
            if BLOCK_D2 > 0:
                p_qt2 += BLOCK_M * stride_qs
            if BLOCK_DV2 > 0:
                p_dob2 += BLOCK_M * stride_dos
    return b_dk, b_dv, b_dk2, b_dv2


@triton.jit(do_not_specialize=["seqlen_q", "seqlen_k", "window_left", "window_right"])
def _bwd_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, CU_Q, CU_K, SLOPES,
    BLK_NUM, BLK_IDX, BLK_TILE, FULL_NUM, FULL_IDX, TILES, stride_mb, stride_mh, NUM_BLOCKS, ORDER,
    SEED, drop_threshold, drop_scale,
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_dob, stride_dos, stride_doh,
    stride_dkb, stride_dks, stride_dkh,
    stride_dvb, stride_dvs, stride_dvh,
    stride_lb, stride_lh, stride_sb, stride_sh,
    nheads, nheads_k, group_size, seqlen_q, seqlen_k, window_left, window_right,
    softmax_scale, qk_scale, softcap_scale, alibi_log2,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    IS_SPARSE: tl.constexpr, SPARSE_Q: tl.constexpr, SPARSE_KV: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, MASK_FN: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_D2: tl.constexpr = 0, BLOCK_DV2: tl.constexpr = 0,
):
    num_n = tl.cdiv(seqlen_k, BLOCK_N)
    pid = tl.program_id(0)
    if IS_SPARSE:  # the key blocks seen by the most query blocks first (kernels/schedule.py)
        pid = tl.load(ORDER + pid)
    bhk = pid // num_n
    start_n = pid % num_n
    b = bhk // nheads_k
    hk = bhk % nheads_k
    q_start, seqlen_q, k_start, seqlen_k = seq_bounds(CU_Q, CU_K, b, seqlen_q, seqlen_k, IS_VARLEN)
    if start_n * BLOCK_N >= seqlen_k:
        return

    o_n = start_n * BLOCK_N + tl.arange(0, BLOCK_N)
    o_m = tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    m_cols = o_n < seqlen_k
    m_k = m_cols[:, None] & (o_d < HEAD_DIM)[None, :]
    m_v = m_cols[:, None] & (o_dv < HEAD_DIM_V)[None, :]
    p_k = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh + k_start * stride_ks
    p_v = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh + k_start * stride_vs
    b_k = tl.load(p_k + o_n[:, None].to(tl.int64) * stride_ks + o_d[None, :], mask=m_k, other=0.0)
    b_v = tl.load(p_v + o_n[:, None].to(tl.int64) * stride_vs + o_dv[None, :], mask=m_v, other=0.0)
    b_dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    b_dv = tl.zeros([BLOCK_N, BLOCK_DV], dtype=tl.float32)
    # a split head dim's second parts (stand-ins without one: passed along, never read)
    if BLOCK_D2 > 0:
        o_d2 = tl.arange(0, BLOCK_D2)
        m_k2 = m_cols[:, None] & (o_d2 < HEAD_DIM - BLOCK_D)[None, :]
        b_k2 = tl.load(p_k + BLOCK_D + o_n[:, None].to(tl.int64) * stride_ks + o_d2[None, :], mask=m_k2, other=0.0)
        b_dk2 = tl.zeros([BLOCK_N, BLOCK_D2], dtype=tl.float32)
    else:
        o_d2, b_k2, b_dk2 = o_d, b_k, b_dk
    if BLOCK_DV2 > 0:
        o_dv2 = tl.arange(0, BLOCK_DV2)
        m_v2 = m_cols[:, None] & (o_dv2 < HEAD_DIM_V - BLOCK_DV)[None, :]
        b_v2 = tl.load(p_v + BLOCK_DV + o_n[:, None].to(tl.int64) * stride_vs + o_dv2[None, :], mask=m_v2,
                       other=0.0)
        b_dv2 = tl.zeros([BLOCK_N, BLOCK_DV2], dtype=tl.float32)
    else:
        o_dv2, b_v2, b_dv2 = o_dv, b_v, b_dv

    lo, full_lo, full_hi, hi = q_block_range(start_n * BLOCK_N, seqlen_q, seqlen_k,
                                             window_left, window_right, BLOCK_M, BLOCK_N)
    # disable_licm: hoisting the loop-invariant parts of the inner loops out of this one
    # kept them live in registers across all heads of the group: 1.8 KB of spills at d=128
    # with GQA, 0.6-1.0 KB without the hoist, and 2-13 % faster (docs/performance.md, v5)
    for g in tl.range(0, group_size, disable_licm=True):
        h = hk * group_size + g
        bh = b * nheads + h
        alibi_slope2, seed = head_scalars(SLOPES, SEED, b, h, stride_sb, stride_sh, alibi_log2,
                                          HAS_ALIBI, HAS_DROPOUT)
        p_q = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + q_start * stride_qs
        p_do = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh + q_start * stride_dos
        p_lse = LSE + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh + q_start
        p_delta = DELTA + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh + q_start
        if IS_SPARSE:
            # the transposed lists: for this key block, the query blocks that see it
            row = b * stride_mb + h * stride_mh + (start_n * BLOCK_N) // SPARSE_KV
            p_row = row.to(tl.int64) * NUM_BLOCKS
            p_tiles = TILES - (start_n * BLOCK_N) // SPARSE_KV * SPARSE_KV
            b_dk, b_dv, b_dk2, b_dv2 = _dkdv_inner(b_dk, b_dv, b_dk2, b_dv2, b_k, b_v, b_k2, b_v2, p_q, p_do,
                                     p_lse, p_delta, stride_qs, stride_dos,
                                     0, tl.load(FULL_NUM + row) * SPARSE_Q, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                                     seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale,
                                     alibi_slope2, TILES, FULL_IDX + p_row, FULL_IDX, seed, bh, b, h,
                                     drop_threshold, drop_scale, False, HAS_SOFTCAP, HAS_ALIBI, False, SPARSE_KV,
                                     SPARSE_Q * SPARSE_KV, True, SPARSE_Q, HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V,
                                     BLOCK_M, BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2, PRECISION, UPCAST, MASK_FN)
            b_dk, b_dv, b_dk2, b_dv2 = _dkdv_inner(b_dk, b_dv, b_dk2, b_dv2, b_k, b_v, b_k2, b_v2, p_q, p_do,
                                     p_lse, p_delta, stride_qs, stride_dos,
                                     0, tl.load(BLK_NUM + row) * SPARSE_Q, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                                     seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale,
                                     alibi_slope2, p_tiles, BLK_IDX + p_row, BLK_TILE + p_row, seed, bh, b, h,
                                     drop_threshold, drop_scale, True, HAS_SOFTCAP, HAS_ALIBI, True, SPARSE_KV,
                                     SPARSE_Q * SPARSE_KV, True, SPARSE_Q, HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V,
                                     BLOCK_M, BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2, PRECISION, UPCAST, MASK_FN)
        else:
            for stage in tl.static_range(3):
                m_begin, m_end = stage_range(stage, lo, full_lo, full_hi, hi)
                b_dk, b_dv, b_dk2, b_dv2 = _dkdv_inner(b_dk, b_dv, b_dk2, b_dv2, b_k, b_v, b_k2, b_v2, p_q, p_do,
                                         p_lse, p_delta, stride_qs, stride_dos,
                                         m_begin, m_end, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                                         seqlen_q, seqlen_k, window_left, window_right,
                                         qk_scale, softcap_scale, alibi_slope2, TILES, TILES, TILES, seed, bh, b, h,
                                         drop_threshold, drop_scale, stage > 0, HAS_SOFTCAP, HAS_ALIBI, False,
                                         SPARSE_KV, 1, False, 1, HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V,
                                         BLOCK_M, BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2, PRECISION, UPCAST,
                                         MASK_FN)

    p_dk = DK + b.to(tl.int64) * stride_dkb + hk.to(tl.int64) * stride_dkh + k_start * stride_dks
    p_dv = DV + b.to(tl.int64) * stride_dvb + hk.to(tl.int64) * stride_dvh + k_start * stride_dvs
    if BLOCK_D2 > 0:
        p_dk2 = p_dk + BLOCK_D + o_n[:, None].to(tl.int64) * stride_dks + o_d2[None, :]
        b_dk2 = b_dk2 * softmax_scale
        if ACCUMULATE:
            b_dk2 += tl.load(p_dk2, mask=m_k2, other=0.0).to(tl.float32)
        tl.store(p_dk2, b_dk2.to(DK.dtype.element_ty), mask=m_k2)
    if BLOCK_DV2 > 0:
        p_dv2 = p_dv + BLOCK_DV + o_n[:, None].to(tl.int64) * stride_dvs + o_dv2[None, :]
        if ACCUMULATE:
            b_dv2 += tl.load(p_dv2, mask=m_v2, other=0.0).to(tl.float32)
        tl.store(p_dv2, b_dv2.to(DV.dtype.element_ty), mask=m_v2)
    if ACCUMULATE:  # add to what the buffers hold, in fp32: one rounding
        p_dk += o_n[:, None].to(tl.int64) * stride_dks + o_d[None, :]
        p_dv += o_n[:, None].to(tl.int64) * stride_dvs + o_dv[None, :]
        b_dk = b_dk * softmax_scale + tl.load(p_dk, mask=m_k, other=0.0).to(tl.float32)
        tl.store(p_dk, b_dk.to(DK.dtype.element_ty), mask=m_k)
        tl.store(p_dv, (b_dv + tl.load(p_dv, mask=m_v, other=0.0).to(tl.float32)).to(DV.dtype.element_ty), mask=m_v)
    else:  # (written out apart: the default kernel stays instruction for instruction what it was)
        tl.store(p_dk + o_n[:, None].to(tl.int64) * stride_dks + o_d[None, :],
                 (b_dk * softmax_scale).to(DK.dtype.element_ty), mask=m_k)
        tl.store(p_dv + o_n[:, None].to(tl.int64) * stride_dvs + o_dv[None, :],
                 b_dv.to(DV.dtype.element_ty), mask=m_v)


@triton.jit
def _dq_inner(b_dq, b_dq2, b_q, b_do, b_q2, b_do2, b_lse2, b_delta, p_k, p_v, stride_ks, stride_vs,
              n_begin, n_end, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
              seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale, alibi_slope2, p_tile,
              p_list, p_tile_ids, seed, bh, b, h, drop_threshold, drop_scale,
              MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
              HAS_TILES: tl.constexpr, TILE_W: tl.constexpr, TILE_ELEMS: tl.constexpr, GATHER: tl.constexpr,
              HAS_DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
              BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
              BLOCK_D2: tl.constexpr, BLOCK_DV2: tl.constexpr,
              PRECISION: tl.constexpr, UPCAST: tl.constexpr, MASK_FN: tl.constexpr):
    """Keys ``[n_begin, n_end)``; with ``GATHER`` (block-sparse), positions in the listed
    blocks of ``p_list`` instead (``block_info.listed_block``). ``BLOCK_D2``/``BLOCK_DV2``: a
    split head dim's second part (``configs.head_dim_parts``): Q's and dQ's in ``b_q2``/``b_dq2``,
    dO's in ``b_do2``; 0: one block each."""
    m_d = o_d < HEAD_DIM
    m_dv = o_dv < HEAD_DIM_V
    p_kt = p_k + (n_begin + o_n)[None, :].to(tl.int64) * stride_ks + o_d[:, None]    # [BD, BN]
    p_vt = p_v + (n_begin + o_n)[None, :].to(tl.int64) * stride_vs + o_dv[:, None]   # [BDV, BN]
    if BLOCK_D2 > 0:
        m_d2 = o_d2 < HEAD_DIM - BLOCK_D
        p_kt2 = p_k + BLOCK_D + (n_begin + o_n)[None, :].to(tl.int64) * stride_ks + o_d2[:, None]     # [BD2, BN]
    if BLOCK_DV2 > 0:
        m_dv2 = o_dv2 < HEAD_DIM_V - BLOCK_DV
        p_vt2 = p_v + BLOCK_DV + (n_begin + o_n)[None, :].to(tl.int64) * stride_vs + o_dv2[:, None]  # [BDV2, BN]
    if GATHER:  # the first position's key; each step looks up the next one (see listed_block)
        n_next, p_tile_next = listed_block(n_begin, n_end, p_list, p_tile_ids, p_tile, TILE_W, TILE_ELEMS, 1,
                                           HAS_TILES and MASK_FN is None)
    for pos in tl.range(n_begin, n_end, BLOCK_N):
        if GATHER:
            n_start, p_tile_blk, n_next, p_tile_next = listed_step(pos, n_end, n_next, p_tile_next, p_list, p_tile_ids,
                                                                   p_tile, TILE_W, TILE_ELEMS, 1,
                                                                   HAS_TILES and MASK_FN is None, BLOCK_N)
            p_kt_cur = p_k + (n_start + o_n)[None, :].to(tl.int64) * stride_ks + o_d[:, None]
            p_vt_cur = p_v + (n_start + o_n)[None, :].to(tl.int64) * stride_vs + o_dv[:, None]
            if BLOCK_D2 > 0:
                p_kt2_cur = p_k + BLOCK_D + (n_start + o_n)[None, :].to(tl.int64) * stride_ks + o_d2[:, None]
            if BLOCK_DV2 > 0:
                p_vt2_cur = p_v + BLOCK_DV + (n_start + o_n)[None, :].to(tl.int64) * stride_vs + o_dv2[:, None]
        else:
            n_start, p_tile_blk, p_kt_cur, p_vt_cur = pos, p_tile, p_kt, p_vt
            if BLOCK_D2 > 0:
                p_kt2_cur = p_kt2
            if BLOCK_DV2 > 0:
                p_vt2_cur = p_vt2
        o_cols = n_start + o_n
        if MASKED:
            m_cols = o_cols < seqlen_k
            b_kt = tl.load(p_kt_cur, mask=m_d[:, None] & m_cols[None, :], other=0.0)
            b_vt = tl.load(p_vt_cur, mask=m_dv[:, None] & m_cols[None, :], other=0.0)
            if BLOCK_D2 > 0:
                b_kt2 = tl.load(p_kt2_cur, mask=m_d2[:, None] & m_cols[None, :], other=0.0)
            if BLOCK_DV2 > 0:
                b_vt2 = tl.load(p_vt2_cur, mask=m_dv2[:, None] & m_cols[None, :], other=0.0)
        else:
            if HEAD_DIM >= BLOCK_D:
                b_kt = tl.load(p_kt_cur)
            else:
                b_kt = tl.load(p_kt_cur, mask=m_d[:, None], other=0.0)
            if HEAD_DIM_V >= BLOCK_DV:
                b_vt = tl.load(p_vt_cur)
            else:
                b_vt = tl.load(p_vt_cur, mask=m_dv[:, None], other=0.0)
            if BLOCK_D2 > 0:
                b_kt2 = tl.load(p_kt2_cur, mask=m_d2[:, None], other=0.0)
            if BLOCK_DV2 > 0:
                b_vt2 = tl.load(p_vt2_cur, mask=m_dv2[:, None], other=0.0)
        b_s = mma(b_q, b_kt, tl.zeros([b_q.shape[0], BLOCK_N], dtype=tl.float32), PRECISION, UPCAST)
        if BLOCK_D2 > 0:
            b_s = mma(b_q2, b_kt2, b_s, PRECISION, UPCAST)
        b_s, b_dmod = scores_log2(b_s, o_m, o_cols, seqlen_q, seqlen_k, qk_scale, softcap_scale,
                                  alibi_slope2, HAS_SOFTCAP, HAS_ALIBI)
        b_p = tl.math.exp2(b_s - b_lse2[:, None])                                           # [BM, BN]
        if MASKED:
            b_p = tl.where(element_mask(o_m, o_cols, seqlen_q, seqlen_k, window_left, window_right,
                                        p_tile_blk, b, h, HAS_TILES, TILE_W, MASK_FN), b_p, 0.0)
        b_dp = mma(b_do, b_vt, tl.zeros([b_q.shape[0], BLOCK_N], dtype=tl.float32), PRECISION, UPCAST)
        if BLOCK_DV2 > 0:
            b_dp = mma(b_do2, b_vt2, b_dp, PRECISION, UPCAST)
        if HAS_DROPOUT:
            b_dp = tl.where(dropout_keep(seed, bh, o_m, n_start, drop_threshold, BLOCK_N),
                            b_dp * drop_scale, 0.0)
        b_ds = b_p * (b_dp - b_delta[:, None]) * b_dmod
        b_dq = mma(b_ds.to(b_kt.dtype), tl.trans(b_kt), b_dq, PRECISION, UPCAST)
        if BLOCK_D2 > 0:
            b_dq2 = mma(b_ds.to(b_kt2.dtype), tl.trans(b_kt2), b_dq2, PRECISION, UPCAST)
        if not GATHER:
            p_kt += BLOCK_N * stride_ks
            p_vt += BLOCK_N * stride_vs
            if BLOCK_D2 > 0:
                p_kt2 += BLOCK_N * stride_ks
            if BLOCK_DV2 > 0:
                p_vt2 += BLOCK_N * stride_vs
    return b_dq, b_dq2


@triton.jit(do_not_specialize=["seqlen_q", "seqlen_k", "window_left", "window_right"])
def _bwd_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, CU_Q, CU_K, SLOPES,
    BLK_NUM, BLK_IDX, BLK_TILE, FULL_NUM, FULL_IDX, TILES, stride_mb, stride_mh, NUM_BLOCKS, ORDER,
    SEED, drop_threshold, drop_scale,
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_dob, stride_dos, stride_doh,
    stride_dqb, stride_dqs, stride_dqh,
    stride_lb, stride_lh, stride_sb, stride_sh,
    nheads, group_size, seqlen_q, seqlen_k, window_left, window_right,
    softmax_scale, qk_scale, softcap_scale, alibi_log2,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    IS_SPARSE: tl.constexpr, SPARSE_Q: tl.constexpr, SPARSE_KV: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, MASK_FN: tl.constexpr, ACCUMULATE: tl.constexpr,
    BLOCK_D2: tl.constexpr = 0, BLOCK_DV2: tl.constexpr = 0,
):
    num_m = tl.cdiv(seqlen_q, BLOCK_M)
    pid = tl.program_id(0)
    if IS_SPARSE:  # the rows with the most blocks first (kernels/schedule.py)
        slot = tl.load(ORDER + pid)
        bh = slot // num_m
        start_m = slot % num_m
    else:
        bh = pid // num_m
        start_m = num_m - 1 - pid % num_m
    b = bh // nheads
    h = bh % nheads
    hk = h // group_size
    q_start, seqlen_q, k_start, seqlen_k = seq_bounds(CU_Q, CU_K, b, seqlen_q, seqlen_k, IS_VARLEN)
    if start_m * BLOCK_M >= seqlen_q:
        return

    o_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
    o_n = tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, BLOCK_D)
    o_dv = tl.arange(0, BLOCK_DV)
    m_rows = o_m < seqlen_q
    m_q = m_rows[:, None] & (o_d < HEAD_DIM)[None, :]
    p_q = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + q_start * stride_qs
    p_do = DO + b.to(tl.int64) * stride_dob + h.to(tl.int64) * stride_doh + q_start * stride_dos
    b_q = tl.load(p_q + o_m[:, None].to(tl.int64) * stride_qs + o_d[None, :], mask=m_q, other=0.0)
    b_do = tl.load(p_do + o_m[:, None].to(tl.int64) * stride_dos + o_dv[None, :],
                   mask=m_rows[:, None] & (o_dv < HEAD_DIM_V)[None, :], other=0.0)
    p_row = b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh + q_start + o_m
    b_lse2 = tl.load(LSE + p_row, mask=m_rows, other=float("inf")) * LOG2E
    b_delta = tl.load(DELTA + p_row, mask=m_rows, other=0.0)
    b_dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    # a split head dim's second parts (stand-ins without one: passed along, never read)
    if BLOCK_D2 > 0:
        o_d2 = tl.arange(0, BLOCK_D2)
        m_q2 = m_rows[:, None] & (o_d2 < HEAD_DIM - BLOCK_D)[None, :]
        b_q2 = tl.load(p_q + BLOCK_D + o_m[:, None].to(tl.int64) * stride_qs + o_d2[None, :], mask=m_q2, other=0.0)
        b_dq2 = tl.zeros([BLOCK_M, BLOCK_D2], dtype=tl.float32)
    else:
        o_d2, b_q2, b_dq2 = o_d, b_q, b_dq
    if BLOCK_DV2 > 0:
        o_dv2 = tl.arange(0, BLOCK_DV2)
        b_do2 = tl.load(p_do + BLOCK_DV + o_m[:, None].to(tl.int64) * stride_dos + o_dv2[None, :],
                        mask=m_rows[:, None] & (o_dv2 < HEAD_DIM_V - BLOCK_DV)[None, :], other=0.0)
    else:
        o_dv2, b_do2 = o_dv, b_do
    alibi_slope2, seed = head_scalars(SLOPES, SEED, b, h, stride_sb, stride_sh, alibi_log2, HAS_ALIBI, HAS_DROPOUT)

    p_k = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh + k_start * stride_ks
    p_v = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh + k_start * stride_vs
    if IS_SPARSE:
        row = b * stride_mb + h * stride_mh + (start_m * BLOCK_M) // SPARSE_Q
        p_row = row.to(tl.int64) * NUM_BLOCKS
        p_tiles = TILES - ((start_m * BLOCK_M) // SPARSE_Q * SPARSE_Q) * SPARSE_KV
        b_dq, b_dq2 = _dq_inner(b_dq, b_dq2, b_q, b_do, b_q2, b_do2, b_lse2, b_delta, p_k, p_v, stride_ks,
                         stride_vs, 0, tl.load(FULL_NUM + row) * SPARSE_KV, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                         seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale,
                         alibi_slope2, TILES, FULL_IDX + p_row, FULL_IDX, seed, bh, b, h, drop_threshold, drop_scale,
                         False, HAS_SOFTCAP, HAS_ALIBI, False, SPARSE_KV, SPARSE_Q * SPARSE_KV, True,
                         HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V, BLOCK_N, BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2,
                         PRECISION, UPCAST, MASK_FN)
        b_dq, b_dq2 = _dq_inner(b_dq, b_dq2, b_q, b_do, b_q2, b_do2, b_lse2, b_delta, p_k, p_v, stride_ks,
                         stride_vs, 0, tl.load(BLK_NUM + row) * SPARSE_KV, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                         seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale,
                         alibi_slope2, p_tiles, BLK_IDX + p_row, BLK_TILE + p_row, seed, bh, b, h,
                         drop_threshold, drop_scale,
                         True, HAS_SOFTCAP, HAS_ALIBI, True, SPARSE_KV, SPARSE_Q * SPARSE_KV, True,
                         HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V, BLOCK_N, BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2,
                         PRECISION, UPCAST, MASK_FN)
    else:
        lo, full_lo, full_hi, hi = kv_block_range(start_m * BLOCK_M, seqlen_q, seqlen_k,
                                                  window_left, window_right, BLOCK_M, BLOCK_N)
        for stage in tl.static_range(3):
            n_begin, n_end = stage_range(stage, lo, full_lo, full_hi, hi)
            b_dq, b_dq2 = _dq_inner(b_dq, b_dq2, b_q, b_do, b_q2, b_do2, b_lse2, b_delta, p_k, p_v, stride_ks,
                             stride_vs, n_begin, n_end, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                             seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale,
                             alibi_slope2, TILES, TILES, TILES, seed, bh, b, h, drop_threshold, drop_scale,
                             stage > 0, HAS_SOFTCAP, HAS_ALIBI, False, SPARSE_KV, 1, False,
                             HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V, BLOCK_N, BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2,
                             PRECISION, UPCAST, MASK_FN)
    p_dq = DQ + b.to(tl.int64) * stride_dqb + h.to(tl.int64) * stride_dqh + q_start * stride_dqs
    if BLOCK_D2 > 0:
        p_dq2 = p_dq + BLOCK_D + o_m[:, None].to(tl.int64) * stride_dqs + o_d2[None, :]
        b_dq2 = b_dq2 * softmax_scale
        if ACCUMULATE:
            b_dq2 += tl.load(p_dq2, mask=m_q2, other=0.0).to(tl.float32)
        tl.store(p_dq2, b_dq2.to(DQ.dtype.element_ty), mask=m_q2)
    if ACCUMULATE:  # as in the dK/dV kernel
        p_dq += o_m[:, None].to(tl.int64) * stride_dqs + o_d[None, :]
        b_dq = b_dq * softmax_scale + tl.load(p_dq, mask=m_q, other=0.0).to(tl.float32)
        tl.store(p_dq, b_dq.to(DQ.dtype.element_ty), mask=m_q)
    else:
        tl.store(p_dq + o_m[:, None].to(tl.int64) * stride_dqs + o_d[None, :],
                 (b_dq * softmax_scale).to(DQ.dtype.element_ty), mask=m_q)


_launch_preprocess = Launcher(_bwd_preprocess_kernel)
_launch_dkdv = Launcher(_bwd_dkdv_kernel)
_launch_dq = Launcher(_bwd_dq_kernel)
_launch_dq_scale = Launcher(_dq_scale_kernel)


def attn_bwd(dout: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             out: torch.Tensor, lse: torch.Tensor, dlse: torch.Tensor | None, p, config,
             dq: torch.Tensor | None = None, dk: torch.Tensor | None = None, dv: torch.Tensor | None = None,
             accumulate: bool = False) -> tuple:
    """Launch the backward for ``p`` (a ``params.KernelParams``); shapes as in ``attn_fwd``.

    With no buffers given, allocates and computes dq, dk and dv. Given buffers (q's / k's / v's
    shape, unit last stride, any float dtype), computes only those gradients: dq, or dk with dv,
    or all three; the other launch is skipped (its gradient comes back None). ``accumulate``:
    add to what the buffers hold, in fp32, rounding once (the Triton dK/dV kernel then, never
    the Gluon one)."""
    if dq is None and dk is None:
        dq, dk, dv = _new_grads(q, k, v)
    delta = torch.empty_like(lse)
    gluon, fused, uses_stats = _backward_kernels(q, k, v, dout, dq, dk, dv, p, config, accumulate)
    dq_acc = _new_dq_acc(q) if fused else None
    stats = _new_stats(lse) if uses_stats else None
    for launcher, grid, args, constexprs, num_warps, num_stages, options in _launches(
            dout, q, k, v, out, lse, dlse, p, config, delta, dq, dk, dv, accumulate, dq_acc, stats, gluon):
        launcher(grid, args, constexprs, num_warps, num_stages, **options)
    return dq, dk, dv


def _new_grads(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple:
    return tuple(torch.empty_like(t, memory_format=torch.contiguous_format) for t in (q, k, v))


def _backward_kernels(q, k, v, dout, dq, dk, dv, p, config, accumulate: bool) -> tuple[bool, bool, bool]:
    """Which kernels a backward runs, decided once (``hopper.usable``'s layout checks are the
    general path's dearest Python): whether the Gluon dK/dV kernel computes dK and dV
    (``_gluon_dkdv``); whether it computes dQ too (``hopper.fused_dq``), adding it into an fp32
    buffer (``_new_dq_acc``) instead of running the dQ kernel, where all three gradients are
    wanted in contiguous buffers of the inputs' dtype; and whether the preprocess also writes
    its padded statistics (``_new_stats``; ``hopper_bwd_stats``, dense inputs)."""
    gluon = dk is not None and _gluon_dkdv(q, k, v, dout, dk, dv, p, config, accumulate)
    fused = (gluon and dq is not None and dq.is_contiguous() and dq.dtype == q.dtype
             and hopper.fused_dq(p, config))
    return gluon, fused, gluon and bool(config.hopper_bwd_stats) and not p.is_varlen


def _new_stats(lse: torch.Tensor, device=None) -> torch.Tensor:
    """The Gluon dK/dV kernels' per-row statistics, ``(b, h, 2, n)`` fp32 with ``n`` the query
    length rounded up to 128: lse in base 2, then delta, padded with +inf and 0 (the preprocess
    writes them). Why: read per step and per query column, lse and delta with their bounds masks
    and addresses took ~100 of the dK/dV step's 576 instructions (v14 SASS); the padded pair is
    read without masks, from 16-byte aligned rows."""
    b, h, sq = lse.shape
    return torch.empty(b, h, 2, -(-sq // 128) * 128, dtype=torch.float32, device=device or lse.device)


def _new_dq_acc(q: torch.Tensor, device=None) -> torch.Tensor:
    """The fused kernel's dQ buffer: fp32, q's shape, contiguous (the preprocess zeroes it); on
    q's device, or on ``device`` (the plans' meta stand-ins)."""
    return torch.empty(q.shape, dtype=torch.float32, device=device or q.device)


def _launches(dout, q, k, v, out, lse, dlse, p, config, delta, dq, dk, dv, accumulate: bool,
              dq_acc: torch.Tensor | None = None, stats: torch.Tensor | None = None,
              gluon: bool | None = None) -> list:
    """The backward's launches, not yet made: (launcher, grid, args, constexprs, num_warps,
    num_stages, options) for the preprocess, then dK/dV (Triton's or ``hopper``'s) where dk is
    given, then dQ where dq is. With ``dq_acc`` (where ``_backward_kernels`` fuses dQ): the
    preprocess zeroes it, the dK/dV kernel adds dQ into it, and a last launch scales it into dq.
    ``gluon``: ``_backward_kernels``'s first answer, where the caller has it (else asked here)."""
    launches = []
    q4, k4, v4, o4, do4, dq4, dk4, dv4 = p.as_4d(q, k, v, out, dout, dq, dk, dv)  # (buffers: dense only)
    nheads, nheads_k, head_dim, head_dim_v = q4.shape[2], k4.shape[2], q4.shape[3], v4.shape[3]

    # delta: per query row; packed varlen rows are one long sequence of a batch of one
    varlen = p.is_varlen
    rows = q4.shape[0] * q4.shape[1] if varlen else q4.shape[1]
    pre_batch = 1 if varlen else q4.shape[0]
    stats_len = 0 if stats is None else stats.shape[-1]
    launches.append((
        _launch_preprocess, (cdiv(max(rows, stats_len), config.block_m_pre), pre_batch * nheads),
        (o4, do4, dlse if dlse is not None else lse, delta, delta if dq_acc is None else dq_acc, lse,
         delta if stats is None else stats, *o4.stride()[:3], *do4.stride()[:3], nheads, rows, stats_len),
        dict(HEAD_DIM_V=head_dim_v, BLOCK_M=config.block_m_pre, BLOCK_DV=config.block_dv, HAS_DLSE=dlse is not None,
             ZERO_DQ_ACC=dq_acc is not None, WRITE_STATS=stats is not None),
        4, 3, {},  # Triton's defaults (warps, stages), which this launch always used
    ))

    # the arguments both kernels share, computed once: (cu_seqlens q, k, alibi slopes) and
    # dropout's (seed, threshold, scale) around the block-sparse lists (forward order for dQ,
    # transposed for dK/dV); the strides of q, k, v, dout; the trailing ints and floats
    sequences = (p.cu_q(q), p.cu_k(q), p.slopes_or(lse))
    dropout = p.dropout_args(lse)
    input_strides = (*p.strides(q4), *p.strides(k4), *p.strides(v4), *p.strides(do4))
    row_strides = (*p.lse_strides(lse), *p.slope_strides())
    scalars = (p.max_seqlen_q, p.max_seqlen_k, p.window_left, p.window_right,
               p.softmax_scale, p.qk_scale, p.softcap_scale, p.alibi_log2)
    features = feature_constexprs(p, q.dtype)
    block_d, block_d2 = head_dim_parts(head_dim, config.block_d, config.split_head_dim)
    block_dv, block_dv2 = head_dim_parts(head_dim_v, config.block_dv, config.split_head_dim)
    shapes = dict(HEAD_DIM=head_dim, HEAD_DIM_V=head_dim_v, BLOCK_D=block_d, BLOCK_DV=block_dv, BLOCK_D2=block_d2,
                  BLOCK_DV2=block_dv2)
    num_n = cdiv(p.max_seqlen_k, config.block_n_kv)
    num_m = cdiv(p.max_seqlen_q, config.block_m_q)
    if dq_acc is not None:  # dK/dV and dQ by one kernel, then dq = dq_acc * scale
        launches.append(hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, config, dq_acc=dq_acc, stats=stats))
        launches.append((
            _launch_dq_scale, (cdiv(q4.numel(), _DQ_SCALE_BLOCK),),
            (dq_acc, dq, q4.numel(), p.softmax_scale), dict(BLOCK=_DQ_SCALE_BLOCK), 4, 2, {}))
        return launches
    if gluon is None:
        gluon = dk is not None and _gluon_dkdv(q, k, v, dout, dk, dv, p, config, accumulate)
    if gluon:  # dense or varlen 16-bit, d 64/128, Hopper (hopper.usable)
        launches.append(hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, config, stats=stats))
    elif dk is not None:
        launches.append((
            _launch_dkdv, (num_n * p.batch * nheads_k,),
            (q4, k4, v4, do4, lse, delta, dk4, dv4, *sequences, *p.sparse_args(lse, transposed=True),
             p.sparse_order(lse, nheads, nheads // nheads_k, num_n, config.block_n_kv, transposed=True), *dropout,
             *input_strides, *p.strides(dk4), *p.strides(dv4), *row_strides,
             nheads, nheads_k, nheads // nheads_k, *scalars),
            dict(BLOCK_M=config.block_m_kv, BLOCK_N=config.block_n_kv, **shapes, **features, ACCUMULATE=accumulate),
            config.num_warps_kv, config.num_stages_kv, {},
        ))
    if dq is not None and hopper.dq_usable(q, k, v, dout, dq, p, config, accumulate):
        launches.append(hopper.dq_launch(q, k, v, dout, lse, delta, dq, p, config))
    elif dq is not None:
        launches.append((
            _launch_dq, (num_m * p.batch * nheads,),
            (q4, k4, v4, do4, lse, delta, dq4, *sequences, *p.sparse_args(lse),
             p.sparse_order(lse, nheads, 1, num_m, config.block_m_q), *dropout,
             *input_strides, *p.strides(dq4), *row_strides,
             nheads, nheads // nheads_k, *scalars),
            dict(BLOCK_M=config.block_m_q, BLOCK_N=config.block_n_q, **shapes, **features, ACCUMULATE=accumulate),
            config.num_warps_q, config.num_stages_q, {},
        ))
    return launches


class BackwardPlan(plan.Plan):
    """The backward's launches bound to their compiled kernels once per layout (``plan_bwd``;
    kept by ``ops._cached_plan``), so that a backward does little Python: it allocates the
    gradients and hands the C launchers arguments whose every tensor slot is filled in (the plan
    keeps no tensor; each slot says which of dout, q, k, v, out, lse, delta, dq, dk, dv, the
    fused dQ buffer, the padded statistics, cu_seqlens_q, cu_seqlens_k goes there), ~20 us of
    Python where the general path takes ~60 (on a CPU).

    Why: the autograd engine runs a CUDA node's backward on its device thread, a core other
    than the forward's, where this Python ran 2-2.5x slower than on the calling thread (the
    objects it touches live in the other core's caches; reproduced on a CPU, and on the H200's
    host: forward + backward 802 us, 492 us with the backward on the calling thread; v8 in
    docs/performance.md).

    ``run`` returns None (the caller takes the general path) unless every tensor matches what
    the plan was bound for: dtype, shape, strides and 16-byte alignment (the kernels'
    specialization), and the same device. Varlen: ``cu_seqlens`` are given to ``run`` as well
    (their values are read by the kernels, so they may change; the maxima are the plan's,
    ``ops._cached_plan`` keys on them), one tensor for both exactly where the plan's had one."""

    __slots__ = ("fused_dq", "stats")

    def __init__(self, launches: tuple, given: tuple, p, fused_dq: bool = False, stats: bool = False):
        super().__init__(launches, given, p)   # varlen: cu_seqlens in slots 12, 13
        self.fused_dq = fused_dq   # the launches need the fused kernel's dQ buffer (slot 10)
        self.stats = stats         # ... and the Gluon dK/dV's padded statistics (slot 11)

    def run(self, dout, q, k, v, out, lse, cu_seqlens_q=None, cu_seqlens_k=None) -> tuple | None:
        if not self.accepts((dout, q, k, v, out, lse), cu_seqlens_q, cu_seqlens_k):
            return None
        dq, dk, dv = _new_grads(q, k, v)
        plan.run(self.launches, (dout, q, k, v, out, lse, torch.empty_like(lse), dq, dk, dv,
                                 _new_dq_acc(q) if self.fused_dq else None, _new_stats(lse) if self.stats else None,
                                 cu_seqlens_q, cu_seqlens_k))
        return dq, dk, dv


def plan_bwd(q, k, v, out, lse, p, config) -> BackwardPlan | None:
    """A ``BackwardPlan`` for backwards with these inputs' layouts (dense or varlen, without
    ALiBi, dropout or a block mask, 16-byte aligned inputs with a unit last stride; dout expected with
    out's layout), or None where the backward takes the general path (the launchers' fast path
    is off, or a kernel has not run with this specialization yet: the first backward of a
    layout always goes the general way)."""
    if not plan.serves(p, q, k, v, out, lse):
        return None
    # what the backward allocates, and the dout it expects, as meta tensors: shapes, strides,
    # dtypes and a 16-byte aligned (0) address, no memory
    dout = torch.empty_strided(out.shape, out.stride(), dtype=out.dtype, device="meta")
    delta = torch.empty_like(lse, device="meta")
    dq, dk, dv = (torch.empty_like(t, memory_format=torch.contiguous_format, device="meta") for t in (q, k, v))
    gluon, fused, uses_stats = _backward_kernels(q, k, v, dout, dq, dk, dv, p, config, False)
    dq_acc = _new_dq_acc(q, device="meta") if fused else None
    stats = _new_stats(lse, device="meta") if uses_stats else None
    bound = plan.bind(_launches(dout, q, k, v, out, lse, None, p, config, delta, dq, dk, dv, False, dq_acc, stats,
                                gluon),
                      (dout, q, k, v, out, lse, delta, dq, dk, dv, dq_acc, stats, *plan.cu_seqlens(p)))
    if bound is None:
        return None
    return BackwardPlan(bound, (dout, q, k, v, out, lse), p, fused, uses_stats)


def _gluon_dkdv(q, k, v, dout, dk, dv, p, config, accumulate: bool) -> bool:
    """Whether the Gluon dK/dV kernel (``hopper.attn_dkdv``) computes this call: it writes
    (never adds) contiguous buffers of k's and v's dtype."""
    if accumulate or not (dk.is_contiguous() and dv.is_contiguous()):
        return False
    return dk.dtype == k.dtype and dv.dtype == v.dtype and hopper.usable(q, k, v, p, config, dout=dout)
