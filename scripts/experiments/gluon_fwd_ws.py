"""Prepared experiment (sixth session, not run): the Hopper forward with warp specialization.

Why: the shipped Gluon forward (kernels/hopper_fwd_kernel.py) runs one warpgroup per program so
that two programs share an SM; a 128-row program with two warpgroups measured slower because
both must meet at a CTA-wide barrier before TMA may refill a slot (docs/performance.md, v6).
FlashAttention-3 instead gives the loads to a producer warp and lets each consumer warpgroup
release a slot on its own (an mbarrier with one arrival per consumer), so the two consumers
drift apart and one's softmax runs while the other's matmuls do. That also allows 128-key tiles
(wgmma 64 x 128 x 16: half the shared-memory traffic per FLOP of 64-key ones) with the
registers that `setmaxnreg` moves from the producer to the consumers (240 each).

    partition    warps  registers  does
    consumer 0   4      240        query rows [m0, m0 + 64): the v6 step loop (S(j) and P(j-1) V(j-1) in flight)
    consumer 1   4      240        query rows [m0 + 64, m0 + 128): the same
    producer     1      24         Q of both, then K(j), V(j) into NUM_STAGES-slot rings

    python scripts/experiments/gluon_fwd_ws.py --aot             # sm_90 build here: registers, spills
    PYTHONPATH=src python3 scripts/experiments/gluon_fwd_ws.py   # GPU: check against pyflashattn, time vs cuDNN
"""
from __future__ import annotations

import argparse
import math
import sys

import torch
import triton
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (fence_async_shared, mbarrier, tma, warpgroup_mma,
                                                              warpgroup_mma_wait)

sys.path.insert(0, "src")
from pyflashattn.kernels.hopper import _descriptor as _desc  # noqa: E402
from pyflashattn.kernels.hopper_fwd_kernel import _softmax_step  # noqa: E402

LOG2E = 1.4426950408889634
LN2: gl.constexpr = gl.constexpr(0.6931471805599453)
ROWS: gl.constexpr = gl.constexpr(64)   # query rows per consumer warpgroup


@gluon.jit
def _producer(args, WG: gl.constexpr, CAUSAL: gl.constexpr):
    (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
     row0_q, row0_k, m0, q_col, kv_col, n_blocks, n_full0, n_full1, seqlen_k, causal_shift, qk_scale,
     O, LSE, lse_row, stride_os, seqlen_q) = args
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    for wg in gl.static_range(2):
        mbarrier.expect(q_bar.index(wg), q_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(q_desc, [row0_q + m0 + wg * ROWS, q_col], q_bar.index(wg), q_smem.index(wg))
    for j in range(n_blocks):
        slot = j % NUM_STAGES
        phase = (j // NUM_STAGES) & 1
        # barriers start as if phase 1 had completed: the first round does not wait
        mbarrier.wait(k_empty.index(slot), phase ^ 1)
        mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [row0_k + j * BLOCK_N, kv_col], k_ready.index(slot),
                                        k_smem.index(slot))
        mbarrier.wait(v_empty.index(slot), phase ^ 1)
        mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [row0_k + j * BLOCK_N, kv_col], v_ready.index(slot),
                                        v_smem.index(slot))


