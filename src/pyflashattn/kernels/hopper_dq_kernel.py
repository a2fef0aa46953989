"""The backward's dQ kernel for Hopper, in Gluon: one warpgroup per program of
``BLOCK_M`` query rows of one (batch, head), K and V streamed through TMA rings, Q and dO read by
the wgmmas straight from shared memory (no registers held for them), the dots kept in flight
around the elementwise work as the dK/dV kernel does:

    step t (key block j_lo + t):
      issue S = Q K(t)^T, issue dP = dO V(t)^T          (both operands in shared memory)
      wait for dQ(t-1) and S                            -> refill K's slot t-1
      P = exp2(S * scale - lse), masked on the diagonal (dP still on the tensor cores)
      wait for dP                                       -> refill V's slot t
      dS = P (dP - delta); issue dQ += dS K(t)          (dS from registers; runs under step t+1's issue)

It replaces the Triton dQ kernel (``bwd._bwd_dq_kernel``) where ``hopper.dq_usable`` says so:
dense 16-bit inputs, head dim 64 or 128, full or causal attention with ``seqlen_q <=
seqlen_k``, dQ written (not added) into a contiguous buffer. Why: the Triton dQ kernel waits
for each of its three matmuls before the next (``wgmma.wait_group 0``), as the Triton dK/dV did
before its Gluon successor gained 6-13 % (v7 in docs/performance.md). Measured (v13):
forward+backward +2-4 % at 4k-16k, +24 % at d=128 causal 1k; shipped at d 64 and 128
(``hopper_dq_block_n = 64``; warp-specialized at d=128).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_init, warpgroup_mma_wait)

from .hopper_bwd_kernel import _alibi_lse, _head_scales, _scores
from .hopper_dropout import dropout_keep
from .hopper_fwd_kernel import _key_blocks, _kv_barriers, _load_tile, _program

LOG2E: gl.constexpr = gl.constexpr(1.4426950408889634)


@gluon.jit
def _dq_probs(s, lse2, block, n_full, offs_m, offs_n, seqlen_k, causal_shift, scales, CAUSAL: gl.constexpr,
              HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, BLOCK_N: gl.constexpr):
    """P = exp2(S * scale - lse) of key block ``block``, 0 where it is masked (from ``n_full``
    on): past the sequence's keys, which the 2-D descriptor reads from the next sequence, or
    above the causal diagonal; with softcap times dS's factor ``1 - tanh^2``
    (``hopper_bwd_kernel._scores``), since P is only needed for dS here; ALiBi's bias as there."""
    rel = 0
    if HAS_ALIBI == 2:  # one-sided: the keys' part only (hopper_bwd_kernel._scores)
        rel = gl.expand_dims(block * BLOCK_N + offs_n - scales[3], 0)
    elif HAS_ALIBI:  # ALiBi's distance, queries down and keys across
        rel = gl.expand_dims(block * BLOCK_N + offs_n, 0) - gl.expand_dims(offs_m + causal_shift, 1)
    s2, dmod = _scores(s, scales, rel, HAS_SOFTCAP, HAS_ALIBI)
    p = gl.exp2(s2 - gl.expand_dims(lse2, 1))
    if block >= n_full:
        cols = gl.expand_dims(block * BLOCK_N + offs_n, 0)
        valid = cols < seqlen_k
        if CAUSAL:
            valid = valid & (cols <= gl.expand_dims(offs_m, 1) + causal_shift)
        p = gl.where(valid, p, 0.0)
    if HAS_SOFTCAP:
        p = p * dmod
    return p


