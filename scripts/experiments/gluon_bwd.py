"""One-off (sixth session): the Gluon dK/dV kernel (kernels/hopper_bwd_kernel.py) against the
Triton one: correctness next to the Triton kernel's (both against float64) and kernel time.

The run in docs/logs/h200-gluon-bwd-v6-*.log used this script's first version (commit cf3b2d3),
which carried the kernel itself with two variants the library dropped: dS from the 16-bit P
(dK's error against float64 +40 %) and dP^T issued beside dK/dV (spilled, 3-10 % slower). This
version drives the library's kernel through ``PYFLASHATTN_CONFIG``, so it measures what ships.

    PYTHONPATH=src python3 scripts/experiments/gluon_bwd.py [--check-only]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

ON = json.dumps({"hopper_dkdv_block_n": 64})


def grads(q, k, v, g, causal, gluon):
    import pyflashattn as pfa
    os.environ["PYFLASHATTN_CONFIG"] = ON if gluon else ""
    try:
        out = pfa.flash_attn_func(q, k, v, causal=causal)
        return torch.autograd.grad(out, (q, k, v), g)
    finally:
        os.environ.pop("PYFLASHATTN_CONFIG", None)


def check() -> bool:
    from pyflashattn.reference import attention_ref
    ok = True
    for d, causal, sq, sk, h, hk in [(128, False, 1000, 1000, 4, 4), (128, True, 1000, 1000, 4, 2),
                                     (64, True, 333, 777, 4, 1), (64, False, 4096, 4096, 2, 2),
                                     (128, True, 17, 17, 2, 2)]:
        q = torch.randn(2, sq, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k, v = (torch.randn(2, sk, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
        g = torch.randn_like(q)
        _, dk_g, dv_g = grads(q, k, v, g, causal, True)
        _, dk_t, dv_t = grads(q, k, v, g, causal, False)
        q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
        _, dk64, dv64 = torch.autograd.grad(attention_ref(q64, k64, v64, causal=causal)[0], (q64, k64, v64), g.double())
        e = {n: (x.double() - r).abs().max().item() for n, x, r in
             (("dk gluon", dk_g, dk64), ("dk triton", dk_t, dk64), ("dv gluon", dv_g, dv64), ("dv triton", dv_t, dv64))}
        ok &= e["dk gluon"] <= 2 * e["dk triton"] + 1e-3 and e["dv gluon"] <= 2 * e["dv triton"] + 1e-3
        print(f"d={d} causal={int(causal)} sq={sq} sk={sk} h={h}/{hk}: max err vs float64 "
              + ", ".join(f"{n} {x:.2e}" for n, x in e.items()), flush=True)
    return ok


def bench():
    from torch.profiler import ProfilerActivity, profile
    for d, causal, s in [(128, False, 4096), (128, True, 4096), (128, False, 16384), (128, True, 16384),
                         (64, False, 4096), (64, True, 16384)]:
        b, h = 16384 // s, 2048 // d
        q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        g = torch.randn_like(q)
        row = {}
        for gluon in (False, True):
            for _ in range(2):
                grads(q, k, v, g, causal, gluon)
            with profile(activities=[ProfilerActivity.CUDA]) as prof:
                for _ in range(5):
                    grads(q, k, v, g, causal, gluon)
                torch.cuda.synchronize()
            for e in prof.key_averages():
                if "dkdv" in e.key:
                    row[e.key] = e.device_time_total / 5e3
        print(f"d={d} causal={int(causal)} s={s} dK/dV ms: " + "  ".join(f"{n} {ms:.3f}" for n, ms in row.items()),
              flush=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    print("#", torch.cuda.get_device_name(), torch.__version__, flush=True)
    good = check()
    if not a.check_only:
        bench()
    sys.exit(0 if good else 1)
