"""Compile the kernels for sm_90 without a GPU and print registers, spills and shared memory.

    python scripts/aot_check.py [--dtype bf16] [--head-dim 128] [--config '{"block_m": 128}']
        [--varlen] [--softcap] [--alibi] [--sparse] [--dropout] [--group-size 1] [--no-adjust]
        [--dump DIR]

Triton's bundled ptxas does the work, so this costs no device time: use it to reject configs
that spill, exceed shared memory or have their wgmmas serialized (``hgmma_full_waits`` near
``hgmma``) before a GPU sweep.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import replace

import torch
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from pyflashattn.configs import get_config
from pyflashattn.kernels import bwd, fwd, hopper
from pyflashattn.kernels.aot import resource_usage, wgmma_waits
from pyflashattn.kernels.common import dot_precision
from pyflashattn.ops import _adjusted_config

TY = {"bf16": "*bf16", "fp16": "*fp16", "fp32": "*fp32"}


DUMP_DIR = None  # --dump: where each kernel's TTGIR goes (to see what the pipeliner buffered)


def compile_kernel(kernel, ptr_args, int_args, float_args, constexprs, num_warps, num_stages):
    names = list(inspect_args(kernel))
    sig = {}
    for n in names:
        if n in constexprs:
            sig[n] = "constexpr"
        elif n in ptr_args:
            sig[n] = ptr_args[n]
        elif n in float_args:
            sig[n] = "fp32"
        else:
            sig[n] = "i32"
    const = {(names.index(k),): v for k, v in constexprs.items()}
    # what a real launch specializes: 16-byte aligned pointers, strides and head counts that
    # are multiples of 16 (the runtime marks ints divisible by 16; lengths are not specialized)
    aligned = [n for n in names if n in ptr_args or n.startswith("stride_")]
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in aligned}
    src = ASTSource(fn=kernel, signature=sig, constexprs=const, attrs=attrs)
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                        options=dict(num_warps=num_warps, num_stages=num_stages))
    if DUMP_DIR:
        import os
        os.makedirs(DUMP_DIR, exist_ok=True)
        with open(os.path.join(DUMP_DIR, kernel.fn.__name__ + ".ttgir"), "w") as f:
            f.write(ck.asm["ttgir"])
        with open(os.path.join(DUMP_DIR, kernel.fn.__name__ + ".ptx"), "w") as f:
            f.write(ck.asm["ptx"])
    return dict(shared=ck.metadata.shared, **resource_usage(ck.asm["cubin"]), **wgmma_waits(ck.asm["cubin"]))


def inspect_args(kernel):
    import inspect
    return inspect.signature(kernel.fn).parameters


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="bf16", choices=TY)
    p.add_argument("--head-dim", type=int, default=128)
    p.add_argument("--config", default="{}")
    p.add_argument("--varlen", action="store_true")
    p.add_argument("--softcap", action="store_true")
    p.add_argument("--alibi", action="store_true")
    p.add_argument("--sparse", action="store_true", help="block-sparse with 128 x 128 mask blocks")
    p.add_argument("--dropout", action="store_true")
    p.add_argument("--group-size", type=int, default=1,
                   help="query heads per key/value head (GQA); 1 is a constexpr, as Triton specializes it")
    p.add_argument("--no-adjust", action="store_true",
                   help="compile the config as given, without the stage and block limits that the "
                        "launch applies for dropout and block masks (ops._adjusted_config)")
    p.add_argument("--dump", metavar="DIR", help="write each kernel's TTGIR to DIR")
    a = p.parse_args()
    global DUMP_DIR
    DUMP_DIR = a.dump
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    cfg = replace(get_config(a.head_dim, a.head_dim, dt), **json.loads(a.config))
    if not a.no_adjust and (a.dropout or a.sparse):  # what a launch would run
        cfg = _adjusted_config(cfg, a.dropout, (128, 128) if a.sparse else None)
    ptr = TY[a.dtype]
    prec = dot_precision(dt)
    common = dict(HEAD_DIM=a.head_dim, HEAD_DIM_V=a.head_dim, BLOCK_D=cfg.block_d, BLOCK_DV=cfg.block_dv,
                  PRECISION=prec, UPCAST=False, IS_VARLEN=a.varlen, HAS_SOFTCAP=a.softcap, HAS_ALIBI=a.alibi,
                  IS_SPARSE=a.sparse, SPARSE_Q=128 if a.sparse else 1, SPARSE_KV=128 if a.sparse else 1,
                  HAS_DROPOUT=a.dropout, MASK_FN=None)
    # Triton compiles an int argument equal to 1 as a constexpr: without GQA the dK/dV kernel's
    # loop over the group's heads is gone, which changes its registers (1.8 KB of stack with a
    # runtime group size, 0.15 KB without, at d=128)
    group = {"group_size": 1} if a.group_size == 1 else {}
    side = dict(CU_Q="*i32", CU_K="*i32", SLOPES="*fp32", TILES="*i8", SEED="*i64", drop_threshold="i64", ORDER="*i32",
                **{n: "*i32" for n in ("KV_NUM", "KV_IDX", "KV_TILE", "FULL_NUM", "FULL_IDX",
                                       "BLK_NUM", "BLK_IDX", "BLK_TILE")})
    scalars = {"qk_scale", "softcap_scale", "alibi_log2", "softmax_scale", "drop_scale"}
    r = compile_kernel(fwd._attn_fwd_kernel, dict(Q=ptr, K=ptr, V=ptr, O=ptr, LSE="*fp32", **side), {}, scalars,
                       dict(common, **group, BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n), cfg.num_warps, cfg.num_stages)
    print("fwd ", cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages, r)
    ptrs = dict(Q=ptr, K=ptr, V=ptr, DO=ptr, LSE="*fp32", DELTA="*fp32", DK=ptr, DV=ptr, DQ=ptr, **side)
    r = compile_kernel(bwd._bwd_dkdv_kernel, ptrs, {}, scalars,
                       dict(common, **group, BLOCK_M=cfg.block_m_kv, BLOCK_N=cfg.block_n_kv, ACCUMULATE=False),
                       cfg.num_warps_kv,
                       cfg.num_stages_kv)
    print("dkdv", cfg.block_m_kv, cfg.block_n_kv, cfg.num_warps_kv, cfg.num_stages_kv, r)
    r = compile_kernel(bwd._bwd_dq_kernel, ptrs, {}, scalars,
                       dict(common, **group, BLOCK_M=cfg.block_m_q, BLOCK_N=cfg.block_n_q, ACCUMULATE=False),
                       cfg.num_warps_q, cfg.num_stages_q)
    print("dq  ", cfg.block_m_q, cfg.block_n_q, cfg.num_warps_q, cfg.num_stages_q, r)
    gluon = a.dtype != "fp32" and a.head_dim in (64, 128) and hopper._kernel_modules()
    if gluon and cfg.hopper_block_m:
        r = hopper.compile_sm90(cfg, a.head_dim, dt, causal=True)
        print("fwd (Gluon, Hopper)", cfg.hopper_block_m, cfg.hopper_block_n, cfg.hopper_warps, cfg.hopper_stages, r)
    if gluon and cfg.hopper_ws_min_seqlen_k:
        r = hopper.compile_sm90(cfg, a.head_dim, dt, causal=True, kind="fwd_ws")
        print("fwd (Gluon, Hopper, warp-specialized)", 128, cfg.hopper_ws_block_n, 9, cfg.hopper_ws_stages, r)
    if gluon and cfg.hopper_dkdv_block_n:
        r = hopper.compile_sm90(cfg, a.head_dim, dt, causal=True, kind="dkdv")
        print("dkdv (Gluon, Hopper)", cfg.hopper_dkdv_block_m, cfg.hopper_dkdv_block_n, 4, cfg.hopper_dkdv_stages, r)


if __name__ == "__main__":
    main()