@gluon.jit
def _dq_steps(q_smem, do_smem, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, refill, n_steps, j_lo, n_full,
              lse2, delta, offs_m, seqlen_k, causal_shift, scales, CAUSAL: gl.constexpr, WS: gl.constexpr,
              HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, s_layout: gl.constexpr, dq_layout: gl.constexpr,
              dropout, HAS_DROPOUT: gl.constexpr):
    """dQ (unscaled) of the rows of ``q_smem`` over key blocks ``[j_lo, j_lo + n_steps)``, the
    step loop of the module docstring, returned with every wgmma retired. One-warpgroup kernel
    (``WS`` off): the program refills each ring slot itself (``refill`` = the K and V
    descriptors, the first key row, the column). ``WS``: a consumer warpgroup of
    ``dq_hopper_ws_kernel``, which releases each slot on ``k_empty`` / ``v_empty`` for the
    producer warp instead. ``HAS_DROPOUT``: dP dropped and scaled as in the forward's P V
    (``hopper_dropout.dropout_keep``; ``dropout`` = (seed, batch * nheads + head, keep threshold,
    1 / P(keep))), so that dS = P (dP' - delta) as FlashAttention-2's Algorithm 2."""
    dtype: gl.constexpr = q_smem.dtype
    NUM_STAGES: gl.constexpr = k_smem.shape[0]
    BLOCK_N: gl.constexpr = k_smem.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.shape[2]
    BLOCK_M: gl.constexpr = q_smem.shape[0]
    ds_op_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=dq_layout, k_width=2)
    k_desc, v_desc, row_k, kv_col = refill
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    dq = warpgroup_mma_init(gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=dq_layout))
    # the last step's dS stays live until its wgmma retires (the deps below); the score and dP
    # accumulators of the last step are the (ignored, use_acc=False) inputs of this step's
    ds_op = gl.zeros([BLOCK_M, BLOCK_N], dtype, layout=ds_op_layout)
    s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    dp = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    for t in range(n_steps):
        slot = t % NUM_STAGES
        phase = (t // NUM_STAGES) & 1
        mbarrier.wait(k_ready.index(slot), phase)
        s = warpgroup_mma(q_smem, k_smem.index(slot).permute((1, 0)), s, use_acc=False, is_async=True)
        mbarrier.wait(v_ready.index(slot), phase)
        dp = warpgroup_mma(do_smem, v_smem.index(slot).permute((1, 0)), dp, use_acc=False, is_async=True)
        # groups retire in order: dQ(t-1), then S(t); dP(t) may run on
        s, dq, ds_op = warpgroup_mma_wait(1, deps=(s, dq, ds_op))
        if not WS and t >= 1:  # K(t-1) read by S(t-1) and dQ(t-1), both done: its slot takes block t-1+NUM_STAGES
            _load_tile(k_desc, k_smem, k_ready, t - 1 + NUM_STAGES, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
        p = _dq_probs(s, lse2, j_lo + t, n_full, offs_m, offs_n, seqlen_k, causal_shift, scales, CAUSAL, HAS_SOFTCAP,
                      HAS_ALIBI, BLOCK_N)
        dp = warpgroup_mma_wait(0, deps=(dp,))
        if HAS_DROPOUT:
            dp = gl.where(dropout_keep(dropout[0], dropout[1], offs_m, offs_n, (j_lo + t) * BLOCK_N, dropout[2],
                                       s_layout), dp * dropout[3], 0.0)
        # V(t) read by dP(t), done: its slot may take block t+NUM_STAGES
        if WS:
            mbarrier.arrive(v_empty.index(slot), count=1)
        else:
            _load_tile(v_desc, v_smem, v_ready, t + NUM_STAGES, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
        ds = p * (dp - gl.expand_dims(delta, 1))   # dS, the gradient of the scaled scores
        ds_op = gl.convert_layout(ds.to(dtype), ds_op_layout)
        dq = warpgroup_mma(ds_op, k_smem.index(slot), dq, is_async=True)
        if WS:
            # every wgmma retired at the step's end: with dQ's in flight across the loop's back
            # edge, ptxas serializes all of the warp-specialized kernel's wgmmas (40 full waits
            # for 40 at d=128, as the warp-specialized dK/dV had before v11); then K(t) is free
            ds_op = warpgroup_mma_wait(0, deps=(ds_op,))
            mbarrier.arrive(k_empty.index(slot), count=1)
    dq, ds_op = warpgroup_mma_wait(0, deps=(dq, ds_op))
    return dq


@gluon.jit
def _dropout(SEED, bh, threshold, scale, HAS_DROPOUT: gl.constexpr):
    """``_dq_steps``' dropout arguments: (seed, batch * nheads + head, keep threshold, 1 / P(keep)),
    or none."""
    if HAS_DROPOUT:
        return gl.load(SEED), bh, threshold, scale
    else:
        return ()


@gluon.jit
def _store_dq(dq, m0, row0_q, q_col, seqlen_q, softmax_scale, DQ, stride_dqs, dq_layout: gl.constexpr):
    """dQ * softmax_scale of query rows ``[m0, m0 + dq.shape[0])``; rows past ``seqlen_q`` are not stored."""
    rows = m0 + gl.arange(0, dq.shape[0], layout=gl.SliceLayout(1, dq_layout))
    cols = gl.arange(0, dq.shape[1], layout=gl.SliceLayout(0, dq_layout))
    off = gl.expand_dims((row0_q + rows).to(gl.int64) * stride_dqs, 1) + q_col + gl.expand_dims(cols, 0)
    gl.store(DQ + off, (dq * softmax_scale).to(DQ.dtype.element_ty), mask=gl.expand_dims(rows < seqlen_q, 1))


@gluon.jit
def dq_hopper_kernel(q_desc, k_desc, v_desc, do_desc, LSE, DELTA, DQ, CU_Q, CU_K, SLOPES, seqlen_q, seqlen_k, nheads,
                     group, qk_scale, softcap_scale, alibi_log2, softmax_scale, stride_dqs, stride_lh, stride_sb,
                     stride_sh, SEED, drop_threshold, drop_scale, CAUSAL: gl.constexpr, IS_VARLEN: gl.constexpr,
                     HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                     HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr,
                     HAS_DROPOUT: gl.constexpr = False):
    """One program per (query block, batch x head), query blocks fastest and each head's last
    (longest under causal) first, as the forward (``_program``). q, dout, dq ``(b, sq, h, d)``
    and k, v ``(b, sk, hk, d)`` seen as 2-D ``(b * s, h * d)``; lse and delta ``(b, h, sq)``.
    ``IS_VARLEN``: packed ``(total, h, d)`` seen as ``(total, h * d)``, lse and delta
    ``(h, total_q)``, each sequence's rows and lengths from ``CU_Q`` / ``CU_K`` (as the forward's
    ``_program``); a row block that sees no key at all runs one fully masked block (dQ = 0).
    ``HAS_DROPOUT``: dropout with the seed at ``SEED``, the keep threshold and 1 / P(keep)
    (``params.KernelParams.dropout_args``), drawn as the forward draws it."""
    gl.static_assert(NUM_STAGES >= 2)
    dtype: gl.constexpr = q_desc.dtype
    start_m, b, h, row0_q, row0_k, seqlen_q, seqlen_k, lse_base = _program(gl.program_id(0), CU_Q, CU_K, seqlen_q,
                                                                          seqlen_k, nheads, stride_lh, IS_VARLEN,
                                                                          BLOCK_M)
    if IS_VARLEN:
        if start_m * BLOCK_M >= seqlen_q:  # a shorter sequence than the longest: nothing here
            return
    q_col = h * HEAD_DIM
    kv_col = (h // group) * HEAD_DIM
    causal_shift = seqlen_k - seqlen_q           # bottom-right aligned: row i sees keys <= i + shift

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, HEAD_DIM, 16])
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], do_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    k_bar, v_bar, _, _ = _kv_barriers(NUM_STAGES, 0)
    fence_async_shared()

    m0 = start_m * BLOCK_M
    j_lo, n_blocks, n_full, _ = _key_blocks(m0, m0 + BLOCK_M, seqlen_k, causal_shift, 0, CAUSAL, False, BLOCK_N)
    if IS_VARLEN:  # no key for any row (an empty sequence, or causal rows above its diagonal)
        n_blocks = gl.maximum(n_blocks, j_lo + 1)
    n_steps = n_blocks - j_lo
    row_k = row0_k + j_lo * BLOCK_N

    mbarrier.expect(q_bar, q_desc.block_type.nbytes + do_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0_q + m0, q_col], q_bar, q_smem)
    tma.async_copy_global_to_shared(do_desc, [row0_q + m0, q_col], q_bar, do_smem)
    for i in gl.static_range(NUM_STAGES):
        _load_tile(k_desc, k_smem, k_bar, i, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
        _load_tile(v_desc, v_smem, v_bar, i, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)

    # lse and delta of the rows (rows past the end: P = 0)
    offs_m = m0 + gl.arange(0, BLOCK_M, layout=rows_s)
    lse2 = gl.load(LSE + lse_base + offs_m, mask=offs_m < seqlen_q, other=float("inf")) * LOG2E
    delta = gl.load(DELTA + lse_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
    mbarrier.wait(q_bar, 0)
    scales = _head_scales((qk_scale, softcap_scale, SLOPES, alibi_log2, stride_sb, stride_sh), b, h,
                          m0 + causal_shift, HAS_ALIBI)
    lse2 = _alibi_lse(lse2, scales, offs_m, causal_shift, HAS_ALIBI)
    dq = _dq_steps(q_smem, do_smem, k_smem, v_smem, k_bar, v_bar, k_bar, v_bar, (k_desc, v_desc, row_k, kv_col),
                   n_steps, j_lo, n_full, lse2, delta, offs_m, seqlen_k, causal_shift, scales,
                   CAUSAL, False, HAS_SOFTCAP, HAS_ALIBI, s_layout, dq_layout,
                   _dropout(SEED, b * nheads + h, drop_threshold, drop_scale, HAS_DROPOUT), HAS_DROPOUT)

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))
    _store_dq(dq, m0, row0_q, q_col, seqlen_q, softmax_scale, DQ, stride_dqs, dq_layout)


