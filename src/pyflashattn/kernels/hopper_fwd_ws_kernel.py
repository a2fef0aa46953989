"""The Hopper forward kernel with warp specialization, in Gluon: the shipped one at head dims 64
and 128 (``hopper.attn_fwd`` picks it from ``hopper_ws_min_seqlen_k``; the one-warpgroup kernel
in ``hopper_fwd_kernel`` stays selectable). Same arguments, flags and results as that kernel,
whose step loop (``_fwd_steps``, ``WS`` on) it shares; measured in docs/performance.md, "v7".

What the Triton forward cannot do (its PTX: ``wgmma.wait_group 0`` after each dot) is run the
softmax while a matmul is on the tensor cores. This kernel does, as FlashAttention-3 does, in two
ways at once:

- warp specialization: a producer warp issues every TMA load (Q once, then K and V into rings of
  ``NUM_STAGES`` shared-memory slots), and two consumer warpgroups of 64 query rows each compute.
  Each consumer releases a slot on its own (an "empty" mbarrier with one arrival per consumer),
  so the two drift apart and one's softmax runs while the other's matmuls do. ``setmaxnreg``
  moves registers from the producer (24) to the consumers (240), which is what lets 128-key
  tiles (wgmma 64 x 128 x 16: half the shared-memory traffic per FLOP of 64-key ones) fit.
- intra-warpgroup overlap: consumer step t issues S(t) = Q K(t)^T and then P(t-1) V(t-1), both
  asynchronous, waits for S(t) only, and computes the softmax of S(t) while P(t-1) V(t-1) runs.
  Live registers per step: one score tile, one probability tile, the output.

    partition    warps  registers  does
    consumer 0   4      240        query rows [m0, m0 + 64)
    consumer 1   4      240        query rows [m0 + 64, m0 + 128)
    producer     1      24         Q of both, then K(t), V(t)

One CTA per SM (12 warps x 168 registers fill the register file) where the one-warpgroup
kernel fits two; it still measured faster at every length on the same H200 (v7 table).

Persistent or not: every partition walks tiles ``program_id, + num_programs, ...`` below
``n_tiles`` (one tile per program when the grid has one program per tile). The rings' step
counters run on across a program's tiles, and each consumer releases its Q slot (``q_empty``)
once its first score matmul has read Q into registers, so the producer loads the next tile's Q
and K/V while the consumers finish the current tile and store its output.
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .hopper_fwd_kernel import _alibi_slope2, _fwd_steps, _key_blocks, _kv_barriers, _program, _store_out_lse

ROWS: gl.constexpr = gl.constexpr(64)   # query rows per consumer warpgroup
# registers per thread at launch: 12 warps (two consumer warpgroups, the producer warp rounded
# up to a warpgroup) x 168 fits the 64K register file; setmaxnreg then gives 240 to each consumer
MAXNREG = 168


@gluon.jit
def _walk_len(n_tiles, PAIRED: gl.constexpr):
    """How many tiles this program walks: work units program_id, + num_programs, ... below
    ``n_tiles``, each one tile, or with ``PAIRED`` two (``_tile``)."""
    return gl.cdiv(n_tiles - gl.program_id(0), gl.num_programs(0)) * (1 + PAIRED)


@gluon.jit
def _tile(i, geometry, IS_VARLEN: gl.constexpr, CAUSAL: gl.constexpr, HAS_WINDOW: gl.constexpr,
          MAY_BE_EMPTY: gl.constexpr, PAIRED: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
          HEAD_DIM: gl.constexpr):
    """This program's ``i``-th tile (of ``_walk_len``), the ``half``-th of work unit ``unit``: a
    unit is a tile (numbered as ``_program`` does), or with ``PAIRED`` (causal) the pair of query
    blocks ``num_m - 1 - j`` and ``j`` of one head, whose key blocks sum to the same count for
    every ``j``, so that a static walk over pairs gives every program the same work (the middle
    block of an odd count has no partner: its second half is empty). Returns whether the tile has
    rows (varlen: a shorter sequence than the longest has none in its last query blocks), its
    rows and columns in the 2-D views, and its key blocks ``[j_lo, j_lo + n_steps)``, each
    consumer masking its own rows' from ``n_full`` on and, with a window, below ``full_lo``
    (``_key_blocks``). The producer and both consumers walk the same tiles and compute the same,
    so their ring counters agree."""
    CU_Q, CU_K, seqlen_q, seqlen_k, nheads, group, window_left, stride_lh = geometry
    per_unit: gl.constexpr = 1 + PAIRED
    unit = gl.program_id(0) + (i // per_unit) * gl.num_programs(0)
    half = i % per_unit
    tile = unit
    if PAIRED:
        num_m = gl.cdiv(seqlen_q, BLOCK_M)
        j = unit % ((num_m + 1) // 2)
        # _program's numbering: tile bh * num_m + i is query block num_m - 1 - i of head bh
        head_first = (unit // ((num_m + 1) // 2)) * num_m
        if half == 0:
            tile = head_first + j
        else:
            tile = head_first + num_m - 1 - j
        live_pair = (half == 0) | (2 * j != num_m - 1)
    start_m, b, h, row0_q, row0_k, seqlen_q, seqlen_k, lse_base = _program(tile, CU_Q, CU_K, seqlen_q, seqlen_k,
                                                                          nheads, stride_lh, IS_VARLEN, BLOCK_M)
    m0 = start_m * BLOCK_M
    live = m0 < seqlen_q
    if PAIRED:
        live = live & live_pair
    causal_shift = seqlen_k - seqlen_q           # bottom-right aligned: row i sees keys <= i + shift
    j_lo, _, n_full0, full_lo0 = _key_blocks(m0, m0 + ROWS, seqlen_k, causal_shift, window_left, CAUSAL, HAS_WINDOW,
                                             BLOCK_N)
    _, n_blocks, n_full1, full_lo1 = _key_blocks(m0 + ROWS, m0 + BLOCK_M, seqlen_k, causal_shift, window_left,
                                                 CAUSAL, HAS_WINDOW, BLOCK_N)
    if MAY_BE_EMPTY:
        # no visible key at all (an empty sequence, or rows above a causal diagonal that starts
        # past the keys): run one fully masked block, so that l stays 0 and the epilogue writes
        # out = 0 and lse = +inf, and no barrier is waited on that nothing will arrive at
        n_blocks = gl.maximum(n_blocks, j_lo + 1)
    n_steps = n_blocks - j_lo                    # step t of the tile holds block j_lo + t
    return (live, b, h, row0_q, row0_k + j_lo * BLOCK_N, m0, h * HEAD_DIM, (h // group) * HEAD_DIM, n_steps, j_lo,
            n_full0, n_full1, full_lo0, full_lo1, seqlen_q, seqlen_k, causal_shift, lse_base)


@gluon.jit
def _producer(args, CAUSAL: gl.constexpr, IS_VARLEN: gl.constexpr, HAS_WINDOW: gl.constexpr,
              MAY_BE_EMPTY: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
              PAIRED: gl.constexpr):
    """One warp: per tile, Q of both consumers (once each has read the previous tile's into
    registers), then K(t) and V(t) into their rings. A slot is refilled once both consumers
    have arrived on its "empty" barrier (each releases it on its own)."""
    (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty,
     geometry, n_tiles, SLOPES, alibi_log2, stride_sb, stride_sh, qk_scale, softcap_scale, O, LSE, stride_os,
     o_tma, drop) = args
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.type.shape[2]
    BLOCK_M: gl.constexpr = 2 * ROWS
    step0 = 0       # the rings' step counter, on across tiles
    n_done = 0      # tiles done: Q's phase
    for i in range(_walk_len(n_tiles, PAIRED)):     # this program's tiles (_tile)
        (live, b, h, row0_q, row_k, m0, q_col, kv_col, n_steps, j_lo, n_full0, n_full1, full_lo0, full_lo1,
         seqlen_q, seqlen_k, causal_shift, lse_base) = _tile(i, geometry, IS_VARLEN, CAUSAL, HAS_WINDOW,
                                                             MAY_BE_EMPTY, PAIRED, BLOCK_M, BLOCK_N, HEAD_DIM)
        if live:
            for wg in gl.static_range(2):
                # a fresh barrier counts as if its phase 1 had completed: the first tile does not wait
                mbarrier.wait(q_empty.index(wg), (n_done & 1) ^ 1)
                mbarrier.expect(q_bar.index(wg), q_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(q_desc, [row0_q + m0 + wg * ROWS, q_col], q_bar.index(wg),
                                                q_smem.index(wg))
            for t in range(n_steps):
                step = step0 + t
                slot = step % NUM_STAGES
                phase = (step // NUM_STAGES) & 1
                mbarrier.wait(k_empty.index(slot), phase ^ 1)
                mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(k_desc, [row_k + t * BLOCK_N, kv_col], k_ready.index(slot),
                                                k_smem.index(slot))
                mbarrier.wait(v_empty.index(slot), phase ^ 1)
                mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
                tma.async_copy_global_to_shared(v_desc, [row_k + t * BLOCK_N, kv_col], v_ready.index(slot),
                                                v_smem.index(slot))
            step0 += n_steps
            n_done += 1


@gluon.jit
def _consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, IS_VARLEN: gl.constexpr, HAS_WINDOW: gl.constexpr,
              MAY_BE_EMPTY: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
              PAIRED: gl.constexpr, O_TMA: gl.constexpr, HAS_DROPOUT: gl.constexpr):
    """One warpgroup, 64 query rows of each of the program's tiles: S(t) = Q K(t)^T and
    P(t-1) V(t-1) issued together, the softmax of S(t) while P(t-1) V(t-1) runs; then the
    epilogue (out, lse) of its rows. ``HAS_DROPOUT``: P V with dropout's zeros (``_fwd_steps``),
    the output scaled by 1 / P(keep)."""
    (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty,
     geometry, n_tiles, SLOPES, alibi_log2, stride_sb, stride_sh, qk_scale, softcap_scale, O, LSE, stride_os,
     o_tma, drop) = args
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.type.shape[2]
    BLOCK_M: gl.constexpr = 2 * ROWS
    window_left = geometry[6]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    q_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    step0 = 0
    n_done = 0
    for i in range(_walk_len(n_tiles, PAIRED)):     # this program's tiles (_tile)
        (live, b, h, row0_q, row_k, m0, q_col, kv_col, n_steps, j_lo, n_full0, n_full1, full_lo0, full_lo1,
         seqlen_q, seqlen_k, causal_shift, lse_base) = _tile(i, geometry, IS_VARLEN, CAUSAL, HAS_WINDOW,
                                                             MAY_BE_EMPTY, PAIRED, BLOCK_M, BLOCK_N, HEAD_DIM)
        if live:
            if WG == 0:
                n_full = n_full0
                full_lo = full_lo0
            else:
                n_full = n_full1
                full_lo = full_lo1
            start = m0 + WG * ROWS
            # the head's slope and the tile's anchor row (_softmax_step)
            alibi = (_alibi_slope2(SLOPES, b, h, alibi_log2, stride_sb, stride_sh, HAS_ALIBI), start + causal_shift)

            mbarrier.wait(q_bar.index(WG), n_done & 1)
            q = q_smem.index(WG).load(q_op)       # Q stays in registers: S = Q K^T reads only K from shared
            offs_m = start + gl.arange(0, ROWS, layout=rows_s)
            SEED, drop_threshold, drop_scale = drop
            if HAS_DROPOUT:   # the counter's batch x head as the Triton kernels' (varlen: sequence b)
                dropout = (gl.load(SEED), b * geometry[4] + h, drop_threshold)
            else:
                dropout = ()
            acc, m_i, l_i = _fwd_steps(q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, q_empty.index(WG),
                                       (k_desc, v_desc, row_k, kv_col), step0, n_steps, j_lo, n_full, full_lo, offs_m,
                                       seqlen_k, causal_shift, window_left, qk_scale, softcap_scale, alibi, CAUSAL,
                                       HAS_WINDOW, MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI, True, 4, s_layout, o_layout,
                                       dropout, HAS_DROPOUT)
            if HAS_DROPOUT:
                acc = acc * drop_scale

            if O_TMA:
                o_own = (o_tma[0], o_tma[1].index(WG))
            else:
                o_own = ()
            _store_out_lse(acc, m_i, l_i, offs_m, start, O, LSE, row0_q, q_col, stride_os, lse_base, seqlen_q, o_own,
                           alibi, MAY_BE_EMPTY, O_TMA, HAS_ALIBI, o_layout)
            step0 += n_steps
            n_done += 1
    if O_TMA:
        tma.store_wait(0)   # the last store has read the staging tile before the program ends


@gluon.jit
def attn_fwd_ws_kernel(q_desc, k_desc, v_desc, o_desc, O, LSE, CU_Q, CU_K, SLOPES, seqlen_q, seqlen_k, nheads,
                       group, window_left, qk_scale, softcap_scale, alibi_log2, stride_os, stride_lh, stride_sb,
                       stride_sh, n_tiles, SEED, drop_threshold, drop_scale, CAUSAL: gl.constexpr,
                       IS_VARLEN: gl.constexpr, HAS_WINDOW: gl.constexpr, MAY_BE_EMPTY: gl.constexpr,
                       HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, PAIRED: gl.constexpr, O_TMA: gl.constexpr,
                       BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                       NUM_STAGES: gl.constexpr, num_warps: gl.constexpr, HAS_DROPOUT: gl.constexpr = False):
    """Tiles of 128 query rows of one (batch, head), ``n_tiles`` of them (query blocks x batch x
    heads), walked by each program from its id in steps of the grid's size: two consumer
    warpgroups of 64 rows and a producer warp (launch with ``maxnreg=MAXNREG``). Dense: q
    ``(b, s, h, d)`` seen as the 2-D ``(b * s, h * d)``; ``IS_VARLEN``: packed ``(total, h, d)``
    seen as ``(total, h * d)``, each sequence's rows from ``CU_Q``/``CU_K`` (``seqlen_q``/
    ``seqlen_k`` are then the maxima). ``HAS_WINDOW``: keys below ``i + shift - window_left`` are
    masked and their blocks skipped. ``HAS_SOFTCAP``, ``HAS_ALIBI``: as the Triton forward (ALiBi
    slopes per head or per (batch, head) through ``stride_sb``/``stride_sh``). ``O_TMA``: out's
    full tiles by TMA stores through ``o_desc`` (out seen as q, 64-row blocks; otherwise unused).
    ``HAS_DROPOUT`` (``hopper_dropout``, an experiment): dropout with the seed at ``SEED``, the
    keep threshold and 1 / P(keep) of ``params.KernelParams.dropout_args``, drawn in the
    accumulator's registers (``hopper_dropout.dropout_keep``)."""
    gl.static_assert(BLOCK_M == 2 * ROWS)     # two consumer warpgroups
    gl.static_assert(num_warps == 4)          # the default partition is consumer 0
    gl.static_assert(NUM_STAGES >= 2)
    dtype: gl.constexpr = q_desc.dtype
    q_smem = gl.allocate_shared_memory(dtype, [2, ROWS, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_bar.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    k_ready, v_ready, k_empty, v_empty = _kv_barriers(NUM_STAGES, 2)   # two consumer warpgroups
    if O_TMA:  # each consumer's staging tile for its out rows
        o_tma = (o_desc, gl.allocate_shared_memory(dtype, [2, ROWS, HEAD_DIM], o_desc.layout))
    else:
        o_tma = ()
    fence_async_shared()

    geometry = (CU_Q, CU_K, seqlen_q, seqlen_k, nheads, group, window_left, stride_lh)
    args = (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, q_empty, k_ready, k_empty, v_ready, v_empty,
            geometry, n_tiles, SLOPES, alibi_log2, stride_sb, stride_sh, qk_scale, softcap_scale, O, LSE, stride_os,
            o_tma, (SEED, drop_threshold, drop_scale))
    # registers: 240 for each consumer, 24 for the producer (setmaxnreg moves them at run time)
    gl.warp_specialize([(_consumer, (args, 0, CAUSAL, IS_VARLEN, HAS_WINDOW, MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI,
                                     PAIRED, O_TMA, HAS_DROPOUT)),
                        (_consumer, (args, 1, CAUSAL, IS_VARLEN, HAS_WINDOW, MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI,
                                     PAIRED, O_TMA, HAS_DROPOUT)),
                        (_producer, (args, CAUSAL, IS_VARLEN, HAS_WINDOW, MAY_BE_EMPTY, HAS_SOFTCAP, HAS_ALIBI,
                                     PAIRED))],
                       [4, 1], [240, 24])
