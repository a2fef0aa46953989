"""One-off (v5): the same block-sparse launches under several program orders (16k, 16 heads,
d=128, bf16), by swapping ``kernels.schedule.longest_first``.

    PYTHONPATH=src python3 scripts/experiments/sparse_order.py

The run in docs/logs/h200-sparse-order-v5.log compared the orders below with the schedule of
commit 2c3aa18 ("log2": rows ranked by floor(log2(blocks + 1))).
"""
import torch
import triton

import pyflashattn as pfa
from pyflashattn.block_mask import create_block_mask, local_global_mask, sliding_window_mask
from pyflashattn.kernels import schedule

shipped = schedule.longest_first


def natural(num, full, batch, heads, group, num_rows, rpb):
    return torch.arange(batch * heads // group * num_rows, dtype=torch.int32, device=num.device)


def descending(num, full, batch, heads, group, num_rows, rpb):  # the dense order: last rows of each head first
    r = torch.arange(batch * heads // group * num_rows, device=num.device)
    return ((r // num_rows) * num_rows + num_rows - 1 - r % num_rows).to(torch.int32)


def exact(num, full, batch, heads, group, num_rows, rpb):
    work = (num + full).expand(batch, heads, -1).reshape(batch, heads // group, group, -1).sum(2)
    work = work.repeat_interleave(rpb, dim=-1)[..., :num_rows]
    return torch.sort(work.flatten(), descending=True, stable=True).indices.to(torch.int32)


S, H, D = 16384, 16, 128
q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
g = torch.randn_like(q)
w = S // 20
for name, mod in (("sliding", sliding_window_mask(2 * w, S, S)), ("local+global", local_global_mask(w, 128))):
    bm = create_block_mask(mod, None, None, S, S, device="cuda")
    for oname, fn in (("shipped", shipped), ("natural", natural), ("descending", descending), ("exact", exact)):
        schedule.longest_first = fn

        def f():
            return pfa.block_sparse_attn_func(q, k, v, bm)

        def fb():
            torch.autograd.grad(f(), (q, k, v), g)
        with torch.no_grad():
            t_f = triton.testing.do_bench(f, warmup=50, rep=300)
        t_fb = triton.testing.do_bench(fb, warmup=30, rep=300)
        print(f"{name:13s} {oname:11s} fwd {t_f:.3f} ms  fwd+bwd {t_fb:.3f} ms", flush=True)
schedule.longest_first = shipped
