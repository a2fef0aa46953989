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

from pyflashattn.configs import get_config
from pyflashattn.kernels import hopper
from pyflashattn.kernels.aot import triton_kernels_sm90
from pyflashattn.ops import _adjusted_config


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
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
    p.add_argument("--dump", metavar="DIR", help="write each Triton kernel's TTGIR and PTX to DIR")
    a = p.parse_args()
    dt = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    cfg = replace(get_config(a.head_dim, a.head_dim, dt), **json.loads(a.config))
    if not a.no_adjust and (a.dropout or a.sparse):  # what a launch would run
        cfg = _adjusted_config(cfg, a.dropout, (128, 128) if a.sparse else None)
    res = triton_kernels_sm90(cfg, a.head_dim, a.dtype, a.group_size, a.dump, varlen=a.varlen, softcap=a.softcap,
                              alibi=a.alibi, sparse=a.sparse, dropout=a.dropout)
    print("fwd ", cfg.block_m, cfg.block_n, cfg.num_warps, cfg.num_stages, res["fwd"])
    print("dkdv", cfg.block_m_kv, cfg.block_n_kv, cfg.num_warps_kv, cfg.num_stages_kv, res["dkdv"])
    print("dq  ", cfg.block_m_q, cfg.block_n_q, cfg.num_warps_q, cfg.num_stages_q, res["dq"])
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
