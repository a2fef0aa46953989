"""The Hopper forward kernel, in Gluon (Triton's explicit dialect: wgmma, TMA and mbarriers by hand).

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

Scope (``hopper.usable`` checks it): dense, causal (bottom-right, ``seqlen_q <= seqlen_k``) or
not, GQA, 16-bit, head dim 64 or 128, tensors whose (batch, seq) axes merge into one
(``(b * s, h * d)`` 2-D descriptors: contiguous or qkv-packed).
"""
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

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
def _softmax_step(s, m_i, l_i, block, n_full, offs_m, offs_n, seqlen_k, causal_shift, qk_scale,
                  CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr):
    """Online softmax of one score tile in base 2 (scale folded in): P, the rescale factor, m, l.
    Blocks from ``n_full`` on are masked (the sequence end; the diagonal under causal). The 2-D
    descriptors read the next sequence's rows past the end, so the mask is not optional."""
    if block >= n_full:
        cols = gl.expand_dims(block * BLOCK_N + offs_n, 0)
        valid = cols < seqlen_k
        if CAUSAL:
            valid = valid & (cols <= gl.expand_dims(offs_m, 1) + causal_shift)
        s = gl.where(valid, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_i


@gluon.jit
def attn_fwd_hopper_kernel(q_desc, k_desc, v_desc, O, LSE, seqlen_q, seqlen_k, nheads, group, qk_scale, stride_os,
                           CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                           HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr, num_warps: gl.constexpr):
    gl.static_assert(NUM_STAGES >= 2)  # a refill must have a full step of lead
    dtype: gl.constexpr = q_desc.dtype
    # one grid axis (the second is capped at 65535): every head's last query block first, the
    # longest rows under causal
    n_bh = gl.num_programs(0) // gl.cdiv(seqlen_q, BLOCK_M)
    start_m = gl.cdiv(seqlen_q, BLOCK_M) - 1 - gl.program_id(0) // n_bh
    bh = gl.program_id(0) % n_bh
    b = bh // nheads
    h = bh % nheads
    row0_q = b * seqlen_q                        # (b, s, h, d) seen as (b * s, h * d)
    row0_k = b * seqlen_k
    q_col = h * HEAD_DIM
    kv_col = (h // group) * HEAD_DIM
    causal_shift = seqlen_k - seqlen_q           # bottom-right aligned: row i sees keys <= i + shift

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    q_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)

    q_smem = gl.allocate_shared_memory(dtype, [BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bar = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_bar = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_bar.index(i), count=1)
        mbarrier.init(v_bar.index(i), count=1)
    fence_async_shared()

    if CAUSAL:
        hi = gl.minimum((start_m + 1) * BLOCK_M + causal_shift, seqlen_k)
        n_full = gl.minimum(start_m * BLOCK_M + causal_shift + 1, seqlen_k) // BLOCK_N
    else:
        hi = seqlen_k
        n_full = seqlen_k // BLOCK_N
    n_blocks = gl.cdiv(hi, BLOCK_N)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0_q + start_m * BLOCK_M, q_col], q_bar, q_smem)
    for i in gl.static_range(NUM_STAGES):
        _load_tile(k_desc, k_smem, k_bar, i, row0_k, kv_col, n_blocks, NUM_STAGES, BLOCK_N)
        _load_tile(v_desc, v_smem, v_bar, i, row0_k, kv_col, n_blocks, NUM_STAGES, BLOCK_N)
    mbarrier.wait(q_bar, 0)
    q = q_smem.load(q_op)                         # Q stays in registers: S = Q K^T reads only K from shared

    offs_m = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=rows_s)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=rows_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=rows_s)
    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)

    # block 0 on its own: its P starts the pipeline
    mbarrier.wait(k_bar.index(0), 0)
    s = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s,))
    p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, 0, n_full, offs_m, offs_n, seqlen_k, causal_shift, qk_scale,
                                       CAUSAL, BLOCK_N)
    p_prev = gl.convert_layout(p.to(dtype), p_op)
    if num_warps > 4:  # every warpgroup is done reading K(0) before TMA refills its slot
        gl.thread_barrier()
    _load_tile(k_desc, k_smem, k_bar, NUM_STAGES, row0_k, kv_col, n_blocks, NUM_STAGES, BLOCK_N)
    for j in range(1, n_blocks):
        k_slot = j % NUM_STAGES
        mbarrier.wait(k_bar.index(k_slot), (j // NUM_STAGES) & 1)
        s = warpgroup_mma(q, k_smem.index(k_slot).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        v_slot = (j - 1) % NUM_STAGES
        mbarrier.wait(v_bar.index(v_slot), ((j - 1) // NUM_STAGES) & 1)
        acc = warpgroup_mma(p_prev, v_smem.index(v_slot), acc, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s,))       # groups retire in order: S(j) is done, P V may run on
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, j, n_full, offs_m, offs_n, seqlen_k, causal_shift,
                                           qk_scale, CAUSAL, BLOCK_N)
        acc = warpgroup_mma_wait(0, deps=(acc,))
        if num_warps > 4:  # every warpgroup is done reading both slots before TMA refills them
            gl.thread_barrier()
        _load_tile(k_desc, k_smem, k_bar, j + NUM_STAGES, row0_k, kv_col, n_blocks, NUM_STAGES, BLOCK_N)
        _load_tile(v_desc, v_smem, v_bar, j - 1 + NUM_STAGES, row0_k, kv_col, n_blocks, NUM_STAGES, BLOCK_N)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
        p_prev = gl.convert_layout(p.to(dtype), p_op)
    last = n_blocks - 1
    v_slot = last % NUM_STAGES
    mbarrier.wait(v_bar.index(v_slot), (last // NUM_STAGES) & 1)
    acc = warpgroup_mma(p_prev, v_smem.index(v_slot), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(acc,))

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))

    # every row sees at least one key (usable() refuses causal with seqlen_q > seqlen_k), so l > 0
    o = acc / gl.expand_dims(gl.convert_layout(l_i, rows_o), 1)
    rows = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=rows_o)
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    p_o = O + gl.expand_dims((row0_q + rows).to(gl.int64) * stride_os, 1) + q_col + gl.expand_dims(cols, 0)
    gl.store(p_o, o.to(dtype), mask=gl.expand_dims(rows < seqlen_q, 1))
    lse = (m_i + gl.log2(l_i)) * LN2
    gl.store(LSE + bh.to(gl.int64) * seqlen_q + offs_m, lse, mask=offs_m < seqlen_q)
