"""Forward kernel (FlashAttention-2, Algorithm 1 with FA2's partitioning) and its launcher.

One program per (query block, batch x head). The program walks its key range in up to three
pieces (masked, unmasked, masked: see ``block_info``) with one inner loop whose ``MASKED`` flag
is a compile-time constant, so the bulk of the blocks pays for no masking. Softmax runs in
base 2 with ``softmax_scale * log2(e)`` folded into one multiply; the accumulator is rescaled
once per block and divided by the row sum once at the end. The log-sum-exp (natural log) is
saved for the backward. A row that sees no key writes 0 and ``lse = +inf`` (flash-attn's
convention, so that the backward's ``exp(s - lse)`` is 0 there).

Features are compile-time flags, their values runtime arguments: ``IS_VARLEN`` (sequences
packed along one axis, bounds from ``cu_seqlens``), ``HAS_SOFTCAP``, ``HAS_ALIBI``.
"""
import torch
import triton
import triton.language as tl

from ..configs import head_dim_parts
from . import hopper, plan
from .block_info import kv_block_range, listed_block, listed_step, stage_range
from .common import LN2, cdiv, feature_constexprs, mma
from .launch import Launcher
from .mask import dropout_keep, element_mask, head_scalars, scores_log2


@triton.jit
def seq_bounds(CU_Q, CU_K, b, seqlen_q, seqlen_k, IS_VARLEN: tl.constexpr):
    """(first row as int64, length) of batch entry ``b`` for queries and keys."""
    if IS_VARLEN:
        q_start = tl.load(CU_Q + b)
        k_start = tl.load(CU_K + b)
        return (q_start, tl.load(CU_Q + b + 1) - q_start,
                k_start, tl.load(CU_K + b + 1) - k_start)
    else:
        zero = b.to(tl.int64) * 0  # a 64-bit scalar either way, so offsets never wrap
        return zero, seqlen_q, zero, seqlen_k


