"""One-off (v5): GQA forward+backward timing, for an A/B of two checkouts via PYTHONPATH.

    PYTHONPATH=src python3 scripts/experiments/gqa_bench.py
"""
import torch
import triton

import pyflashattn as pfa

print("#", pfa.__file__)
for d in (64, 128):
    for causal in (False, True):
        b, s, h, hk = 4, 4096, 2048 // d, 2048 // d // 4
        q = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        k = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        v = torch.randn(b, s, hk, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
        g = torch.randn_like(q)

        def step():
            out = pfa.flash_attn_func(q, k, v, causal=causal)
            torch.autograd.grad(out, (q, k, v), g)
        ms = triton.testing.do_bench(step, warmup=50, rep=300)
        fl = 4 * b * h * s * s * d * 3.5 / (2 if causal else 1)
        print(f"gqa h={h} hk={hk} d={d} causal={int(causal)} s={s} fwdbwd {ms:.3f} ms {fl / ms / 1e9:.1f} TFLOP/s",
              flush=True)