# each consumer warpgroup's query rows in the warp-specialized kernel
WS_ROWS: gl.constexpr = gl.constexpr(64)
# launch with maxnreg=MAXNREG (as the warp-specialized forward): the consumers then take 240
# registers and the producer 24 (setmaxnreg)
MAXNREG = 168


@gluon.jit
def _dq_ws_producer(args):
    """One warp: Q and dO of both consumers, then K(t) and V(t) into their rings, each slot
    refilled once both consumers have released it."""
    (q_desc, k_desc, v_desc, do_desc, q_smem, do_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
     geometry, LSE, DELTA, DQ, scales, softmax_scale, stride_dqs, dropout) = args
    m0, row0_q, row_k, q_col, kv_col, n_steps = geometry[:6]
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    for wg in gl.static_range(2):
        mbarrier.expect(q_bar.index(wg), q_desc.block_type.nbytes + do_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [row0_q + m0 + wg * WS_ROWS, q_col], q_bar.index(wg),
                                        q_smem.index(wg))
        tma.async_copy_global_to_shared(do_desc, [row0_q + m0 + wg * WS_ROWS, q_col], q_bar.index(wg),
                                        do_smem.index(wg))
    for t in range(n_steps):
        slot = t % NUM_STAGES
        phase = (t // NUM_STAGES) & 1
        # a fresh barrier counts as if its phase 1 had completed: the first round does not wait
        mbarrier.wait(k_empty.index(slot), phase ^ 1)
        mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [row_k + t * BLOCK_N, kv_col], k_ready.index(slot), k_smem.index(slot))
        mbarrier.wait(v_empty.index(slot), phase ^ 1)
        mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [row_k + t * BLOCK_N, kv_col], v_ready.index(slot), v_smem.index(slot))


