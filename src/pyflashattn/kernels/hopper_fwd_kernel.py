"""The Hopper forward kernel, in Gluon (Triton's explicit dialect: wgmma, TMA and mbarriers by hand):
one warpgroup per program. Its warp-specialized sibling (``hopper_fwd_ws_kernel``), faster on
the H200 and the one the table ships, shares ``_fwd_steps`` (the step loop) with it; this one stays selectable
(``hopper_ws_min_seqlen_k = 0``).

Imported only by ``hopper`` on an sm_90 GPU whose Triton has this Gluon API (3.6); the
plain-Triton forward (``fwd.py``) covers everything else. Why it exists and what it measured:
docs/performance.md, "v6".

What the Triton forward cannot do (its PTX: ``wgmma.wait_group 0`` after each dot) is run the
softmax while a matmul is on the tensor cores. This kernel does, as FlashAttention-3's
intra-warpgroup overlap: step j issues S(j) = Q K(j)^T and then P(j-1) V(j-1), both
asynchronous, waits for S(j) only, and computes the softmax of S(j) while P(j-1) V(j-1) runs.
Live registers per step: one score tile, one probability tile, the output (not two score tiles).
K and V arrive by TMA in two rings of ``NUM_STAGES`` shared-memory slots tracked by mbarriers;
K's slot is refilled at the end of the step that read it, V's one step later.

Scope (``hopper.usable`` checks it): causal (bottom-right) or not, GQA, 16-bit, head dim 64 or
128, tensors whose (batch, seq) axes merge into one (``(b * s, h * d)`` 2-D descriptors:
contiguous or qkv-packed); varlen, softcap, ALiBi, left windows and rows that see no key behind
constexpr flags (``hopper_features``, ``hopper_alibi`` in the config table).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

from .hopper_dropout import apply_keep, dropout_keep_pairs

LN2: gl.constexpr = gl.constexpr(0.6931471805599453)


@gluon.jit
def _load_tile(desc, smem, bars, block, row0, col, n_blocks, NUM_STAGES: gl.constexpr, BLOCK_N: gl.constexpr):
    """TMA rows ``[block * BLOCK_N, +BLOCK_N)`` of K or V into ring slot ``block % NUM_STAGES``
    (nothing for blocks past ``n_blocks``)."""
    stage = block % NUM_STAGES
    pred = block < n_blocks
    mbarrier.expect(bars.index(stage), desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc, [row0 + block * BLOCK_N, col], bars.index(stage), smem.index(stage),
                                    pred=pred)


@gluon.jit
def _kv_barriers(NUM_STAGES: gl.constexpr, CONSUMERS: gl.constexpr):
    """The K and V rings' mbarriers, allocated and initialized (the caller fences): a "ready"
    one per slot (TMA's transaction count) and, for ``CONSUMERS`` warpgroups fed by a producer
    warp, an "empty" one per slot that takes an arrival from each; with ``CONSUMERS = 0`` the
    program refills each slot itself and the ready barriers stand in for the empty ones.
    Returns ``(k_ready, v_ready, k_empty, v_empty)``."""
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    if CONSUMERS:
        k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    else:
        k_empty = k_ready
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    if CONSUMERS:
        v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    else:
        v_empty = v_ready
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        if CONSUMERS:
            mbarrier.init(k_empty.index(i), count=CONSUMERS)
            mbarrier.init(v_empty.index(i), count=CONSUMERS)
    return k_ready, v_ready, k_empty, v_empty


@gluon.jit
def _tanh_approx(x):
    """tanh by ``tanh.approx.f32``: one MUFU operation where ``1 - 2 / (e^{2x} + 1)`` took two
    (the exp2 and the division's reciprocal) beside the softmax's exp2, for a budget of about two
    per score (v12 item 4); ~2^-11 relative error, below bf16/fp16 scores' own rounding."""
    return gl.inline_asm_elementwise("tanh.approx.f32 $0, $1;", "=r,r", [x], dtype=gl.float32, is_pure=True,
                                     pack=1)


@gluon.jit
def _softmax_step(s, m_i, l_i, block, n_full, full_lo, offs_m, offs_n, seqlen_k, causal_shift, window_left, qk_scale,
                  softcap_scale, alibi, CAUSAL: gl.constexpr, HAS_WINDOW: gl.constexpr, MAY_BE_EMPTY: gl.constexpr,
                  HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, BLOCK_N: gl.constexpr, dropout,
                  HAS_DROPOUT: gl.constexpr, DTYPE: gl.constexpr):
    """Online softmax of one score tile in base 2 (scale folded in): P (in ``DTYPE``, the P V
    matmul's operand type), the rescale factor, m, l.
    Key block ``block`` is masked from ``n_full`` on (the sequence end; the diagonal under causal)
    and, with a window, below ``full_lo`` (its left edge). The 2-D descriptors read the next
    sequence's rows past the end, so the mask is not optional. ``MAY_BE_EMPTY``: a row may have
    seen no key yet (windows, varlen, causal with more queries than keys), so its max is -inf
    and must not be subtracted. Softcap and ALiBi as ``mask.scores_log2`` (same formulas):
    ``qk_scale`` is then ``softcap * log2(e)`` and ``softcap_scale`` ``scale / softcap``.
    ``alibi``: (the head's slope in base 2, the tile's anchor row ``start + causal_shift``).
    ``HAS_ALIBI`` 2 (no visible key right of the diagonal: ``window_right`` 0): every visible
    bias ``-slope * (i + shift - j)`` is ``slope * (j - anchor)`` less a per-row constant, which
    the softmax does not see; so one FFMA per score with a per-column term (this thread's
    columns, per block), and the constant goes into lse (``_store_out_lse``), where ``|i +
    shift - j|`` per score costs ~5 instructions (v14 item 9). Anchored at the tile's first
    row, the applied values stay small where the softmax's mass is. ``HAS_DROPOUT``: the P
    returned has dropout's zeros, set on its 16-bit pairs (``hopper_dropout.apply_keep``;
    ``dropout`` = (seed, batch * nheads + head, keep threshold)), l does not."""
    masked = block >= n_full
    if HAS_WINDOW:
        masked = masked | (block < full_lo)
    if HAS_SOFTCAP:  # one MUFU.TANH, as the Triton kernels' on 16-bit inputs (common.SOFTCAP_FAST)
        s = _tanh_approx(s * softcap_scale)
    slope2, anchor = alibi
    if HAS_ALIBI == 2:  # one-sided: the scaled scores plus slope * (j - anchor), then masked
        s = s * qk_scale + gl.expand_dims(slope2 * (block * BLOCK_N - anchor + offs_n).to(gl.float32), 0)
        scale = 1.0
    elif HAS_ALIBI:  # the scaled scores minus the bias, then masked
        s = s * qk_scale
        rel = gl.expand_dims(block * BLOCK_N + offs_n, 0) - (gl.expand_dims(offs_m, 1) + causal_shift)
        s = s - slope2 * gl.abs(rel).to(gl.float32)
        scale = 1.0
    else:  # the scale (softcap * log2 e with softcap: positive, so the max commutes) folds into the exp2's FMA
        scale = qk_scale
    if masked:
        cols = gl.expand_dims(block * BLOCK_N + offs_n, 0)
        valid = cols < seqlen_k
        if CAUSAL:
            valid = valid & (cols <= gl.expand_dims(offs_m, 1) + causal_shift)
        if HAS_WINDOW:
            valid = valid & (cols + window_left >= gl.expand_dims(offs_m, 1) + causal_shift)
        s = gl.where(valid, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * scale)
    if MAY_BE_EMPTY:  # subtract 0 instead of -inf, but keep -inf as the row's max: a 0 kept there
        m_use = gl.where(m_new == float("-inf"), 0.0, m_new)   # would pass for a real one later
    else:
        m_use = m_new
    p = gl.exp2(s * scale - gl.expand_dims(m_use, 1))
    alpha = gl.exp2(m_i - m_use)
    l_i = l_i * alpha + gl.sum(p, 1)
    p = p.to(DTYPE)
    if HAS_DROPOUT:  # the row sums above keep every element; only P V sees the drops
        p = apply_keep(p, dropout_keep_pairs(dropout[0], dropout[1], offs_m, offs_n, block * BLOCK_N, dropout[2],
                                             gl.constexpr(p.type.layout)))
    return p, alpha, m_new, l_i


@gluon.jit
def _fwd_steps(q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, q_empty, refill, step0, n_steps, j_lo, n_full,
               full_lo, offs_m, seqlen_k, causal_shift, window_left, qk_scale, softcap_scale, alibi,
               CAUSAL: gl.constexpr, HAS_WINDOW: gl.constexpr, MAY_BE_EMPTY: gl.constexpr, HAS_SOFTCAP: gl.constexpr,
               HAS_ALIBI: gl.constexpr, WS: gl.constexpr, NUM_WARPS: gl.constexpr, s_layout: gl.constexpr,
               o_layout: gl.constexpr, dropout, HAS_DROPOUT: gl.constexpr):
    """The key steps of one query tile (the rows of ``q``, in registers): step t holds key block
    ``j_lo + t`` in ring slot ``(step0 + t) % NUM_STAGES`` (``step0``: the steps the rings ran
    before this tile). S(t) = Q K(t)^T and P(t-1) V(t-1) are issued together, and the softmax of
    S(t) runs while P(t-1) V(t-1) is on the tensor cores. Returns the unnormalized output and
    the rows' max and sum (base 2).

    One-warpgroup kernel (``WS`` off): the program refills each slot itself once every warp has
    read it (``refill`` = the K and V descriptors, the first key row, the column), ``k_ready`` /
    ``v_ready`` being the rings' only barriers. ``WS``: a consumer warpgroup, which releases each
    slot on ``k_empty`` / ``v_empty`` for the producer warp, and Q's on ``q_empty`` once the first
    matmul has read it.

    ``HAS_DROPOUT``: P V sees P with dropout's zeros (``_softmax_step``); the row sums do not,
    and the caller scales the output by 1 / P(keep)."""
    dtype: gl.constexpr = k_smem.dtype
    NUM_STAGES: gl.constexpr = k_smem.shape[0]
    BLOCK_N: gl.constexpr = k_smem.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.shape[2]
    ROWS: gl.constexpr = q.shape[0]
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    k_desc, v_desc, row_k, kv_col = refill
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=gl.SliceLayout(1, s_layout))
    l_i = gl.zeros([ROWS], gl.float32, layout=gl.SliceLayout(1, s_layout))
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    # the scores' matmul input (ignored: use_acc=False): the last step's scores in a consumer
    # warpgroup, one zero tile in the one-warpgroup kernel, as each was built and measured
    # (v6, v7); with them this shared loop compiles to the two loops' PTX it replaced
    zero_s = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)
    s = zero_s

    # step 0 on its own: its P starts the pipeline
    slot = step0 % NUM_STAGES
    mbarrier.wait(k_ready.index(slot), (step0 // NUM_STAGES) & 1)
    s = warpgroup_mma(q, k_smem.index(slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s,))
    if WS:
        mbarrier.arrive(k_empty.index(slot), count=1)
        # the matmul has read Q from every warp's registers (a warpgroup's wgmma starts once all
        # four warps have issued it): the slot may take the next tile's Q
        mbarrier.arrive(q_empty, count=1)
    p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, j_lo, n_full, full_lo, offs_m, offs_n, seqlen_k, causal_shift,
                                       window_left, qk_scale, softcap_scale, alibi, CAUSAL, HAS_WINDOW,
                                       MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI, BLOCK_N, dropout, HAS_DROPOUT, dtype)
    p_prev = gl.convert_layout(p, p_op)
    if not WS:
        if NUM_WARPS > 4:  # every warpgroup is done reading K(0) before TMA refills its slot
            gl.thread_barrier()
        _load_tile(k_desc, k_smem, k_ready, NUM_STAGES, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
    for t in range(1, n_steps):
        k_step = step0 + t
        k_slot = k_step % NUM_STAGES
        mbarrier.wait(k_ready.index(k_slot), (k_step // NUM_STAGES) & 1)
        if WS:
            s = warpgroup_mma(q, k_smem.index(k_slot).permute((1, 0)), s, use_acc=False, is_async=True)
        else:
            s = warpgroup_mma(q, k_smem.index(k_slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        v_slot = (k_step - 1) % NUM_STAGES
        mbarrier.wait(v_ready.index(v_slot), ((k_step - 1) // NUM_STAGES) & 1)
        acc = warpgroup_mma(p_prev, v_smem.index(v_slot), acc, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s,))      # groups retire in order: S(t) is done, P V may run on
        if WS:
            mbarrier.arrive(k_empty.index(k_slot), count=1)       # this warpgroup is done with K(t)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, j_lo + t, n_full, full_lo, offs_m, offs_n, seqlen_k,
                                           causal_shift, window_left, qk_scale, softcap_scale, alibi, CAUSAL,
                                           HAS_WINDOW, MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI, BLOCK_N, dropout,
                                           HAS_DROPOUT, dtype)
        if WS:
            acc, p_prev = warpgroup_mma_wait(0, deps=(acc, p_prev))
            mbarrier.arrive(v_empty.index(v_slot), count=1)       # and with V(t-1)
        else:
            acc = warpgroup_mma_wait(0, deps=(acc,))
            if NUM_WARPS > 4:  # every warpgroup is done reading both slots before TMA refills them
                gl.thread_barrier()
            _load_tile(k_desc, k_smem, k_ready, t + NUM_STAGES, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
            _load_tile(v_desc, v_smem, v_ready, t - 1 + NUM_STAGES, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
        p_prev = gl.convert_layout(p, p_op)
    last = step0 + n_steps - 1
    v_slot = last % NUM_STAGES
    mbarrier.wait(v_ready.index(v_slot), (last // NUM_STAGES) & 1)
    acc = warpgroup_mma(p_prev, v_smem.index(v_slot), acc, is_async=True)
    if WS:
        acc, p_prev = warpgroup_mma_wait(0, deps=(acc, p_prev))
        mbarrier.arrive(v_empty.index(v_slot), count=1)
    else:
        acc = warpgroup_mma_wait(0, deps=(acc,))
    return acc, m_i, l_i


@gluon.jit
def _program(tile, CU_Q, CU_K, seqlen_q, seqlen_k, nheads, stride_lh, IS_VARLEN: gl.constexpr,
             BLOCK_M: gl.constexpr):
    """Tile ``tile``'s query block, batch and head, and where its rows start (a program's id, or
    the persistent kernel's tile number): query blocks fastest, so that the programs in flight
    share their head's K/V in L2 (a 128-row query block does 128 FLOPs per byte of K/V it reads,
    under the H200's ~206: with K/V read from HBM by every query block, as when heads ran fastest
    before v11, the forward was 4-21 % slower), each head's last query block first (the longest
    rows under causal). Dense: q ``(b, s, h, d)`` seen as the 2-D ``(b * s, h * d)``; varlen: packed
    ``(total, h, d)`` seen as ``(total, h * d)``, this sequence's rows and lengths from
    ``CU_Q``/``CU_K``. Returns ``start_m, b, h, bh, row0_q, row0_k, seqlen_q, seqlen_k, lse_base``."""
    num_m = gl.cdiv(seqlen_q, BLOCK_M)
    start_m = num_m - 1 - tile % num_m
    bh = tile // num_m
    b = bh // nheads
    h = bh % nheads
    if IS_VARLEN:
        row0_q = gl.load(CU_Q + b)
        seqlen_q = gl.load(CU_Q + b + 1) - row0_q
        row0_k = gl.load(CU_K + b)
        seqlen_k = gl.load(CU_K + b + 1) - row0_k
        lse_base = h.to(gl.int64) * stride_lh + row0_q   # lse (h, total_q)
    else:
        row0_q = b * seqlen_q                        # (b, s, h, d) seen as (b * s, h * d)
        row0_k = b * seqlen_k
        lse_base = bh.to(gl.int64) * seqlen_q         # lse (b, h, s)
    return start_m, b, h, row0_q, row0_k, seqlen_q, seqlen_k, lse_base


@gluon.jit
def _alibi_slope2(SLOPES, b, h, alibi_log2, stride_sb, stride_sh, HAS_ALIBI: gl.constexpr):
    """This (batch, head)'s ALiBi slope in base 2 (0 without ALiBi)."""
    if HAS_ALIBI:
        slope2 = gl.load(SLOPES + b * stride_sb + h * stride_sh) * alibi_log2
    else:
        slope2 = 0.0
    return slope2


@gluon.jit
def _key_blocks(r0, r1, seqlen_k, causal_shift, window_left, CAUSAL: gl.constexpr, HAS_WINDOW: gl.constexpr,
                BLOCK_N: gl.constexpr):
    """The key blocks query rows ``[r0, r1)`` visit, ``[j_lo, n_blocks)``, masked from ``n_full``
    on (the sequence end; the diagonal under causal) and, with a window, below ``full_lo``."""
    if CAUSAL:
        hi = gl.minimum(r1 + causal_shift, seqlen_k)
        n_full = gl.minimum(r0 + causal_shift + 1, seqlen_k) // BLOCK_N
    else:
        hi = seqlen_k
        n_full = seqlen_k // BLOCK_N
    n_blocks = gl.cdiv(hi, BLOCK_N)
    if HAS_WINDOW:
        j_lo = gl.maximum(r0 + causal_shift - window_left, 0) // BLOCK_N
        full_lo = gl.cdiv(gl.maximum(r1 - 1 + causal_shift - window_left, 0), BLOCK_N)
    else:
        j_lo = 0
        full_lo = 0
    return j_lo, n_blocks, n_full, full_lo


@gluon.jit
def _store_rows(o, start, O, row0_q, q_col, stride_os, seqlen_q, o_layout: gl.constexpr):
    """Rows ``[start, start + o.shape[0])`` of out (fp32, rounded here) by pointer stores from
    registers, those past ``seqlen_q`` not stored."""
    rows = start + gl.arange(0, o.shape[0], layout=gl.SliceLayout(1, o_layout))
    cols = gl.arange(0, o.shape[1], layout=gl.SliceLayout(0, o_layout))
    p_o = O + gl.expand_dims((row0_q + rows).to(gl.int64) * stride_os, 1) + q_col + gl.expand_dims(cols, 0)
    gl.store(p_o, o.to(O.dtype.element_ty), mask=gl.expand_dims(rows < seqlen_q, 1))


@gluon.jit
def _store_out_lse(acc, m_i, l_i, offs_m, start, O, LSE, row0_q, q_col, stride_os, lse_base, seqlen_q, o_tma, alibi,
                   MAY_BE_EMPTY: gl.constexpr, O_TMA: gl.constexpr, HAS_ALIBI: gl.constexpr, o_layout: gl.constexpr):
    """The epilogue of query rows ``[start, start + acc.shape[0])``: out = acc / l, lse in natural
    log; a row that saw no key gets out = 0, lse = +inf (flash-attn's convention). ``O_TMA``
    (``hopper_ws_tma_store``, on since v14): rows wholly inside the sequence go out through shared
    memory by one asynchronous TMA store (``o_tma``: the out descriptor, as q's, and this
    warpgroup's staging tile), so that the warpgroup moves on to its next tile while the store
    runs; the sequence's last, partial tile by pointer stores, as without it (a 2-D descriptor
    would write its rows past the end into the next sequence's). ``HAS_ALIBI`` 2: lse takes back
    the per-row constant ``_softmax_step`` left out, ``slope * (i - start)`` (base 2)."""
    ROWS: gl.constexpr = acc.shape[0]
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    if MAY_BE_EMPTY:
        empty = l_i == 0.0
        l_i = gl.where(empty, 1.0, l_i)
    o = acc / gl.expand_dims(gl.convert_layout(l_i, rows_o), 1)
    if O_TMA:
        o_desc, o_smem = o_tma
        if start + ROWS <= seqlen_q:
            tma.store_wait(0)           # the tile's previous store has read the staging buffer
            o_smem.store(o.to(O.dtype.element_ty))
            fence_async_shared()
            tma.async_copy_shared_to_global(o_desc, [row0_q + start, q_col], o_smem)
        else:
            _store_rows(o, start, O, row0_q, q_col, stride_os, seqlen_q, o_layout)
    else:
        _store_rows(o, start, O, row0_q, q_col, stride_os, seqlen_q, o_layout)
    lse = m_i + gl.log2(l_i)
    if HAS_ALIBI == 2:
        lse = lse - alibi[0] * (offs_m - start).to(gl.float32)
    lse = lse * LN2
    if MAY_BE_EMPTY:
        lse = gl.where(empty, float("inf"), lse)
    gl.store(LSE + lse_base + offs_m, lse, mask=offs_m < seqlen_q)


@gluon.jit
def attn_fwd_hopper_kernel(q_desc, k_desc, v_desc, O, LSE, CU_Q, CU_K, SLOPES, seqlen_q, seqlen_k, nheads, group,
                           window_left, qk_scale, softcap_scale, alibi_log2, stride_os, stride_lh, stride_sb, stride_sh,
                           CAUSAL: gl.constexpr, IS_VARLEN: gl.constexpr, HAS_WINDOW: gl.constexpr,
                           MAY_BE_EMPTY: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
                           BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                           HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr):
    """One program per (query block, batch x head). Dense: q ``(b, s, h, d)`` seen as the 2-D
    ``(b * s, h * d)``; ``IS_VARLEN``: packed ``(total, h, d)`` seen as ``(total, h * d)``, each
    sequence's rows from ``CU_Q``/``CU_K`` (``seqlen_q``/``seqlen_k`` are then the maxima).
    ``HAS_WINDOW``: keys below ``i + shift - window_left`` are masked and their blocks skipped.
    ``HAS_SOFTCAP``, ``HAS_ALIBI``: as the Triton forward (ALiBi slopes per head or per
    (batch, head) through ``stride_sb``/``stride_sh``)."""
    gl.static_assert(NUM_STAGES >= 2)  # a refill must have a full step of lead
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
    slope2 = _alibi_slope2(SLOPES, b, h, alibi_log2, stride_sb, stride_sh, HAS_ALIBI)

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    q_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    k_bar, v_bar, _, _ = _kv_barriers(NUM_STAGES, 0)
    fence_async_shared()

    m0 = start_m * BLOCK_M
    j_lo, n_blocks, n_full, full_lo = _key_blocks(m0, m0 + BLOCK_M, seqlen_k, causal_shift, window_left, CAUSAL,
                                                  HAS_WINDOW, BLOCK_N)
    if MAY_BE_EMPTY:
        # no visible key at all (an empty sequence, or rows above a causal diagonal that starts
        # past the keys): run one fully masked block, so that l stays 0 and the epilogue writes
        # out = 0 and lse = +inf, and no barrier is waited on that nothing will arrive at
        n_blocks = gl.maximum(n_blocks, j_lo + 1)
    n_steps = n_blocks - j_lo
    # the rings count steps from 0; step t holds key block j_lo + t
    row_k = row0_k + j_lo * BLOCK_N

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0_q + m0, q_col], q_bar, q_smem)
    for i in gl.static_range(NUM_STAGES):
        _load_tile(k_desc, k_smem, k_bar, i, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
        _load_tile(v_desc, v_smem, v_bar, i, row_k, kv_col, n_steps, NUM_STAGES, BLOCK_N)
    mbarrier.wait(q_bar, 0)
    q = q_smem.load(q_op)                         # Q stays in registers: S = Q K^T reads only K from shared

    offs_m = m0 + gl.arange(0, BLOCK_M, layout=rows_s)
    acc, m_i, l_i = _fwd_steps(q, k_smem, v_smem, k_bar, v_bar, k_bar, v_bar, q_bar, (k_desc, v_desc, row_k, kv_col),
                               0, n_steps, j_lo, n_full, full_lo, offs_m, seqlen_k, causal_shift, window_left,
                               qk_scale, softcap_scale, (slope2, m0 + causal_shift), CAUSAL, HAS_WINDOW,
                               MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI, False, num_warps, s_layout, o_layout, (), False)

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))

    _store_out_lse(acc, m_i, l_i, offs_m, m0, O, LSE, row0_q, q_col, stride_os, lse_base, seqlen_q, (),
                   (slope2, m0 + causal_shift), MAY_BE_EMPTY, False, HAS_ALIBI, o_layout)