@triton.jit
def _fwd_inner(b_acc, b_acc2, b_l, b_m, b_q, b_q2, p_k, p_v, stride_kn, stride_vn,
               n_begin, n_end, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
               seqlen_q, seqlen_k, window_left, window_right, qk_scale, softcap_scale, alibi_slope2, p_tile,
               p_list, p_tile_ids, seed, bh, b, h, drop_threshold, drop_scale,
               MASKED: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
               HAS_TILES: tl.constexpr, TILE_W: tl.constexpr, TILE_ELEMS: tl.constexpr, GATHER: tl.constexpr,
               HAS_DROPOUT: tl.constexpr, HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
               BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, BLOCK_D2: tl.constexpr, BLOCK_DV2: tl.constexpr,
               BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, UPCAST: tl.constexpr, MASK_FN: tl.constexpr):
    """Keys ``[n_begin, n_end)``; with ``GATHER`` (block-sparse), positions in the listed
    blocks of ``p_list`` instead (``block_info.listed_block``). ``BLOCK_D2``/``BLOCK_DV2``: a
    split head dim (``configs.head_dim_parts``), columns ``BLOCK_D + o_d2`` of Q and K in
    ``b_q2`` and those of V in ``b_acc2``; 0: one block each."""
    m_d = o_d < HEAD_DIM
    m_dv = o_dv < HEAD_DIM_V
    # pointers to the first block of the range; advanced by BLOCK_N rows each step (64-bit)
    p_kt = p_k + (n_begin + o_n)[None, :].to(tl.int64) * stride_kn + o_d[:, None]   # [BD, BN]
    p_vb = p_v + (n_begin + o_n)[:, None].to(tl.int64) * stride_vn + o_dv[None, :]  # [BN, BDV]
    if BLOCK_D2 > 0:
        m_d2 = o_d2 < HEAD_DIM - BLOCK_D
        p_kt2 = p_k + BLOCK_D + (n_begin + o_n)[None, :].to(tl.int64) * stride_kn + o_d2[:, None]   # [BD2, BN]
    if BLOCK_DV2 > 0:
        m_dv2 = o_dv2 < HEAD_DIM_V - BLOCK_DV
        p_vb2 = p_v + BLOCK_DV + (n_begin + o_n)[:, None].to(tl.int64) * stride_vn + o_dv2[None, :]  # [BN, BDV2]
    if GATHER:  # the first position's key; each step looks up the next one (see listed_block)
        n_next, p_tile_next = listed_block(n_begin, n_end, p_list, p_tile_ids, p_tile, TILE_W, TILE_ELEMS, 1,
                                           HAS_TILES and MASK_FN is None)
    for pos in tl.range(n_begin, n_end, BLOCK_N):
        if GATHER:
            n_start, p_tile_blk, n_next, p_tile_next = listed_step(pos, n_end, n_next, p_tile_next, p_list, p_tile_ids,
                                                                   p_tile, TILE_W, TILE_ELEMS, 1,
                                                                   HAS_TILES and MASK_FN is None, BLOCK_N)
            p_kt_cur = p_k + (n_start + o_n)[None, :].to(tl.int64) * stride_kn + o_d[:, None]
            p_vb_cur = p_v + (n_start + o_n)[:, None].to(tl.int64) * stride_vn + o_dv[None, :]
            if BLOCK_D2 > 0:
                p_kt2_cur = p_k + BLOCK_D + (n_start + o_n)[None, :].to(tl.int64) * stride_kn + o_d2[:, None]
            if BLOCK_DV2 > 0:
                p_vb2_cur = p_v + BLOCK_DV + (n_start + o_n)[:, None].to(tl.int64) * stride_vn + o_dv2[None, :]
        else:
            n_start, p_tile_blk, p_kt_cur, p_vb_cur = pos, p_tile, p_kt, p_vb
            if BLOCK_D2 > 0:
                p_kt2_cur = p_kt2
            if BLOCK_DV2 > 0:
                p_vb2_cur = p_vb2
        o_cols = n_start + o_n
        if MASKED:
            m_kn = o_cols < seqlen_k
            b_kt = tl.load(p_kt_cur, mask=m_d[:, None] & m_kn[None, :], other=0.0)
        elif HEAD_DIM >= BLOCK_D:
            b_kt = tl.load(p_kt_cur)
        else:
            b_kt = tl.load(p_kt_cur, mask=m_d[:, None], other=0.0)
        b_s = mma(b_q, b_kt, tl.zeros([b_q.shape[0], BLOCK_N], dtype=tl.float32), PRECISION, UPCAST)
        if BLOCK_D2 > 0:  # the rest of the head dim: its scores added to the first part's
            if MASKED:
                b_kt2 = tl.load(p_kt2_cur, mask=m_d2[:, None] & m_kn[None, :], other=0.0)
            else:
                b_kt2 = tl.load(p_kt2_cur, mask=m_d2[:, None], other=0.0)
            b_s = mma(b_q2, b_kt2, b_s, PRECISION, UPCAST)
        if HAS_SOFTCAP or HAS_ALIBI or MASKED:
            b_s, _ = scores_log2(b_s, o_m, o_cols, seqlen_q, seqlen_k, qk_scale, softcap_scale,
                                 alibi_slope2, HAS_SOFTCAP, HAS_ALIBI)
            if MASKED:
                b_s = tl.where(element_mask(o_m, o_cols, seqlen_q, seqlen_k, window_left, window_right,
                                            p_tile_blk, b, h, HAS_TILES, TILE_W, MASK_FN), b_s, float("-inf"))
            b_m_new = tl.maximum(b_m, tl.max(b_s, 1))
            # a row that has seen nothing yet keeps m = -inf: shift by 0 instead (no NaN)
            b_shift = tl.where(b_m_new == float("-inf"), 0.0, b_m_new)
            b_p = tl.math.exp2(b_s - b_shift[:, None])
        else:
            # plain scores: fold the scale into the exponent's FMA
            b_m_new = tl.maximum(b_m, tl.max(b_s, 1) * qk_scale)
            b_shift = b_m_new
            b_p = tl.math.exp2(b_s * qk_scale - b_shift[:, None])
        b_alpha = tl.math.exp2(b_m - b_shift)
        b_l = b_l * b_alpha + tl.sum(b_p, 1)
        if MASKED:
            b_v = tl.load(p_vb_cur, mask=m_kn[:, None] & m_dv[None, :], other=0.0)
        elif HEAD_DIM_V >= BLOCK_DV:
            b_v = tl.load(p_vb_cur)
        else:
            b_v = tl.load(p_vb_cur, mask=m_dv[None, :], other=0.0)
        if HAS_DROPOUT:  # the row sum above keeps every element; only P V sees the drops
            b_p = tl.where(dropout_keep(seed, bh, o_m, n_start, drop_threshold, BLOCK_N),
                           b_p * drop_scale, 0.0)
        b_acc = mma(b_p.to(b_v.dtype), b_v, b_acc * b_alpha[:, None], PRECISION, UPCAST)
        if BLOCK_DV2 > 0:
            if MASKED:
                b_v2 = tl.load(p_vb2_cur, mask=m_kn[:, None] & m_dv2[None, :], other=0.0)
            else:
                b_v2 = tl.load(p_vb2_cur, mask=m_dv2[None, :], other=0.0)
            b_acc2 = mma(b_p.to(b_v2.dtype), b_v2, b_acc2 * b_alpha[:, None], PRECISION, UPCAST)
        b_m = b_m_new
        if not GATHER:
            p_kt += BLOCK_N * stride_kn
            p_vb += BLOCK_N * stride_vn
            if BLOCK_D2 > 0:
                p_kt2 += BLOCK_N * stride_kn
            if BLOCK_DV2 > 0:
                p_vb2 += BLOCK_N * stride_vn
    return b_acc, b_acc2, b_l, b_m


