"""One-off (sixth session): backward tile configs under block masks (b1, h16, d=128, bf16).

The sparse backward runs the dense table's tiles (dK/dV 64 x 128, dQ 128 x 64, 8 warps, 3 stages),
and at 16k it is where block-sparse trails FlexAttention (forward+backward 0.78-0.86x on sliding and
document masks, forward level). Each line: forward+backward ms with one kernel's fields changed
through ``PYFLASHATTN_CONFIG``, the other at the table's values.

    PYTHONPATH=src python3 scripts/experiments/sparse_bwd_sweep.py
"""
import json
import os

import torch
import triton

import pyflashattn as pfa
from pyflashattn.bench.sparse import mask_mod_for
from pyflashattn.block_mask import create_block_mask

KV = [(64, 128, 8, 3), (64, 128, 8, 2), (128, 128, 8, 2), (32, 128, 4, 3), (64, 128, 4, 3), (64, 64, 4, 3)]
Q = [(128, 64, 8, 3), (128, 128, 8, 2), (64, 64, 4, 3), (128, 32, 4, 3), (64, 128, 8, 2), (128, 64, 4, 3)]
CASES = [(16384, "sliding"), (16384, "document"), (16384, "local_global"), (65536, "sliding")]


def configs():
    for bm, bn, w, st in KV:
        yield f"kv {bm}x{bn} w{w} s{st}", dict(block_m_kv=bm, block_n_kv=bn, num_warps_kv=w, num_stages_kv=st)
    for bm, bn, w, st in Q[1:]:
        yield f"q  {bm}x{bn} w{w} s{st}", dict(block_m_q=bm, block_n_q=bn, num_warps_q=w, num_stages_q=st)


for S, mask in CASES:
    H, D = 16, 128
    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    bm = create_block_mask(mask_mod_for(mask, S, "cuda", 128), None, None, S, S, device="cuda")
    os.environ.pop("PYFLASHATTN_CONFIG", None)
    with torch.no_grad():
        t_f = triton.testing.do_bench(lambda: pfa.block_sparse_attn_func(q, k, v, bm), warmup=30, rep=200)
    print(f"{S} {mask} density {bm.density():.3f}: fwd {t_f:.3f} ms", flush=True)
    ref = None
    for name, fields in configs():
        os.environ["PYFLASHATTN_CONFIG"] = json.dumps(fields)
        try:
            grads = torch.autograd.grad(pfa.block_sparse_attn_func(q, k, v, bm), (q, k, v), g)
            if ref is None:
                ref = grads
            err = max(((a.float() - b.float()).norm() / b.float().norm()).item() for a, b in zip(grads, ref))
            t = triton.testing.do_bench(lambda: torch.autograd.grad(pfa.block_sparse_attn_func(q, k, v, bm),
                                                                    (q, k, v), g), warmup=20, rep=200)
            print(f"  {name:22s} fwd+bwd {t:.3f} ms  bwd {t - t_f:.3f} ms  (grads vs first: {err:.1e})", flush=True)
        except Exception as e:  # noqa: BLE001 - a config that does not fit
            print(f"  {name:22s} failed: {type(e).__name__}: {str(e)[:200]}", flush=True)
    os.environ.pop("PYFLASHATTN_CONFIG", None)