@gluon.jit
def _dq_ws_consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
                    HAS_DROPOUT: gl.constexpr):
    """One warpgroup, query rows ``[m0 + WG * 64, +64)``: the shared step loop (``_dq_steps``,
    ``WS``), then their dQ. Both consumers walk every key block of the program (the rings are
    shared); under causal consumer 0's last block is masked whole."""
    (q_desc, k_desc, v_desc, do_desc, q_smem, do_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
     geometry, LSE, DELTA, DQ, scales, softmax_scale, stride_dqs, dropout) = args
    m0, row0_q, row_k, q_col, kv_col, n_steps, j_lo, seqlen_q, seqlen_k, causal_shift, lse_base = geometry
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.type.shape[2]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, HEAD_DIM, 16])
    start = m0 + WG * WS_ROWS
    # this warpgroup's key blocks past n_full need the mask (_key_blocks over its own rows)
    _, _, n_full, _ = _key_blocks(start, start + WS_ROWS, seqlen_k, causal_shift, 0, CAUSAL, False, BLOCK_N)
    offs_m = start + gl.arange(0, WS_ROWS, layout=gl.SliceLayout(1, s_layout))
    lse2 = gl.load(LSE + lse_base + offs_m, mask=offs_m < seqlen_q, other=float("inf")) * LOG2E
    lse2 = _alibi_lse(lse2, scales, offs_m, causal_shift, HAS_ALIBI)
    delta = gl.load(DELTA + lse_base + offs_m, mask=offs_m < seqlen_q, other=0.0)
    mbarrier.wait(q_bar.index(WG), 0)
    dq = _dq_steps(q_smem.index(WG), do_smem.index(WG), k_smem, v_smem, k_ready, v_ready, k_empty, v_empty,
                   (k_desc, v_desc, row_k, kv_col), n_steps, j_lo, n_full, lse2, delta, offs_m, seqlen_k,
                   causal_shift, scales, CAUSAL, True, HAS_SOFTCAP, HAS_ALIBI, s_layout, dq_layout, dropout,
                   HAS_DROPOUT)
    _store_dq(dq, start, row0_q, q_col, seqlen_q, softmax_scale, DQ, stride_dqs, dq_layout)


