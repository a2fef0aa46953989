"""One-off (sixth session): kernel times of block-sparse forward+backward against FlexAttention's
(b1, h16, d=128, bf16, 16k), from torch.profiler, to see which backward kernel holds the gap.

    PYTHONPATH=src python3 scripts/experiments/sparse_profile.py
"""
import torch
from torch.nn.attention.flex_attention import create_block_mask as flex_block_mask
from torch.nn.attention.flex_attention import flex_attention
from torch.profiler import ProfilerActivity, profile

import pyflashattn as pfa
from pyflashattn.bench.sparse import mask_mod_for
from pyflashattn.block_mask import create_block_mask

torch._dynamo.config.recompile_limit = 64
flex = torch.compile(flex_attention, dynamic=False)
S, H, D, N = 16384, 16, 128, 5
for mask in ("sliding", "document"):
    mod = mask_mod_for(mask, S, "cuda", 128)
    q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn_like(q)
    bm = create_block_mask(mod, None, None, S, S, device="cuda")
    qt, kt, vt = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    gt = g.transpose(1, 2)
    fbm = flex_block_mask(mod, None, None, S, S, device="cuda")
    runs = {"pyfa": lambda: torch.autograd.grad(pfa.block_sparse_attn_func(q, k, v, bm), (q, k, v), g),
            "flex": lambda: torch.autograd.grad(flex(qt, kt, vt, block_mask=fbm), (qt, kt, vt), gt)}
    for name, fn in runs.items():
        for _ in range(5):
            fn()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(N):
                fn()
            torch.cuda.synchronize()
        print(f"== {S} {mask} {name}: per call", flush=True)
        for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:8]:
            print(f"  {e.device_time_total / N / 1e3:8.3f} ms  x{e.count // N}  {e.key[:90]}", flush=True)
