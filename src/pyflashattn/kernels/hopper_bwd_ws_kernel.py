"""The backward's dK/dV kernel with warp specialization, in Gluon: the one-warpgroup kernel's
step (``hopper_bwd_kernel._dkdv_steps``, shared) laid out as the warp-specialized forward is.

Why: the one-warpgroup dK/dV kernel runs its 4 matmuls a step at ~525 TFLOP/s at d=128 16k
where the dQ kernel runs its 3 at ~690 (docs/performance.md, v6): one warpgroup waits on its own
matmuls between the elementwise phases, and issues its own TMA loads. Here a producer warp streams
Q(t) and dO(t) into a ring that two consumer warpgroups share, each owning 64 of the program's
128 keys, each releasing a slot on its own ("empty" barriers with one arrival per consumer), so
that one's exponentials run while the other's matmuls do, as in the forward (+25 % there).

    partition    warps  registers  does
    consumer 0   4      240        keys [n0, n0 + 64): dK, dV (two 64 x d fp32 accumulators)
    consumer 1   4      240        keys [n0 + 64, n0 + 128)
    producer     1      24         K, V of both; then Q(t), dO(t) of every step

Same arguments and results as ``dkdv_hopper_kernel`` with ``BLOCK_N = 128``; with ``FUSED_DQ``
dQ too (``hopper_bwd_kernel._dq_step``): 5 matmuls per block pair where the dK/dV kernel and the
dQ kernel together run 7 (backward +0-7 % at d=128 without causal; v10 in docs/performance.md).
Under causal both consumers walk the program's steps from the first query block that sees key
n0; consumer 1's keys are masked whole in the steps before its own diagonal (P = 0 there:
correct, a step of wasted work at most).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import fence_async_shared, mbarrier, tma

from .hopper_bwd_kernel import _dkdv_program, _dkdv_walk, _load_q_do, _store_dkdv

KEYS: gl.constexpr = gl.constexpr(64)   # keys per consumer warpgroup
MAXNREG = 168                           # as the warp-specialized forward: 12 warps x 168 fill the file


@gluon.jit
def _producer(args, WG: gl.constexpr):
    """One warp: K and V of both consumers, then Q(t) and dO(t) of every step into the ring; a
    slot is refilled once both consumers have released it."""
    (q_desc, k_desc, v_desc, do_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready, empty, stats,
     b, nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, row0_k, n0, kv_col, seqlen_q, causal_shift,
     score_args) = args
    NUM_STAGES: gl.constexpr = q_smem.type.shape[0]
    BLOCK_M: gl.constexpr = q_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = q_smem.type.shape[2]
    mbarrier.expect(kv_bar, 2 * (k_desc.block_type.nbytes + v_desc.block_type.nbytes))
    for wg in gl.static_range(2):
        tma.async_copy_global_to_shared(k_desc, [row0_k + n0 + wg * KEYS, kv_col], kv_bar, k_smem.index(wg))
        tma.async_copy_global_to_shared(v_desc, [row0_k + n0 + wg * KEYS, kv_col], kv_bar, v_smem.index(wg))
    for t in range(n_steps):
        # a fresh barrier counts as if its phase 1 had completed: the first round does not wait
        mbarrier.wait(empty.index(t % NUM_STAGES), ((t // NUM_STAGES) & 1) ^ 1)
        _load_q_do(q_desc, do_desc, q_smem, do_smem, ready, t, n_steps, n_q, m_first, row0_q, h0,
                   NUM_STAGES, BLOCK_M, HEAD_DIM)


@gluon.jit
def _consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr, FUSED_DQ: gl.constexpr, IS_VARLEN: gl.constexpr,
              HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr, PADDED_STATS: gl.constexpr, group, seqlen_k,
              softmax_scale, DK, DV, stride_dks, dq_args, drop_args, HAS_DROPOUT: gl.constexpr):
    """One warpgroup, keys ``[n0 + WG * 64, +64)``: every step of the program, then its dK, dV."""
    (q_desc, k_desc, v_desc, do_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready, empty, stats,
     b, nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, row0_k, n0, kv_col, seqlen_q, causal_shift,
     score_args) = args
    NUM_STAGES: gl.constexpr = q_smem.type.shape[0]
    BLOCK_M: gl.constexpr = q_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = q_smem.type.shape[2]
    st_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                        instr_shape=[16, BLOCK_M, 16])
    acc_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                         instr_shape=[16, HEAD_DIM, 16])
    n_own = n0 + WG * KEYS
    mbarrier.wait(kv_bar, 0)
    dk, dv = _dkdv_walk(q_desc, do_desc, q_smem, do_smem, k_smem.index(WG), v_smem.index(WG), ready, empty, stats,
                        n_own, b, nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, seqlen_q, causal_shift,
                        score_args, group, dq_args, CAUSAL, True, FUSED_DQ, IS_VARLEN, HAS_SOFTCAP, HAS_ALIBI,
                        PADDED_STATS, WG, st_layout, acc_layout, BLOCK_M, NUM_STAGES, drop_args, HAS_DROPOUT)
    if FUSED_DQ:
        tma.store_wait(0)   # the last reduce-add has read its tile before the program ends
    _store_dkdv(dk, dv, n_own, row0_k, kv_col, seqlen_k, softmax_scale, DK, DV, stride_dks, acc_layout)


@gluon.jit
def dkdv_hopper_ws_kernel(q_desc, k_desc, v_desc, do_desc, LSE, DELTA, DK, DV, dq_desc, CU_Q, CU_K, SLOPES, seqlen_q,
                          seqlen_k, nheads, group, qk_scale, softcap_scale, alibi_log2, softmax_scale, stride_dks,
                          stride_lh, stride_sb, stride_sh, stats_len, SEED, drop_threshold, drop_scale,
                          CAUSAL: gl.constexpr, FUSED_DQ: gl.constexpr,
                          IS_VARLEN: gl.constexpr, HAS_SOFTCAP: gl.constexpr, HAS_ALIBI: gl.constexpr,
                          PADDED_STATS: gl.constexpr,
                          BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                          HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr,
                          HAS_DROPOUT: gl.constexpr = False):
    """One program per (128 keys, batch x kv-head); launch with ``maxnreg=MAXNREG``, the K/V
    descriptors' blocks ``64 x d`` (one per consumer), Q/dO's ``BLOCK_M x d``. ``FUSED_DQ``: also
    add dQ / softmax_scale into the zeroed fp32 buffer behind ``dq_desc`` (``(b * sq, h * d)`` in
    ``BLOCK_M x d/2`` blocks; ``hopper_bwd_kernel._dq_step``); otherwise ``dq_desc`` is unused.
    ``IS_VARLEN``: packed sequences (``hopper_bwd_kernel._dkdv_program``). ``HAS_DROPOUT``: as
    ``hopper_bwd_kernel._dkdv_steps``, each consumer drawing its own keys' mask; builds, but the
    launchers never pick this kernel with dropout (``hopper.dkdv_warp_specialized``: stack
    160-568 B offline)."""
    gl.static_assert(BLOCK_N == 2 * KEYS)     # two consumer warpgroups
    gl.static_assert(num_warps == 4)          # the default partition is consumer 0
    gl.static_assert(NUM_STAGES >= 2)
    dtype: gl.constexpr = q_desc.dtype
    b, hk, n0, row0_q, row0_k, seqlen_q, seqlen_k, causal_shift, m_first, n_q, n_steps, h0 = _dkdv_program(
        CU_Q, CU_K, seqlen_q, seqlen_k, nheads, group, CAUSAL, IS_VARLEN, BLOCK_M, BLOCK_N)
    if IS_VARLEN:
        if n0 >= seqlen_k:  # a shorter sequence than the longest: nothing here
            return

    k_smem = gl.allocate_shared_memory(dtype, [2, KEYS, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [2, KEYS, HEAD_DIM], v_desc.layout)
    q_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, HEAD_DIM], q_desc.layout)
    do_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_M, HEAD_DIM], do_desc.layout)
    kv_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(kv_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(ready.index(i), count=1)
        mbarrier.init(empty.index(i), count=2)   # one arrival per consumer warpgroup
    if FUSED_DQ:
        # dS^T of both consumers, two steps' worth: [step parity * 2 + consumer]; each one's dQ tile
        ds_smem = gl.allocate_shared_memory(dtype, [4, KEYS, BLOCK_M],
                                            gl.NVMMASharedLayout.get_default_for([KEYS, BLOCK_M], dtype))
        ds_ready = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
        for i in gl.static_range(2):
            mbarrier.init(ds_ready.index(i), count=2)
        dq_smem = gl.allocate_shared_memory(gl.float32, [2, BLOCK_M, HEAD_DIM // 2], dq_desc.layout)
        dq_args = (ds_smem, ds_ready, k_smem, dq_desc, dq_smem)
    else:
        dq_args = ()
    fence_async_shared()

    args = (q_desc, k_desc, v_desc, do_desc, q_smem, do_smem, k_smem, v_smem, kv_bar, ready, empty,
            (LSE, DELTA, stats_len), b, nheads, stride_lh, h0, n_q, n_steps, m_first, row0_q, row0_k, n0,
            hk * HEAD_DIM, seqlen_q, causal_shift, (qk_scale, softcap_scale, SLOPES, alibi_log2, stride_sb, stride_sh))
    gl.warp_specialize([(_consumer, (args, 0, CAUSAL, FUSED_DQ, IS_VARLEN, HAS_SOFTCAP, HAS_ALIBI, PADDED_STATS,
                                     group, seqlen_k, softmax_scale, DK, DV, stride_dks, dq_args,
                                     (SEED, drop_threshold, drop_scale), HAS_DROPOUT)),
                        (_consumer, (args, 1, CAUSAL, FUSED_DQ, IS_VARLEN, HAS_SOFTCAP, HAS_ALIBI, PADDED_STATS,
                                     group, seqlen_k, softmax_scale, DK, DV, stride_dks, dq_args,
                                     (SEED, drop_threshold, drop_scale), HAS_DROPOUT)),
                        (_producer, (args, 0))], [4, 1], [240, 24])
