"""One-off (tenth session): ptxas serializes every wgmma of the warp-specialized dK/dV kernel
(C7512, "insufficient register resources": one WARPGROUP.DEPBAR 0x0 per HGMMA in its SASS) unless
each step ends with every wgmma retired (``WS_DRAIN=1``, read at import). Kernel time of that
kernel, forced on, at d=128 16k with and without causal, and a checksum of dK/dV (the drain
changes no arithmetic: equal sums expected).

    WS_DRAIN=0 PYTHONPATH=src python3 scripts/experiments/ws_drain.py
    WS_DRAIN=1 PYTHONPATH=src python3 scripts/experiments/ws_drain.py

Offline (compile_sm90's hgmma / hgmma_full_waits, d=128): no drain 48/48 (causal 96/96); the
drain 4/48 (6/96); the drain with dK's wgmma left in flight (``WS_DRAIN_LEFT=1``: a wait(1))
48/48 again, so dK's accumulator in flight across the loop's back edge is what ptxas cannot
pipeline in this kernel (the one-warpgroup kernel does it at 1 full wait).
"""
import dataclasses
import os

import torch

from pyflashattn import ops
from pyflashattn.kernels import bwd, hopper


def median_ms(fn, iters=10):
    fn()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    return sorted(ts)[len(ts) // 2]


for causal in (False, True):
    torch.manual_seed(0)
    q, k, v, dout = (torch.randn(1, 16384, 16, 128, device="cuda", dtype=torch.bfloat16) for _ in range(4))
    scale = 128 ** -0.5
    out, lse = ops.attn_fwd(q, k, v, scale, -1, 0 if causal else -1)
    p = ops._params(q, k, scale, -1, 0 if causal else -1, 0.0, None, None, None, -1, -1, None)
    cfg = dataclasses.replace(ops._config(q, v, p), hopper_dkdv_ws_min_seqlen_k=1, hopper_dkdv_ws_min_seqlen_k_causal=1)
    delta = torch.empty_like(lse)
    pre = bwd._launches(dout, q, k, v, out, lse, None, p, cfg, delta, None, None, None, False)[0]
    pre[0](*pre[1:6], **pre[6])
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    launcher, grid, args, constexprs, nw, _, options = hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, cfg)
    ms = median_ms(lambda: launcher(grid, args, constexprs, num_warps=nw, **options))
    sums = f"{dk.double().sum().item():.6e} {dv.double().sum().item():.6e}"
    one = dataclasses.replace(cfg, hopper_dkdv_ws_min_seqlen_k=0, hopper_dkdv_ws_min_seqlen_k_causal=0)
    l1, g1, a1, c1, nw1, _, o1 = hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, one)
    ms1 = median_ms(lambda: l1(g1, a1, c1, num_warps=nw1, **o1))
    print(f"WS_DRAIN={os.environ.get('WS_DRAIN')} causal={int(causal)} ws dkdv {ms:.3f} ms (one-warpgroup "
          f"{ms1:.3f} ms)  sums {sums}", flush=True)