@gluon.jit
def dq_hopper_ws_kernel(q_desc, k_desc, v_desc, do_desc, LSE, DELTA, DQ, CU_Q, CU_K, SLOPES, seqlen_q, seqlen_k,
                        nheads, group, qk_scale, softcap_scale, alibi_log2, softmax_scale, stride_dqs, stride_lh,
                        stride_sb, stride_sh, SEED, drop_threshold, drop_scale, CAUSAL: gl.constexpr,
                        IS_VARLEN: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
                        BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                        NUM_STAGES: gl.constexpr, num_warps: gl.constexpr, HAS_DROPOUT: gl.constexpr = False):
    """``dq_hopper_kernel``'s work with warp specialization (``hopper_dq_ws``, shipped at d=128): 128
    query rows per program, two consumer warpgroups of 64 rows sharing the K/V tiles a producer
    warp streams in, so each K/V tile read from L2 serves twice the rows (the one-warpgroup
    kernel's 64-row programs read K/V twice as often; the forward's warp-specialized kernel, built
    the same way, ran 5-39 % faster than its one-warpgroup sibling, v7). Same arguments."""
    gl.static_assert(BLOCK_M == 2 * WS_ROWS)  # two consumer warpgroups
    gl.static_assert(num_warps == 4)          # the default partition is consumer 0
    gl.static_assert(NUM_STAGES >= 2)
    dtype: gl.constexpr = q_desc.dtype
    start_m, b, h, row0_q, row0_k, seqlen_q, seqlen_k, lse_base = _program(gl.program_id(0), CU_Q, CU_K, seqlen_q,
                                                                          seqlen_k, nheads, stride_lh, IS_VARLEN,
                                                                          BLOCK_M)
    if IS_VARLEN:
        if start_m * BLOCK_M >= seqlen_q:  # a shorter sequence than the longest: nothing here
            return
    causal_shift = seqlen_k - seqlen_q
    m0 = start_m * BLOCK_M
    j_lo, n_blocks, _, _ = _key_blocks(m0, m0 + BLOCK_M, seqlen_k, causal_shift, 0, CAUSAL, False, BLOCK_N)
    if IS_VARLEN:  # no key for any row: one fully masked block (dq_hopper_kernel)
        n_blocks = gl.maximum(n_blocks, j_lo + 1)
    n_steps = n_blocks - j_lo

    q_smem = gl.allocate_shared_memory(dtype, [2, WS_ROWS, HEAD_DIM], q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [2, WS_ROWS, HEAD_DIM], do_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_bar.index(i), count=1)
    k_ready, v_ready, k_empty, v_empty = _kv_barriers(NUM_STAGES, 2)   # two consumer warpgroups
    fence_async_shared()

    geometry = (m0, row0_q, row0_k + j_lo * BLOCK_N, h * HEAD_DIM, (h // group) * HEAD_DIM, n_steps, j_lo, seqlen_q,
                seqlen_k, causal_shift, lse_base)
    args = (q_desc, k_desc, v_desc, do_desc, q_smem, do_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready,
            v_empty, geometry, LSE, DELTA, DQ,
            _head_scales((qk_scale, softcap_scale, SLOPES, alibi_log2, stride_sb, stride_sh), b, h,
                         m0 + causal_shift, HAS_ALIBI),
            softmax_scale, stride_dqs, _dropout(SEED, b * nheads + h, drop_threshold, drop_scale, HAS_DROPOUT))
    gl.warp_specialize([(_dq_ws_consumer, (args, 0, CAUSAL, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT)),
                        (_dq_ws_consumer, (args, 1, CAUSAL, HAS_SOFTCAP, HAS_ALIBI, HAS_DROPOUT)),
                        (_dq_ws_producer, (args,))],
                       [4, 1], [240, 24])