@gluon.jit
def _consumer(args, WG: gl.constexpr, CAUSAL: gl.constexpr):
    (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
     row0_q, row0_k, m0, q_col, kv_col, n_blocks, n_full0, n_full1, seqlen_k, causal_shift, qk_scale,
     O, LSE, lse_row, stride_os, seqlen_q) = args
    dtype: gl.constexpr = q_desc.dtype
    NUM_STAGES: gl.constexpr = k_smem.type.shape[0]
    BLOCK_N: gl.constexpr = k_smem.type.shape[1]
    HEAD_DIM: gl.constexpr = k_smem.type.shape[2]
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    q_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    n_full = n_full1 if WG == 1 else n_full0
    start = m0 + WG * ROWS

    mbarrier.wait(q_bar.index(WG), 0)
    q = q_smem.index(WG).load(q_op)
    offs_m = start + gl.arange(0, ROWS, layout=rows_s)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    m_i = gl.full([ROWS], float("-inf"), gl.float32, layout=rows_s)
    l_i = gl.zeros([ROWS], gl.float32, layout=rows_s)
    acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, layout=o_layout)
    s = gl.zeros([ROWS, BLOCK_N], gl.float32, layout=s_layout)

    mbarrier.wait(k_ready.index(0), 0)
    s = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), s, use_acc=False, is_async=True)
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(0), count=1)
    p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, 0, n_full, 0, offs_m, offs_n, seqlen_k, causal_shift, 0, qk_scale,
                                       1.0, 0.0, CAUSAL, False, False, False, False, BLOCK_N)
    p_prev = gl.convert_layout(p.to(dtype), p_op)
    for j in range(1, n_blocks):
        k_slot = j % NUM_STAGES
        mbarrier.wait(k_ready.index(k_slot), (j // NUM_STAGES) & 1)
        s = warpgroup_mma(q, k_smem.index(k_slot).permute((1, 0)), s, use_acc=False, is_async=True)
        v_slot = (j - 1) % NUM_STAGES
        mbarrier.wait(v_ready.index(v_slot), ((j - 1) // NUM_STAGES) & 1)
        acc = warpgroup_mma(p_prev, v_smem.index(v_slot), acc, is_async=True)
        s = warpgroup_mma_wait(1, deps=(s,))
        mbarrier.arrive(k_empty.index(k_slot), count=1)        # this warpgroup is done with K(j)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, j, n_full, 0, offs_m, offs_n, seqlen_k, causal_shift, 0,
                                           qk_scale, 1.0, 0.0, CAUSAL, False, False, False, False, BLOCK_N)
        acc, p_prev = warpgroup_mma_wait(0, deps=(acc, p_prev))
        mbarrier.arrive(v_empty.index(v_slot), count=1)        # and with V(j-1)
        acc = acc * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
        p_prev = gl.convert_layout(p.to(dtype), p_op)
    last = n_blocks - 1
    v_slot = last % NUM_STAGES
    mbarrier.wait(v_ready.index(v_slot), (last // NUM_STAGES) & 1)
    acc = warpgroup_mma(p_prev, v_smem.index(v_slot), acc, is_async=True)
    acc, p_prev = warpgroup_mma_wait(0, deps=(acc, p_prev))

    l_safe = gl.where(l_i == 0.0, 1.0, l_i)
    o = acc / gl.expand_dims(gl.convert_layout(l_safe, rows_o), 1)
    rows = start + gl.arange(0, ROWS, layout=rows_o)
    cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    p_o = O + gl.expand_dims((row0_q + rows).to(gl.int64) * stride_os, 1) + q_col + gl.expand_dims(cols, 0)
    gl.store(p_o, o.to(dtype), mask=gl.expand_dims(rows < seqlen_q, 1))
    lse = (m_i + gl.log2(l_safe)) * LN2
    gl.store(LSE + lse_row + offs_m, lse, mask=offs_m < seqlen_q)


@gluon.jit
def _attn_fwd_ws(q_desc, k_desc, v_desc, O, LSE, seqlen_q, seqlen_k, nheads, group, qk_scale, stride_os,
                 CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, NUM_STAGES: gl.constexpr,
                 num_warps: gl.constexpr):
    BLOCK_M: gl.constexpr = 2 * ROWS
    dtype: gl.constexpr = q_desc.dtype
    n_bh = gl.num_programs(0) // gl.cdiv(seqlen_q, BLOCK_M)
    start_m = gl.cdiv(seqlen_q, BLOCK_M) - 1 - gl.program_id(0) // n_bh
    bh = gl.program_id(0) % n_bh
    b = bh // nheads
    h = bh % nheads
    m0 = start_m * BLOCK_M
    causal_shift = seqlen_k - seqlen_q
    if CAUSAL:
        n_blocks = gl.cdiv(gl.minimum(m0 + BLOCK_M + causal_shift, seqlen_k), BLOCK_N)
        n_full0 = gl.minimum(m0 + causal_shift + 1, seqlen_k) // BLOCK_N
        n_full1 = gl.minimum(m0 + ROWS + causal_shift + 1, seqlen_k) // BLOCK_N
    else:
        n_blocks = gl.cdiv(seqlen_k, BLOCK_N)
        n_full0 = seqlen_k // BLOCK_N
        n_full1 = n_full0

    q_smem = gl.allocate_shared_memory(dtype, [2, ROWS, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [NUM_STAGES, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [NUM_STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_bar.index(i), count=1)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)   # one arrival per consumer warpgroup
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()

    args = (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bar, k_ready, k_empty, v_ready, v_empty,
            b * seqlen_q, b * seqlen_k, m0, h * HEAD_DIM, (h // group) * HEAD_DIM, n_blocks, n_full0, n_full1,
            seqlen_k, causal_shift, qk_scale, O, LSE, bh.to(gl.int64) * seqlen_q, stride_os, seqlen_q)
    gl.warp_specialize([(_consumer, (args, 0, CAUSAL)), (_consumer, (args, 1, CAUSAL)), (_producer, (args, 0, CAUSAL))],
                      [4, 1], [240, 24])


MAXNREG = 168   # 12 warps (two consumer warpgroups, the producer's warp rounded up to one): 168 x 384 fits 64K


def ws_fwd(q, k, v, causal=True, block_n=128, num_stages=2):
    b, sq, h, d = q.shape
    sk, hk = k.shape[1], k.shape[2]
    out = torch.empty_like(q)
    lse = torch.empty((b, h, sq), dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(sq, 128) * b * h,)
    _attn_fwd_ws[grid](_desc(q, 64), _desc(k, block_n), _desc(v, block_n), out, lse, sq, sk, h, h // hk,
                       LOG2E / math.sqrt(d), out.stride(1), CAUSAL=causal, BLOCK_N=block_n, HEAD_DIM=d,
                       NUM_STAGES=num_stages, num_warps=4, maxnreg=MAXNREG)
    return out, lse


def aot(block_n, num_stages, head_dim, causal=True):
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type

    from pyflashattn.kernels.aot import resource_usage
    t = torch.empty(2, 256, 4, head_dim, dtype=torch.bfloat16)
    descs = dict(q_desc=_desc(t, 64), k_desc=_desc(t, block_n), v_desc=_desc(t, block_n))
    consts = dict(CAUSAL=causal, BLOCK_N=block_n, HEAD_DIM=head_dim, NUM_STAGES=num_stages, num_warps=4)
    names = list(_attn_fwd_ws.arg_names)
    sig = {n: (mangle_type(descs[n]) if n in descs else "constexpr" if n in consts else "*bf16" if n == "O"
               else "*fp32" if n == "LSE" else "fp32" if n == "qk_scale" else "i32") for n in names}
    src = GluonASTSource(_attn_fwd_ws, sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=MAXNREG))
    print(f"ws fwd d={head_dim} causal={int(causal)} 128x{block_n} s{num_stages}:", dict(shared=ck.metadata.shared,
          **resource_usage(ck.asm["cubin"])), flush=True)
    return ck


def gpu_main(configs, check_only):
    import pyflashattn as pfa
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench
    torch.manual_seed(0)
    print("#", torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    ok = []
    for bn, st in configs:
        worst = 0.0
        for d, s, hk, causal in [(128, 1000, 4, True), (128, 17, 4, True), (64, 4096, 1, True), (128, 333, 2, False),
                                 (64, 1000, 4, False)]:
            q = torch.randn(2, s, 4, d, device="cuda", dtype=torch.bfloat16)
            k, v = (torch.randn(2, s, hk, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
            out, lse = ws_fwd(q, k, v, causal, block_n=bn, num_stages=st)
            ref, ref_lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            lerr = (lse - ref_lse).abs().max().item()
            worst = max(worst, err, lerr)
            print(f"{bn},{st} check d={d} s={s} hk={hk} causal={int(causal)}: out rel err {err:.2e}, lse {lerr:.2e}", flush=True)
        if worst < 1e-2:
            ok.append((bn, st))
    if check_only:
        return 0 if len(ok) == len(configs) else 1
    for d, s, causal in [(128, 4096, False), (128, 4096, True), (128, 16384, False), (128, 16384, True),
                         (64, 16384, False), (64, 16384, True)]:
        b, h = 16384 // s, 2048 // d
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        fl = 4 * b * h * s * s * d / (2 if causal else 1)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            row = {"cudnn": do_bench(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal))}
        row["pyflashattn"] = do_bench(lambda: pfa.flash_attn_func(q, k, v, causal=causal))
        for bn, st in ok:
            row[f"ws 128x{bn} s{st}"] = do_bench(lambda: ws_fwd(q, k, v, causal, block_n=bn, num_stages=st))
        print(f"d={d} causal={int(causal)} s={s} fwd TFLOP/s: " + "  ".join(f"{n} {fl / ms / 1e9:.0f}" for n, ms in row.items()),
              flush=True)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--aot", action="store_true")
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--configs", default="128,2 64,3")   # block_n,stages
    a = ap.parse_args()
    configs = [tuple(int(x) for x in c.split(",")) for c in a.configs.split()]
    if a.aot:
        for bn, st in configs:
            for d in (64, 128):
                for causal in (False, True):
                    aot(bn, st, d, causal)
    else:
        sys.exit(gpu_main(configs, a.check_only))
