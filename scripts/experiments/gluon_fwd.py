"""Prepared experiment (not part of the library): a Hopper forward written in Gluon.

Why: the Triton forward waits for each QK^T before its softmax and each PV before the next
QK^T (`wgmma.wait_group 0` after every dot, and a CTA-wide `bar.sync` per step for the cp.async
buffers; see docs/performance.md, v5), so the softmax's exp2 never overlaps a matmul. cuDNN and
FlashAttention-3 overlap them. This kernel does the overlap by hand, as FlashAttention-3's
"intra-warpgroup pipelining": at step j it issues S(j+1) = Q K(j+1)^T asynchronously, computes
the softmax of S(j) meanwhile, then issues P(j) V(j) asynchronously and waits only for S(j+1).
K and V arrive by TMA into a ring of NUM_STAGES shared buffers tracked by mbarriers; with one
warpgroup per CTA (num_warps=4) no CTA-wide barrier is needed, and two CTAs per SM can overlap
each other too.

Scope: dense, causal or not, GQA, bf16/fp16, head dim 64 or 128, contiguous (b, s, h, d)
tensors; outputs out and lse (natural log), as pyflashattn's forward.

    python scripts/experiments/gluon_fwd.py --aot            # compile for sm_90 here (no GPU)
    PYTHONPATH=src python3 scripts/experiments/gluon_fwd.py  # GPU: check against pyflashattn, time

Each config of ``--configs`` (block_m, block_n, stages, warps) is checked, and the ones within
1e-2 are timed against pyflashattn's forward and cuDNN at the papers' shapes.

Status: written and compiled offline on 2026-11-29 (no GPU time left that session); never run.
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
                                                              warpgroup_mma_init, warpgroup_mma_wait)
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

LOG2E = 1.4426950408889634
LN2: gl.constexpr = gl.constexpr(0.6931471805599453)


@gluon.jit
def _load_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, block, row0, kv_col, n_blocks,
             NUM_STAGES: gl.constexpr, BLOCK_N: gl.constexpr):
    """TMA K and V of key block ``block`` into its ring slot (nothing past ``n_blocks``)."""
    stage = block % NUM_STAGES
    pred = block < n_blocks
    mbarrier.expect(k_bar.index(stage), k_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(k_desc, [row0 + block * BLOCK_N, kv_col], k_bar.index(stage),
                                    k_smem.index(stage), pred=pred)
    mbarrier.expect(v_bar.index(stage), v_desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(v_desc, [row0 + block * BLOCK_N, kv_col], v_bar.index(stage),
                                    v_smem.index(stage), pred=pred)


@gluon.jit
def _softmax_step(s, m_i, l_i, block, n_full, offs_m, offs_n, seqlen, qk_scale,
                  CAUSAL: gl.constexpr, BLOCK_N: gl.constexpr):
    """Online softmax of one score tile (base 2, scale folded): P, the rescale factor, new m, l.
    Blocks from ``n_full`` on are masked (sequence end, and the diagonal under causal): the 2-D
    descriptors read the next sequence's rows past the end, so masking is not optional."""
    if block >= n_full:
        cols = block * BLOCK_N + offs_n
        valid = gl.expand_dims(cols < seqlen, 0)
        if CAUSAL:
            valid = valid & (gl.expand_dims(cols, 0) <= gl.expand_dims(offs_m, 1))
        s = gl.where(valid, s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, 1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, 1)
    return p, alpha, m_new, l_i


