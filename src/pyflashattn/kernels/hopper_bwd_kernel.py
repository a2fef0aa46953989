"""The backward's dK/dV kernel for Hopper, in Gluon (see ``hopper_fwd_kernel`` for why Gluon).

Imported only by ``hopper`` on an sm_90 GPU with Triton 3.6's Gluon API; ``bwd.py``'s Triton
kernels cover everything else. The dQ kernel stays Triton's (``bwd._bwd_dq_kernel``), as does
the preprocess (delta), except where the warp-specialized kernel's ``FUSED_DQ`` (``_dq_step``)
adds dQ into an fp32 buffer itself: 5 matmuls per block pair instead of 7, not deterministic.

One program per (key block of ``BLOCK_N`` keys, batch x kv-head), one warpgroup: K and V stay in
shared memory, Q and dO stream through a TMA ring of ``NUM_STAGES`` slots, and each step keeps the
matmuls in flight around the elementwise work:

    step t (query block t of the walk):
      issue S^T = K Q(t)^T                               (async, both operands in shared memory)
      wait for dK(t-1), dV(t-1)                          -> refill slot t-1; issue dP^T = V dO(t)^T
      wait for S^T; P^T = exp2(S^T * scale - lse)        (dP^T still on the tensor cores)
      issue dV += P^T dO(t)                              (P^T from registers)
      wait for dP^T; dS^T = P^T (dP^T - delta)           (dV still running)
      issue dK += dS^T Q(t)                              (runs under the next step's issue)

GQA: the group's query heads are one flat walk of steps, so the ring never drains between heads.
Causal (bottom-right): the diagonal's query blocks run in a loop of their own with the mask, the
rest without. Rows past ``seqlen_q`` get ``lse = +inf`` (P = 0); keys past ``seqlen_k`` are computed
from whatever the descriptor reads and never stored. Scope as ``hopper.usable`` says.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language._core import builtin
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_init, warpgroup_mma_wait)

from .hopper_dropout import dropout_keep_transposed
from .hopper_fwd_kernel import _alibi_slope2, _tanh_approx

LOG2E: gl.constexpr = gl.constexpr(1.4426950408889634)


@gluon.jit
def _load_q_do(q_desc, do_desc, q_smem, do_smem, bars, t, n_steps, n_q, m_first, row0, h0,
               NUM_STAGES: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr):
    """TMA Q and dO of flat step ``t`` (query head h0 + t // n_q, block m_first + t % n_q) into
    slot ``t % NUM_STAGES`` (nothing past ``n_steps``)."""
    slot = t % NUM_STAGES
    pred = t < n_steps
    row = (m_first + t % n_q) * BLOCK_M
    col = (h0 + t // n_q) * HEAD_DIM
    mbarrier.expect(bars.index(slot), q_desc.block_type.nbytes + do_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(q_desc, [row0 + row, col], bars.index(slot), q_smem.index(slot),
                                    pred=pred)
    tma.async_copy_global_to_shared(do_desc, [row0 + row, col], bars.index(slot), do_smem.index(slot),
                                    pred=pred)


@gluon.jit
def _scores(s, scales, rel, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr):
    """Raw scores -> base-2 scores and ``dS / d(scale * qk)`` (multiplies dS), as
    ``mask.scores_log2`` and the forward's ``_softmax_step``: with softcap ``c``,
    ``c * tanh(scale * qk / c) * log2 e`` by one ``tanh.approx`` (the forward's, so that P here
    is the forward's P) and ``1 - tanh^2``; without, ``qk * scale * log2 e`` and 1. ALiBi then
    subtracts ``slope * |rel|`` in base 2 (``rel``: key - query - (seqlen_k - seqlen_q), the
    tile's; a bias of the positions only, so dS is unchanged). ``scales``:
    ``(qk_scale, softcap_scale, slope2, anchor)``. ``HAS_ALIBI`` 2 (one-sided: no visible key
    right of the diagonal): ``rel`` is ``key - anchor``, along the keys' axis only, and the
    bias added is ``slope * rel``; the per-row rest, ``slope * (row + shift - anchor)``, is
    the caller's to fold into lse (``_alibi_lse``), as the forward's ``_softmax_step`` leaves
    it out of the softmax: a conversion per key and no extra instruction per score, where
    ``|rel|`` per score costs ~5."""
    qk_scale, softcap_scale, slope2, _ = scales
    if HAS_SOFTCAP:
        th = _tanh_approx(s * softcap_scale)
        s2 = th * qk_scale
        dmod = 1.0 - th * th
    else:
        s2 = s * qk_scale
        dmod = 1.0
    if HAS_ALIBI == 2:
        s2 = s2 + slope2 * rel.to(gl.float32)
    elif HAS_ALIBI:
        s2 = s2 - slope2 * gl.abs(rel).to(gl.float32)
    return s2, dmod


@gluon.jit
def _alibi_lse(lse2, scales, rows, causal_shift, HAS_ALIBI: gl.constexpr):
    """lse (base 2) of query ``rows`` with one-sided ALiBi's per-row part folded in
    (``_scores``): ``+ slope * (row + shift - anchor)``; as it was otherwise."""
    if HAS_ALIBI == 2:
        _, _, slope2, anchor = scales
        lse2 = lse2 + slope2 * (rows + causal_shift - anchor).to(gl.float32)
    return lse2


@gluon.jit
def _head_scales(score_args, b, h, anchor, HAS_ALIBI: gl.constexpr):
    """``_scores``'s ``scales`` for query head ``h`` of batch ``b`` from the kernels' score
    arguments ``(qk_scale, softcap_scale, SLOPES, alibi_log2, stride_sb, stride_sh)``;
    ``anchor``: one-sided ALiBi's key position near the program's diagonal (its first key, or
    its first row + shift), so that the values it adds stay small where P is not."""
    qk_scale, softcap_scale, SLOPES, alibi_log2, stride_sb, stride_sh = score_args
    return (qk_scale, softcap_scale, _alibi_slope2(SLOPES, b, h, alibi_log2, stride_sb, stride_sh, HAS_ALIBI),
            anchor)


@gluon.jit
def _dkdv_steps(dk, dv, pt_op, ds_op, t_begin, t_end, q_desc, do_desc, q_smem, do_smem, k_smem, v_smem, bars,
                empty, stats, offs_n, offs_m, b, nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q,
                seqlen_q, causal_shift, scales, dq_args, MASKED: gl.constexpr, WS: gl.constexpr,
                FUSED_DQ: gl.constexpr, IS_VARLEN: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
                PADDED_STATS: gl.constexpr, WG: gl.constexpr, st_layout: gl.constexpr, p_op: gl.constexpr,
                BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, dropout,
                HAS_DROPOUT: gl.constexpr):
    """Flat steps ``[t_begin, t_end)`` (see the module docstring); ``MASKED``: apply the causal
    mask (the diagonal's blocks only, a loop of its own so the rest carries no branch). ``WS``:
    a consumer warpgroup of the warp-specialized kernel (``hopper_bwd_ws_kernel``), which
    releases a finished slot on ``empty`` for the producer warp instead of refilling it itself,
    and (without ``FUSED_DQ``) retires every wgmma at each step's end.
    ``FUSED_DQ`` (warp-specialized only): consumer ``WG`` also adds its share of each step's dQ
    into an fp32 buffer (``_dq_step``; ``dq_args``). ``scales``: ``(qk_scale, softcap_scale,
    slope2)`` of this range's query head; ``HAS_SOFTCAP``, ``HAS_ALIBI``: the scores as the
    forward's (``_scores``). ``stats``: ``(LSE, DELTA, stats_len)``, lse and delta ``(b, h, sq)``
    (``IS_VARLEN``: ``(h, total_q)``, row stride ``stride_lh``, this sequence's rows from
    ``row0_q``); with ``PADDED_STATS`` (dense only) ``LSE`` is the preprocess's
    ``(b, h, 2, stats_len)`` buffer instead, lse in base 2 then delta, padded past ``seqlen_q``
    with +inf and 0, read without masks (``bwd._new_stats``). ``HAS_DROPOUT``: dV sees P^T with
    dropout's zeros and scale, and dP^T is dropped the same way (FlashAttention-2's Algorithm 2,
    as the Triton dK/dV kernel); ``dropout`` = (seed, keep threshold, 1 / P(keep), the keys'
    first index), the mask drawn per step (``hopper_dropout.dropout_keep_transposed``)."""
    LSE, DELTA, stats_len = stats
    dtype: gl.constexpr = q_desc.dtype
    BLOCK_N: gl.constexpr = k_smem.shape[0]
    # the score and dP accumulators of the last step are the (ignored, use_acc=False) inputs of
    # this step's: a zero tile kept live for the purpose would cost 32 registers at d=128
    st = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=st_layout)
    dpt = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=st_layout)
    for t in range(t_begin, t_end):
        slot = t % NUM_STAGES
        if FUSED_DQ:
            # fresh (ignored) inputs: the carried tiles would stay live beside dQ's accumulator
            st = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=st_layout)
            dpt = gl.zeros([BLOCK_N, BLOCK_M], gl.float32, layout=st_layout)
        mbarrier.wait(bars.index(slot), (t // NUM_STAGES) & 1)
        st = warpgroup_mma(k_smem, q_smem.index(slot).permute((1, 0)), st, use_acc=False, is_async=True)
        # lse and delta of this step's query rows (rows past the end: P = 0)
        rows = (m_first + t % n_q) * BLOCK_M + offs_m
        if PADDED_STATS:
            p_row = (b * nheads + h0 + t // n_q).to(gl.int64) * (2 * stats_len) + rows
            lse2 = gl.load(LSE + p_row)
        else:
            if IS_VARLEN:
                p_row = (h0 + t // n_q).to(gl.int64) * stride_lh + row0_q + rows
            else:
                p_row = (b * nheads + h0 + t // n_q).to(gl.int64) * seqlen_q + rows
            lse2 = gl.load(LSE + p_row, mask=rows < seqlen_q, other=float("inf")) * LOG2E
        # dK(t-1) and dV(t-1) done, so slot t-1 is free for step t-1+NUM_STAGES; dP^T is issued
        # only now: with it in flight beside them, d=128 spilled and ran 3-10 % slower (v6)
        dk, dv, pt_op, ds_op = warpgroup_mma_wait(1, deps=(dk, dv, pt_op, ds_op))
        dpt = warpgroup_mma(v_smem, do_smem.index(slot).permute((1, 0)), dpt, use_acc=False, is_async=True)
        if t >= 1:
            if WS:
                mbarrier.arrive(empty.index((t - 1) % NUM_STAGES), count=1)
            else:
                _load_q_do(q_desc, do_desc, q_smem, do_smem, bars, t - 1 + NUM_STAGES, n_steps, n_q, m_first,
                           row0_q, h0, NUM_STAGES, BLOCK_M, HEAD_DIM)
        st = warpgroup_mma_wait(1, deps=(st,))
        rel = 0
        if HAS_ALIBI:  # ALiBi's distance, keys down and queries across as S^T (two-sided only:
            # the one-sided form spilled more here and saved ~1 % of the kernel, v15 offline)
            rel = gl.expand_dims(offs_n - causal_shift, 1) - gl.expand_dims(rows, 0)
        s2, dmod = _scores(st, scales, rel, HAS_SOFTCAP, HAS_ALIBI)
        if MASKED:
            visible = gl.expand_dims(offs_n - causal_shift, 1) <= gl.expand_dims(rows, 0)
            s2 = gl.where(visible, s2, float("-inf"))
        pt = gl.exp2(s2 - gl.expand_dims(lse2, 0))
        if HAS_DROPOUT:
            keep_t = dropout_keep_transposed(dropout[0], b * nheads + h0 + t // n_q, (m_first + t % n_q) * BLOCK_M,
                                             dropout[3], dropout[1], BLOCK_M, BLOCK_N, st_layout)
            pt_op = gl.convert_layout(gl.where(keep_t, pt * dropout[2], 0.0).to(dtype), p_op)
        else:
            pt_op = gl.convert_layout(pt.to(dtype), p_op)
        if HAS_SOFTCAP:  # dS^T's factor folded in now: P^T * (1 - tanh^2) stays live in P^T's registers
            pt = pt * dmod
        dv = warpgroup_mma(pt_op, do_smem.index(slot), dv, is_async=True)
        if PADDED_STATS:
            delta = gl.load(LSE + p_row + stats_len)
        else:
            delta = gl.load(DELTA + p_row, mask=rows < seqlen_q, other=0.0)
        dpt = warpgroup_mma_wait(1, deps=(dpt,))
        if HAS_DROPOUT:
            # a new tile: dpt itself stays the next step's (ignored) wgmma input
            dst = pt * (gl.where(keep_t, dpt * dropout[2], 0.0) - gl.expand_dims(delta, 0))
        else:
            dst = pt * (dpt - gl.expand_dims(delta, 0))
        ds_op = gl.convert_layout(dst.to(dtype), p_op)
        dk = warpgroup_mma(ds_op, q_smem.index(slot), dk, is_async=True)
        if (WS and not FUSED_DQ) or HAS_DROPOUT:
            # every wgmma retired at the step's end: with dK's still in flight across the loop's
            # back edge, ptxas serializes all of the warp-specialized kernel's wgmmas (C7512,
            # one full wait per wgmma; v10 item 6). Draining: 4 full waits of 48, 5% faster (v11).
            # With dropout the one-warpgroup kernel too: the mask's turn through shared memory made
            # ptxas serialize every wgmma without causal (C7514: 16 of 16 at d=64, 24 of 24 at
            # d=128; drained, 2 of 16 and 2 of 24; offline)
            pt_op, ds_op = warpgroup_mma_wait(0, deps=(pt_op, ds_op))
        if FUSED_DQ:
            # keys past seqlen_k (read from the next sequence, or TMA's zeros) must not reach dQ
            dst = gl.where(gl.expand_dims(offs_n < seqlen_q + causal_shift, 1), dst, 0.0)
            _dq_step(dst.to(dtype), t, (m_first + t % n_q) * BLOCK_M, row0_q, h0 + t // n_q, dq_args, WG, BLOCK_M,
                     HEAD_DIM)
    return dk, dv, pt_op, ds_op


@gluon.jit
def _dq_step(dst, t, m0, row0_q, head, dq_args, WG: gl.constexpr, BLOCK_M: gl.constexpr, HEAD_DIM: gl.constexpr):
    """dQ of step ``t``'s query rows ``[m0, m0 + BLOCK_M)`` over the program's 128 keys, half of
    its columns per consumer warpgroup, added into the fp32 buffer behind ``dq_desc``
    ``(b * sq, h * d)``: each consumer puts its dS^T (64 keys x BLOCK_M) into shared memory (two
    buffers, by step parity), both wait for both halves (``ds_ready``, two arrivals), and
    consumer ``WG`` computes dQ[:, WG * d/2 : (WG + 1) * d/2] = dS K[:, that half] (K of both
    consumers), stores it to shared memory and adds it into memory by a TMA reduce-add, which
    runs on while the consumer goes on (FlashAttention-3's way). A dS^T buffer is written again
    two steps later, by which time both have passed this step's wait for dQ's matmuls (they
    arrived on the next buffer after it). Rows past the batch's ``seqlen_q`` have P = 0, so
    their dQ is exactly 0 and adding it into the next batch's rows changes nothing; TMA clips
    rows past the buffer's end."""
    ds_smem, ds_ready, k_all, dq_desc, dq_smem = dq_args
    HALF: gl.constexpr = HEAD_DIM // 2
    dq_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, HALF, 16])
    buf = t % 2
    ds_smem.index(buf * 2 + WG).store(dst)
    fence_async_shared()
    mbarrier.arrive(ds_ready.index(buf), count=1)
    mbarrier.wait(ds_ready.index(buf), (t // 2) & 1)
    dq = gl.zeros([BLOCK_M, HALF], gl.float32, layout=dq_layout)
    dq = warpgroup_mma(ds_smem.index(buf * 2).permute((1, 0)), k_all.index(0).slice(WG * HALF, HALF, dim=1),
                       dq, use_acc=False, is_async=True)
    dq = warpgroup_mma(ds_smem.index(buf * 2 + 1).permute((1, 0)), k_all.index(1).slice(WG * HALF, HALF, dim=1),
                       dq, is_async=True)
    dq = warpgroup_mma_wait(0, deps=(dq,))
    # the reduce-add issued a step ago has read the tile by now: wait to be sure, then reuse it
    tma.store_wait(0)
    gl.thread_barrier()
    dq_smem.index(WG).store(dq)
    fence_async_shared()
    gl.thread_barrier()
    _tma_reduce_add(dq_desc, [row0_q + m0, head * HEAD_DIM + WG * HALF], dq_smem.index(WG))


@builtin
def _tma_reduce_add(tensor_desc, coord, src, _semantic=None):
    """``tensor_desc[coord...] += src`` (a shared-memory tile) by a TMA reduce-add
    (``cp.reduce.async.bulk.tensor``), asynchronous like ``tma.async_copy_shared_to_global``
    (``tma.store_wait`` before ``src`` is written again). Triton 3.6's Gluon builder has the op
    (``create_async_tma_reduce``); its Python API does not expose it yet."""
    from triton._C.libtriton import ir
    coord = _semantic._convert_to_ir_values(coord, require_i64=False)
    _semantic.builder.create_async_tma_reduce(ir.DESCRIPTOR_REDUCE_KIND.ADD, tensor_desc.handle, coord, src.handle)


@gluon.jit
def _dkdv_program(CU_Q, CU_K, seqlen_q, seqlen_k, nheads, group, CAUSAL: gl.constexpr, IS_VARLEN: gl.constexpr,
                  BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr):
    """This program's key block, batch and kv-head, and its walk: the query blocks that see any
    of keys ``[n0, n0 + BLOCK_N)`` from ``m_first`` on, ``n_q`` per query head of the group, as
    ``n_steps`` flat steps. The 2-D descriptors are ``(b * s, h * d)``: batch b's rows start at
    ``row0_q`` / ``row0_k``; ``IS_VARLEN``: packed ``(total, h * d)``, sequence b's rows and
    lengths from ``CU_Q`` / ``CU_K`` (``seqlen_q`` / ``seqlen_k`` the longest, returned as this
    sequence's), and ``n0`` may lie past its keys (the caller returns). Each head's key blocks run in turn (every head's first key block
    first, longest-first under causal, measured 5-25 % slower: the 8th session's
    ``scripts/experiments/gluon_bwd_ws.py``)."""
    num_n = gl.cdiv(seqlen_k, BLOCK_N)
    nheads_k = nheads // group
    pid = gl.program_id(0)
    bhk = pid // num_n
    n0 = (pid % num_n) * BLOCK_N
    b = bhk // nheads_k
    hk = bhk % nheads_k
    if IS_VARLEN:
        row0_q = gl.load(CU_Q + b)
        seqlen_q = gl.load(CU_Q + b + 1) - row0_q
        row0_k = gl.load(CU_K + b)
        seqlen_k = gl.load(CU_K + b + 1) - row0_k
    else:
        row0_q = b * seqlen_q
        row0_k = b * seqlen_k
    causal_shift = seqlen_k - seqlen_q        # query i sees keys j <= i + shift
    if CAUSAL:
        m_first = gl.maximum(n0 - causal_shift, 0) // BLOCK_M
    else:
        m_first = 0
    n_q = gl.cdiv(seqlen_q, BLOCK_M) - m_first
    return b, hk, n0, row0_q, row0_k, seqlen_q, seqlen_k, causal_shift, m_first, n_q, n_q * group, hk * group


@gluon.jit
def _dkdv_walk(q_desc, do_desc, q_smem, do_smem, k_smem, v_smem, bars, empty, stats, n0, b, nheads, stride_lh,
               h0, n_q, n_steps, m_first, row0_q, seqlen_q, causal_shift, score_args, group, dq_args,
               CAUSAL: gl.constexpr, WS: gl.constexpr, FUSED_DQ: gl.constexpr, IS_VARLEN: gl.constexpr,
               HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, PADDED_STATS: gl.constexpr, WG: gl.constexpr,
               st_layout: gl.constexpr, acc_layout: gl.constexpr, BLOCK_M: gl.constexpr, NUM_STAGES: gl.constexpr,
               drop_args, HAS_DROPOUT: gl.constexpr):
    """dK, dV of keys ``[n0, n0 + k_smem.shape[0])`` over every step of the program: per query
    head of the group, the diagonal steps with the causal mask, then the rest without; returned
    with every dot retired. ``score_args``: as ``_head_scales`` takes them. ``drop_args``: (the
    seed's pointer, keep threshold, 1 / P(keep)) where ``HAS_DROPOUT``."""
    dtype: gl.constexpr = q_desc.dtype
    BLOCK_N: gl.constexpr = k_smem.shape[0]
    HEAD_DIM: gl.constexpr = k_smem.shape[1]
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc_layout, k_width=2)
    offs_n = n0 + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(1, st_layout))
    offs_m = gl.arange(0, BLOCK_M, layout=gl.SliceLayout(0, st_layout))
    dk = warpgroup_mma_init(gl.zeros([BLOCK_N, HEAD_DIM], gl.float32, layout=acc_layout))
    dv = warpgroup_mma_init(gl.zeros([BLOCK_N, HEAD_DIM], gl.float32, layout=acc_layout))
    # the register operands of the dots in flight stay live until their wait (the deps in
    # _dkdv_steps): the wgmma reads them while it runs
    pt_op = gl.zeros([BLOCK_N, BLOCK_M], dtype, layout=p_op)
    ds_op = gl.zeros([BLOCK_N, BLOCK_M], dtype, layout=p_op)
    # how many of a head's steps need the causal mask: those before the first query block that
    # sees all of these keys
    if CAUSAL:
        n_masked = gl.minimum(gl.cdiv(gl.maximum(n0 + BLOCK_N - 1 - causal_shift, 0), BLOCK_M) - m_first, n_q)
    else:
        n_masked = 0
    if HAS_DROPOUT:
        dropout = (gl.load(drop_args[0]), drop_args[1], drop_args[2], n0)
    else:
        dropout = ()
    for g in range(group):
        t0 = g * n_q
        scales = _head_scales(score_args, b, h0 + g, 0, HAS_ALIBI)
        if CAUSAL:
            dk, dv, pt_op, ds_op = _dkdv_steps(dk, dv, pt_op, ds_op, t0, t0 + n_masked, q_desc, do_desc, q_smem,
                                               do_smem, k_smem, v_smem, bars, empty, stats, offs_n, offs_m, b,
                                               nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, seqlen_q,
                                               causal_shift, scales, dq_args, True, WS, FUSED_DQ, IS_VARLEN,
                                               HAS_SOFTCAP, HAS_ALIBI, PADDED_STATS, WG, st_layout, p_op, BLOCK_M,
                                               HEAD_DIM, NUM_STAGES, dropout, HAS_DROPOUT)
            t0 += n_masked
        dk, dv, pt_op, ds_op = _dkdv_steps(dk, dv, pt_op, ds_op, t0, (g + 1) * n_q, q_desc, do_desc, q_smem,
                                           do_smem, k_smem, v_smem, bars, empty, stats, offs_n, offs_m, b,
                                           nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, seqlen_q,
                                           causal_shift, scales, dq_args, False, WS, FUSED_DQ, IS_VARLEN,
                                           HAS_SOFTCAP, HAS_ALIBI, PADDED_STATS, WG, st_layout, p_op, BLOCK_M,
                                           HEAD_DIM, NUM_STAGES, dropout, HAS_DROPOUT)
    dk, dv, pt_op, ds_op = warpgroup_mma_wait(0, deps=(dk, dv, pt_op, ds_op))
    return dk, dv


@gluon.jit
def _store_dkdv(dk, dv, n0, row0_k, kv_col, seqlen_k, softmax_scale, DK, DV, stride_dks, acc_layout: gl.constexpr):
    """dK (scaled) and dV of keys ``[n0, n0 + dk.shape[0])``; keys past ``seqlen_k`` are not stored."""
    keys = n0 + gl.arange(0, dk.shape[0], layout=gl.SliceLayout(1, acc_layout))
    cols = gl.arange(0, dk.shape[1], layout=gl.SliceLayout(0, acc_layout))
    off = gl.expand_dims((row0_k + keys).to(gl.int64) * stride_dks, 1) + kv_col + gl.expand_dims(cols, 0)
    m = gl.expand_dims(keys < seqlen_k, 1)
    gl.store(DK + off, (dk * softmax_scale).to(DK.dtype.element_ty), mask=m)
    gl.store(DV + off, dv.to(DV.dtype.element_ty), mask=m)


@gluon.jit
def dkdv_hopper_kernel(q_desc, k_desc, v_desc, do_desc, LSE, DELTA, DK, DV, CU_Q, CU_K, SLOPES, seqlen_q, seqlen_k,
                       nheads, group, qk_scale, softcap_scale, alibi_log2, softmax_scale, stride_dks, stride_lh,
                       stride_sb, stride_sh, stats_len, SEED, drop_threshold, drop_scale, CAUSAL: gl.constexpr,
                       IS_VARLEN: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
                       PADDED_STATS: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                       HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr,
                       HAS_DROPOUT: gl.constexpr = False):
    gl.static_assert(NUM_STAGES >= 2)
    dtype: gl.constexpr = q_desc.dtype
    b, hk, n0, row0_q, row0_k, seqlen_q, seqlen_k, causal_shift, m_first, n_q, n_steps, h0 = _dkdv_program(
        CU_Q, CU_K, seqlen_q, seqlen_k, nheads, group, CAUSAL, IS_VARLEN, BLOCK_M, BLOCK_N)
    if IS_VARLEN:
        if n0 >= seqlen_k:  # a shorter sequence than the longest: nothing here
            return
    kv_col = hk * HEAD_DIM

    st_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                        instr_shape=[16, BLOCK_M, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])

    k_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [BLOCK_N, HEAD_DIM], v_desc.layout)
    q_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, HEAD_DIM], q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, HEAD_DIM], do_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    bars = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(bars.index(i), count=1)
    fence_async_shared()

    mbarrier.expect(kv_bar, k_desc.block_type.nbytes + v_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(k_desc, [row0_k + n0, kv_col], kv_bar, k_smem)
    tma.async_copy_global_to_shared(v_desc, [row0_k + n0, kv_col], kv_bar, v_smem)
    for i in gl.static_range(NUM_STAGES):
        _load_q_do(q_desc, do_desc, q_smem, do_smem, bars, i, n_steps, n_q, m_first, row0_q, h0,
                   NUM_STAGES, BLOCK_M, HEAD_DIM)
    mbarrier.wait(kv_bar, 0)
    dk, dv = _dkdv_walk(q_desc, do_desc, q_smem, do_smem, k_smem, v_smem, bars, bars, (LSE, DELTA, stats_len), n0, b,
                        nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, seqlen_q, causal_shift,
                        (qk_scale, softcap_scale, SLOPES, alibi_log2, stride_sb, stride_sh), group, (), CAUSAL, False,
                        False, IS_VARLEN, HAS_SOFTCAP, HAS_ALIBI, PADDED_STATS, 0, st_layout, acc_layout, BLOCK_M,
                        NUM_STAGES, (SEED, drop_threshold, drop_scale), HAS_DROPOUT)

    mbarrier.invalidate(kv_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(bars.index(i))
    _store_dkdv(dk, dv, n0, row0_k, kv_col, seqlen_k, softmax_scale, DK, DV, stride_dks, acc_layout)