@triton.jit(do_not_specialize=["seqlen_q", "seqlen_k", "window_left", "window_right"])
def _attn_fwd_kernel(
    Q, K, V, O, LSE, CU_Q, CU_K, SLOPES,
    KV_NUM, KV_IDX, KV_TILE, FULL_NUM, FULL_IDX, TILES, stride_mb, stride_mh, NUM_KV_BLOCKS, ORDER,
    SEED, drop_threshold, drop_scale,
    stride_qb, stride_qs, stride_qh,
    stride_kb, stride_ks, stride_kh,
    stride_vb, stride_vs, stride_vh,
    stride_ob, stride_os, stride_oh,
    stride_lb, stride_lh, stride_sb, stride_sh,
    nheads, group_size, seqlen_q, seqlen_k, window_left, window_right,
    qk_scale, softcap_scale, alibi_log2,
    HEAD_DIM: tl.constexpr, HEAD_DIM_V: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    IS_VARLEN: tl.constexpr, HAS_SOFTCAP: tl.constexpr, HAS_ALIBI: tl.constexpr,
    IS_SPARSE: tl.constexpr, SPARSE_Q: tl.constexpr, SPARSE_KV: tl.constexpr, HAS_DROPOUT: tl.constexpr,
    PRECISION: tl.constexpr, UPCAST: tl.constexpr, MASK_FN: tl.constexpr,
    BLOCK_D2: tl.constexpr = 0, BLOCK_DV2: tl.constexpr = 0,
):
    # 1-D grid, query blocks fastest so that programs in flight share K/V in L2; the
    # heaviest (last, under causal) query blocks of each head go first; under a block mask,
    # the rows with the most blocks (ORDER, kernels/schedule.py). With varlen,
    # seqlen_q/seqlen_k are the maxima and programs past their sequence's end exit.
    num_m = tl.cdiv(seqlen_q, BLOCK_M)
    pid = tl.program_id(0)
    if IS_SPARSE:
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

    p_q = Q + b.to(tl.int64) * stride_qb + h.to(tl.int64) * stride_qh + q_start * stride_qs
    p_k = K + b.to(tl.int64) * stride_kb + hk.to(tl.int64) * stride_kh + k_start * stride_ks
    p_v = V + b.to(tl.int64) * stride_vb + hk.to(tl.int64) * stride_vh + k_start * stride_vs
    b_q = tl.load(p_q + o_m[:, None].to(tl.int64) * stride_qs + o_d[None, :],
                  mask=m_rows[:, None] & (o_d < HEAD_DIM)[None, :], other=0.0)  # [BM, BD]
    # a split head dim's second part (stand-ins without one: passed along, never read)
    if BLOCK_D2 > 0:
        o_d2 = tl.arange(0, BLOCK_D2)
        b_q2 = tl.load(p_q + BLOCK_D + o_m[:, None].to(tl.int64) * stride_qs + o_d2[None, :],
                       mask=m_rows[:, None] & (o_d2 < HEAD_DIM - BLOCK_D)[None, :], other=0.0)  # [BM, BD2]
    else:
        o_d2, b_q2 = o_d, b_q
    alibi_slope2, seed = head_scalars(SLOPES, SEED, b, h, stride_sb, stride_sh, alibi_log2, HAS_ALIBI, HAS_DROPOUT)

    b_m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    b_l = tl.zeros([BLOCK_M], dtype=tl.float32)
    b_acc = tl.zeros([BLOCK_M, BLOCK_DV], dtype=tl.float32)
    if BLOCK_DV2 > 0:
        o_dv2 = tl.arange(0, BLOCK_DV2)
        b_acc2 = tl.zeros([BLOCK_M, BLOCK_DV2], dtype=tl.float32)
    else:
        o_dv2, b_acc2 = o_dv, b_l

    if IS_SPARSE:
        # block-sparse: the listed full blocks unmasked, then the partial ones with their tiles,
        # each list walked by one pipelined loop
        row = b * stride_mb + h * stride_mh + (start_m * BLOCK_M) // SPARSE_Q
        p_row = row.to(tl.int64) * NUM_KV_BLOCKS
        p_tiles = TILES - ((start_m * BLOCK_M) // SPARSE_Q * SPARSE_Q) * SPARSE_KV
        b_acc, b_acc2, b_l, b_m = _fwd_inner(b_acc, b_acc2, b_l, b_m, b_q, b_q2, p_k, p_v, stride_ks, stride_vs,
                                     0, tl.load(FULL_NUM + row) * SPARSE_KV, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                                     seqlen_q, seqlen_k, window_left, window_right,
                                     qk_scale, softcap_scale, alibi_slope2, TILES, FULL_IDX + p_row, FULL_IDX,
                                     seed, bh, b, h, drop_threshold, drop_scale,
                                     False, HAS_SOFTCAP, HAS_ALIBI, False, SPARSE_KV, SPARSE_Q * SPARSE_KV, True,
                                     HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V,
                                     BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2, BLOCK_N, PRECISION, UPCAST, MASK_FN)
        b_acc, b_acc2, b_l, b_m = _fwd_inner(b_acc, b_acc2, b_l, b_m, b_q, b_q2, p_k, p_v, stride_ks, stride_vs,
                                     0, tl.load(KV_NUM + row) * SPARSE_KV, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                                     seqlen_q, seqlen_k, window_left, window_right,
                                     qk_scale, softcap_scale, alibi_slope2, p_tiles, KV_IDX + p_row, KV_TILE + p_row,
                                     seed, bh, b, h, drop_threshold, drop_scale,
                                     True, HAS_SOFTCAP, HAS_ALIBI, True, SPARSE_KV, SPARSE_Q * SPARSE_KV, True,
                                     HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V,
                                     BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2, BLOCK_N, PRECISION, UPCAST, MASK_FN)
    else:
        lo, full_lo, full_hi, hi = kv_block_range(start_m * BLOCK_M, seqlen_q, seqlen_k,
                                                  window_left, window_right, BLOCK_M, BLOCK_N)
        for stage in tl.static_range(3):
            n_begin, n_end = stage_range(stage, lo, full_lo, full_hi, hi)
            b_acc, b_acc2, b_l, b_m = _fwd_inner(b_acc, b_acc2, b_l, b_m, b_q, b_q2, p_k, p_v, stride_ks,
                                                 stride_vs, n_begin, n_end, o_m, o_n, o_d, o_dv, o_d2, o_dv2,
                                         seqlen_q, seqlen_k, window_left, window_right,
                                         qk_scale, softcap_scale, alibi_slope2, TILES, TILES, TILES,
                                         seed, bh, b, h, drop_threshold, drop_scale,
                                         stage > 0, HAS_SOFTCAP, HAS_ALIBI, False, SPARSE_KV, 1, False,
                                         HAS_DROPOUT, HEAD_DIM, HEAD_DIM_V,
                                         BLOCK_D, BLOCK_DV, BLOCK_D2, BLOCK_DV2, BLOCK_N, PRECISION, UPCAST,
                                         MASK_FN)

    m_empty = b_l == 0.0
    b_l = tl.where(m_empty, 1.0, b_l)
    b_o = b_acc / b_l[:, None]
    b_lse = tl.where(m_empty, float("inf"), (b_m + tl.math.log2(b_l)) * LN2)
    p_o = O + b.to(tl.int64) * stride_ob + h.to(tl.int64) * stride_oh + q_start * stride_os
    tl.store(p_o + o_m[:, None].to(tl.int64) * stride_os + o_dv[None, :], b_o.to(O.dtype.element_ty),
             mask=m_rows[:, None] & (o_dv < HEAD_DIM_V)[None, :])
    if BLOCK_DV2 > 0:
        tl.store(p_o + BLOCK_DV + o_m[:, None].to(tl.int64) * stride_os + o_dv2[None, :],
                 (b_acc2 / b_l[:, None]).to(O.dtype.element_ty),
                 mask=m_rows[:, None] & (o_dv2 < HEAD_DIM_V - BLOCK_DV)[None, :])
    p_lse = LSE + b.to(tl.int64) * stride_lb + h.to(tl.int64) * stride_lh + q_start
    tl.store(p_lse + o_m, b_lse, mask=m_rows)


_launch_fwd = Launcher(_attn_fwd_kernel)


def attn_fwd(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, p, config) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch the forward for ``p`` (a ``params.KernelParams``).

    Dense: q ``(b, sq, h, d)``, k ``(b, sk, hk, d)``, v ``(b, sk, hk, dv)``; returns out
    ``(b, sq, h, dv)`` and lse ``(b, h, sq)`` float32. Varlen: q ``(total_q, h, d)``, k/v
    ``(total_k, hk, d)``; returns out ``(total_q, h, dv)`` and lse ``(h, total_q)``.
    The dense cases it covers on Hopper go to the Gluon forward (``hopper``).
    """
    if hopper.usable(q, k, v, p, config):
        return hopper.attn_fwd(q, k, v, p, config)
    out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device=q.device)
    lse = p.new_lse(q)
    launcher, grid, args, constexprs, num_warps, num_stages, options = _fwd_launch(q, k, v, out, lse, p, config)
    launcher(grid, args, constexprs, num_warps, num_stages, **options)
    return out, lse


def _fwd_launch(q, k, v, out, lse, p, config) -> tuple:
    """The Triton forward's launch into ``out`` and ``lse``, not yet made (as ``hopper.fwd_launch``)."""
    q4, k4, v4, o4 = p.as_4d(q, k, v, out)
    nheads, nheads_k = q4.shape[2], k4.shape[2]
    num_m = cdiv(p.max_seqlen_q, config.block_m)
    grid = (num_m * p.batch * nheads,)
    args = (q4, k4, v4, o4, lse, p.cu_q(q), p.cu_k(q), p.slopes_or(lse), *p.sparse_args(lse),
            p.sparse_order(lse, nheads, 1, num_m, config.block_m), *p.dropout_args(lse),
            *p.strides(q4), *p.strides(k4), *p.strides(v4), *p.strides(o4),
            *p.lse_strides(lse), *p.slope_strides(),
            nheads, nheads // nheads_k, p.max_seqlen_q, p.max_seqlen_k, p.window_left, p.window_right,
            p.qk_scale, p.softcap_scale, p.alibi_log2)
    block_d, block_d2 = head_dim_parts(q4.shape[3], config.block_d, config.split_head_dim)
    block_dv, block_dv2 = head_dim_parts(v4.shape[3], config.block_dv, config.split_head_dim)
    constexprs = dict(HEAD_DIM=q4.shape[3], HEAD_DIM_V=v4.shape[3],
                      BLOCK_M=config.block_m, BLOCK_N=config.block_n,
                      BLOCK_D=block_d, BLOCK_DV=block_dv, **feature_constexprs(p, q.dtype),
                      BLOCK_D2=block_d2, BLOCK_DV2=block_dv2)
    return _launch_fwd, grid, args, constexprs, config.num_warps, config.num_stages, {}


class ForwardPlan(plan.Plan):
    """The forward's launch bound to its compiled kernel once per layout (``plan_fwd``; kept by
    ``ops._cached_fwd_plan``), as ``bwd.BackwardPlan`` does for the backward: a forward of that
    layout allocates out and lse and hands the C launcher its arguments, skipping the options'
    object (``KernelParams``), the config and kernel choice (``hopper.usable``), the launch's
    assembly and the launcher's cache lookup. Why: on the H200's host a forward cost ~160 us of
    Python (v15, ``scripts/experiments/host_profile_v15.py``), about the GPU time of a 1k
    forward; the launch itself ~40 of it.

    ``run`` returns None (the caller takes the general path) unless q, k, v have the layouts the
    plan was made for, 16-byte aligned, on the same device; varlen's cu_seqlens as
    ``BackwardPlan.run`` takes them."""

    __slots__ = ("out_shape", "lse_shape")

    def __init__(self, launches: tuple, given: tuple, p, out_shape: tuple, lse_shape: tuple):
        super().__init__(launches, given, p)
        self.out_shape, self.lse_shape = out_shape, lse_shape

    def run(self, q, k, v, cu_seqlens_q=None, cu_seqlens_k=None) -> tuple | None:
        if not self.accepts((q, k, v), cu_seqlens_q, cu_seqlens_k):
            return None
        # out as the general path allocates it where it can (tests poison torch.empty_like)
        out = (torch.empty_like(q, memory_format=torch.contiguous_format) if q.shape == self.out_shape
               else torch.empty(self.out_shape, dtype=q.dtype, device=q.device))
        lse = torch.empty(self.lse_shape, dtype=torch.float32, device=q.device)
        plan.run(self.launches, (q, k, v, out, lse, cu_seqlens_q, cu_seqlens_k))
        return out, lse


def plan_fwd(q, k, v, p, config) -> ForwardPlan | None:
    """A ``ForwardPlan`` for forwards with these inputs' layouts (dense or varlen, without ALiBi,
    dropout or a block mask; 16-byte aligned, unit last stride), or None where the forward
    takes the general path (the launchers' fast path off, or its kernel not compiled for this
    specialization yet: the first forward of a layout always goes the general way)."""
    if not plan.serves(p, q, k, v):
        return None
    # out and lse as meta tensors: the shapes, dtypes and a 16-byte aligned (0) address of what
    # the forward allocates
    out = torch.empty((*q.shape[:-1], v.shape[-1]), dtype=q.dtype, device="meta")
    lse = p.new_lse(q.to("meta"))
    builder = hopper.fwd_launch if hopper.usable(q, k, v, p, config) else _fwd_launch
    bound = plan.bind([builder(q, k, v, out, lse, p, config)], (q, k, v, out, lse, *plan.cu_seqlens(p)))
    if bound is None:
        return None
    return ForwardPlan(bound, (q, k, v), p, tuple(out.shape), tuple(lse.shape))