@gluon.jit
def _attn_fwd_gluon(q_desc, k_desc, v_desc, O, LSE, seqlen, nheads, group, qk_scale, stride_os,
                    CAUSAL: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
                    NUM_STAGES: gl.constexpr, num_warps: gl.constexpr):
    # block j+1 must be resident when step j starts, and slot (j-1) is refilled during step j
    gl.static_assert(NUM_STAGES >= 3)
    dtype: gl.constexpr = q_desc.dtype
    num_m = gl.cdiv(seqlen, BLOCK_M)
    start_m = num_m - 1 - gl.program_id(0)      # the longest causal rows first
    bh = gl.program_id(1)
    b = bh // nheads
    h = bh % nheads
    row0 = b * seqlen                            # (b, s, h, d) seen as (b * s, h * d)
    q_col = h * HEAD_DIM
    kv_col = (h // group) * HEAD_DIM

    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    q_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2)
    p_op: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    rows_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    cols_s: gl.constexpr = gl.SliceLayout(0, s_layout)
    rows_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    cols_o: gl.constexpr = gl.SliceLayout(0, o_layout)

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
        hi = gl.minimum((start_m + 1) * BLOCK_M, seqlen)
        n_full = gl.minimum(start_m * BLOCK_M + 1, seqlen) // BLOCK_N
    else:
        hi = seqlen
        n_full = seqlen // BLOCK_N
    n_blocks = gl.cdiv(hi, BLOCK_N)

    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [row0 + start_m * BLOCK_M, q_col], q_bar, q_smem)
    for i in gl.static_range(NUM_STAGES):
        _load_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, i, row0, kv_col, n_blocks, NUM_STAGES, BLOCK_N)
    mbarrier.wait(q_bar, 0)
    q = q_smem.load(q_op)

    offs_m = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=rows_s)
    offs_n = gl.arange(0, BLOCK_N, layout=cols_s)
    zero_s = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=rows_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=rows_s)
    acc = warpgroup_mma_init(gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout))

    mbarrier.wait(k_bar.index(0), 0)
    s_cur = warpgroup_mma(q, k_smem.index(0).permute((1, 0)), zero_s, use_acc=False, is_async=True)
    s_cur = warpgroup_mma_wait(0, deps=(s_cur,))
    for j in range(0, n_blocks - 1):
        # S(j+1) runs on the tensor cores while this warpgroup does the softmax of S(j)
        nxt = (j + 1) % NUM_STAGES
        mbarrier.wait(k_bar.index(nxt), ((j + 1) // NUM_STAGES) & 1)
        s_next = warpgroup_mma(q, k_smem.index(nxt).permute((1, 0)), zero_s, use_acc=False, is_async=True)
        p, alpha, m_i, l_i = _softmax_step(s_cur, m_i, l_i, j, n_full, offs_m, offs_n, seqlen, qk_scale,
                                           CAUSAL, BLOCK_N)
        # groups retire in order: all but the newest (S(j+1)) done means P(j-1) V(j-1) is done,
        # so slot (j-1) is free: refill it with block j-1+NUM_STAGES
        acc_t = warpgroup_mma_wait(1, deps=(acc,))
        if num_warps > 4:  # a second warpgroup reads the same slot
            gl.thread_barrier()
        if j >= 1:
            _load_kv(k_desc, v_desc, k_smem, v_smem, k_bar, v_bar, j - 1 + NUM_STAGES, row0, kv_col, n_blocks,
                     NUM_STAGES, BLOCK_N)
        acc_t = acc_t * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
        cur = j % NUM_STAGES
        mbarrier.wait(v_bar.index(cur), (j // NUM_STAGES) & 1)
        p_in = gl.convert_layout(p.to(dtype), p_op)
        acc = warpgroup_mma(p_in, v_smem.index(cur), acc_t, is_async=True)
        s_cur = warpgroup_mma_wait(1, deps=(s_next,))
    last = n_blocks - 1
    p, alpha, m_i, l_i = _softmax_step(s_cur, m_i, l_i, last, n_full, offs_m, offs_n, seqlen, qk_scale,
                                       CAUSAL, BLOCK_N)
    acc_t = warpgroup_mma_wait(0, deps=(acc,))
    acc_t = acc_t * gl.expand_dims(gl.convert_layout(alpha, rows_o), 1)
    cur = last % NUM_STAGES
    mbarrier.wait(v_bar.index(cur), (last // NUM_STAGES) & 1)
    acc = warpgroup_mma(gl.convert_layout(p.to(dtype), p_op), v_smem.index(cur), acc_t, is_async=True)
    acc_t = warpgroup_mma_wait(0, deps=(acc,))

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(NUM_STAGES):
        mbarrier.invalidate(k_bar.index(i))
        mbarrier.invalidate(v_bar.index(i))

    o = acc_t / gl.expand_dims(gl.convert_layout(l_i, rows_o), 1)
    rows = start_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=rows_o)
    cols = gl.arange(0, HEAD_DIM, layout=cols_o)
    p_o = O + gl.expand_dims((row0 + rows).to(gl.int64) * stride_os, 1) + q_col + gl.expand_dims(cols, 0)
    gl.store(p_o, o.to(dtype), mask=gl.expand_dims(rows < seqlen, 1))
    lse = (m_i + gl.log2(l_i)) * LN2
    gl.store(LSE + bh.to(gl.int64) * seqlen + offs_m, lse, mask=offs_m < seqlen)


def _descriptors(q, k, v, block_m, block_n):
    b, s, h, d = q.shape
    gdt = gl.bfloat16 if q.dtype == torch.bfloat16 else gl.float16
    q2, k2, v2 = q.reshape(b * s, -1), k.reshape(b * s, -1), v.reshape(b * s, -1)
    q_layout = gl.NVMMASharedLayout.get_default_for([block_m, d], gdt)
    kv_layout = gl.NVMMASharedLayout.get_default_for([block_n, d], gdt)
    return (TensorDescriptor(q2, list(q2.shape), list(q2.stride()), [block_m, d], q_layout),
            TensorDescriptor(k2, list(k2.shape), list(k2.stride()), [block_n, d], kv_layout),
            TensorDescriptor(v2, list(v2.shape), list(v2.stride()), [block_n, d], kv_layout))


def gluon_attn_fwd(q, k, v, causal=False, softmax_scale=None, block_m=64, block_n=128, num_stages=3, num_warps=4):
    """q ``(b, s, h, d)``, k/v ``(b, s, hk, d)`` contiguous, 16-bit, d in {64, 128}; -> out, lse ``(b, h, s)``."""
    b, s, h, d = q.shape
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    scale = softmax_scale if softmax_scale is not None else 1.0 / math.sqrt(d)
    out = torch.empty_like(q)
    lse = torch.empty((b, h, s), dtype=torch.float32, device=q.device)
    q_desc, k_desc, v_desc = _descriptors(q, k, v, block_m, block_n)
    grid = (triton.cdiv(s, block_m), b * h)
    _attn_fwd_gluon[grid](q_desc, k_desc, v_desc, out, lse, s, h, h // k.shape[2], scale * LOG2E, out.stride(1),
                          CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=d, NUM_STAGES=num_stages,
                          num_warps=num_warps)
    return out, lse


def aot(block_m, block_n, num_stages, num_warps, head_dim, causal):
    """Compile for sm_90 without a GPU (Triton's bundled ptxas) and print registers and shared memory."""
    from triton.backends.compiler import GPUTarget
    from triton.experimental.gluon._runtime import GluonASTSource
    from triton.runtime.jit import mangle_type
    sys.path.insert(0, "scripts")
    from aot_check import resource_usage
    q = torch.empty(2, 256, 4, head_dim, dtype=torch.bfloat16)
    q_desc, k_desc, v_desc = _descriptors(q, q, q, block_m, block_n)
    names = list(_attn_fwd_gluon.arg_names)
    sig = dict(q_desc=mangle_type(q_desc), k_desc=mangle_type(k_desc), v_desc=mangle_type(v_desc), O="*bf16",
               LSE="*fp32", seqlen="i32", nheads="i32", group="i32", qk_scale="fp32", stride_os="i32",
               CAUSAL="constexpr", BLOCK_M="constexpr", BLOCK_N="constexpr", HEAD_DIM="constexpr",
               NUM_STAGES="constexpr", num_warps="constexpr")
    consts = dict(CAUSAL=causal, BLOCK_M=block_m, BLOCK_N=block_n, HEAD_DIM=head_dim, NUM_STAGES=num_stages,
                  num_warps=num_warps)
    src = GluonASTSource(_attn_fwd_gluon, {n: sig[n] for n in names},
                         constexprs={(names.index(n),): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=num_warps))
    print(f"gluon fwd d={head_dim} causal={int(causal)} {block_m}x{block_n} stages={num_stages} warps={num_warps}:",
          dict(shared=ck.metadata.shared, **resource_usage(ck.asm["cubin"])))
    return ck


CONFIGS = "64,64,3,4 64,128,3,4 128,64,3,8 128,64,4,8"  # block_m, block_n, stages, warps (fit 227 KB at d=128)


def gpu_main(configs):
    import pyflashattn as pfa
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from triton.testing import do_bench
    torch.manual_seed(0)
    print("#", torch.cuda.get_device_name(), torch.__version__, triton.__version__, flush=True)
    ok = []
    for cfg in configs:
        bm, bn, st, w = cfg
        try:
            # against pyflashattn's forward (itself checked against float64 by the test suite); out poisoned
            worst = 0.0
            for d, causal, s, hk in [(128, False, 1000, 4), (128, True, 1000, 4), (64, True, 4096, 1),
                                     (64, False, 333, 2), (128, True, 17, 4)]:
                q = torch.randn(2, s, 4, d, device="cuda", dtype=torch.bfloat16)
                k, v = (torch.randn(2, s, hk, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
                out, lse = gluon_attn_fwd(q, k, v, causal, block_m=bm, block_n=bn, num_stages=st, num_warps=w)
                ref, ref_lse, _ = pfa.flash_attn_func(q, k, v, causal=causal, return_attn_probs=True)
                err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
                lerr = (lse - ref_lse).abs().max().item()
                worst = max(worst, err, lerr)
                print(f"{cfg} check d={d} causal={int(causal)} s={s} hk={hk}: out rel err {err:.2e}, lse {lerr:.2e}",
                      flush=True)
            if worst < 1e-2:
                ok.append(cfg)
        except Exception as e:  # noqa: BLE001 - a config that does not compile or launch
            print(f"{cfg} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
    for d, causal, s in [(128, False, 4096), (128, True, 4096), (128, False, 16384), (128, True, 16384),
                         (64, False, 4096), (64, True, 16384)]:
        b, h = 16384 // s, 2048 // d
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
        fl = 4 * b * h * s * s * d / (2 if causal else 1)
        qt, kt, vt = (t.transpose(1, 2) for t in (q, k, v))
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            row = {"cudnn": do_bench(lambda: F.scaled_dot_product_attention(qt, kt, vt, is_causal=causal))}
        row["pyflashattn"] = do_bench(lambda: pfa.flash_attn_func(q, k, v, causal=causal))
        for bm, bn, st, w in ok:
            row[f"gluon {bm}x{bn}s{st}w{w}"] = do_bench(
                lambda: gluon_attn_fwd(q, k, v, causal, block_m=bm, block_n=bn, num_stages=st, num_warps=w))
        print(f"d={d} causal={int(causal)} s={s} fwd TFLOP/s: "
              + "  ".join(f"{n} {fl / ms / 1e9:.0f}" for n, ms in row.items()), flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--aot", action="store_true", help="compile for sm_90 here, print resources")
    ap.add_argument("--configs", default=CONFIGS, help="space-separated block_m,block_n,stages,warps")
    a = ap.parse_args()
    configs = [tuple(int(x) for x in c.split(",")) for c in a.configs.split()]
    if a.aot:
        for bm, bn, st, w in configs:
            for d in (64, 128):
                for causal in (False, True):
                    aot(bm, bn, st, w, d, causal)
    else:
        gpu_main(configs)
