"""One-off (tenth session): ptxas serializes every wgmma of the warp-specialized dK/dV kernel
(C7512, "insufficient register resources": one WARPGROUP.DEPBAR 0x0 per HGMMA in its SASS) unless
each step ends with every wgmma retired (the config's ``hopper_dkdv_ws_drain``, the kernel's
``DRAIN``). Kernel times (median of 10, ms) at 16k tokens, d 64 and 128, with and without causal:
the warp-specialized dK/dV kernel (forced on) without and with the drain, the one-warpgroup one,
the dQ kernel, and the whole fused backward (preprocess with zeroing, the fused kernel, scaling);
dK/dV checksums of the warp-specialized kernel in both settings (the drain changes no
arithmetic: equal sums expected).

    PYTHONPATH=src python3 scripts/experiments/ws_drain.py

Offline (compile_sm90's hgmma / hgmma_full_waits, d=128): no drain 48/48 (causal 96/96); the
drain 4/48 (6/96); a drain leaving dK's wgmma in flight (a wait(1)) 48/48 again, so dK's
accumulator in flight across the loop's back edge is what ptxas will not pipeline in this
kernel (the one-warpgroup kernel does it at 1 full wait).
"""
import dataclasses

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


def run(launches):
    for launcher, grid, args, constexprs, nw, ns, options in launches:
        launcher(grid, args, constexprs, nw, ns, **options)


for d in (128, 64):
    for causal in (False, True):
        torch.manual_seed(0)
        s, h = 16384, 2048 // d
        q, k, v, dout = (torch.randn(1, s, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(4))
        scale = d ** -0.5
        right = 0 if causal else -1
        out, lse = ops.attn_fwd(q, k, v, scale, -1, right)
        p = ops._params(q, k, scale, -1, right, 0.0, None, None, None, -1, -1, None)
        base = dataclasses.replace(ops._config(q, v, p), hopper_dkdv_block_n=64, hopper_fused_dq_min_seqlen_k=0)
        ws = dataclasses.replace(base, hopper_dkdv_ws_min_seqlen_k=1, hopper_dkdv_ws_min_seqlen_k_causal=1)
        one = dataclasses.replace(base, hopper_dkdv_ws_min_seqlen_k=0, hopper_dkdv_ws_min_seqlen_k_causal=0)
        delta = torch.empty_like(lse)
        run(bwd._launches(dout, q, k, v, out, lse, None, p, base, delta, None, None, None, False)[:1])
        dq, dk, dv = bwd._new_grads(q, k, v)
        t, sums = {}, []
        for drain in (False, True):
            cfg = dataclasses.replace(ws, hopper_dkdv_ws_drain=drain)
            t[f"ws_drain{int(drain)}"] = median_ms(lambda: run([hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv,
                                                                                    p, cfg)]))
            sums.append(f"{dk.double().sum().item():.6e}/{dv.double().sum().item():.6e}")
        t["one_wg"] = median_ms(lambda: run([hopper.dkdv_launch(q, k, v, dout, lse, delta, dk, dv, p, one)]))
        t["dq"] = median_ms(lambda: run(bwd._launches(dout, q, k, v, out, lse, None, p, base, delta, dq, None, None,
                                                      False)[1:]))
        # the fused kernel (its preprocess, kernel and scaling) also runs under causal, correct (v10),
        # though hopper.fused_dq keeps it off there: the launches are built directly
        fused = dataclasses.replace(base, hopper_fused_dq_min_seqlen_k=1)
        acc = bwd._new_dq_acc(q)
        launches = bwd._launches(dout, q, k, v, out, lse, None, p, fused, delta, dq, dk, dv, False, acc)
        t["fused_all"] = median_ms(lambda: run(launches))
        print(f"d={d} causal={int(causal)} ms: " + " ".join(f"{k_} {v_:.3f}" for k_, v_ in t.items())
              + f"  ws dk/dv sums without/with drain {sums[0]} {sums[1]}", flush=True)
