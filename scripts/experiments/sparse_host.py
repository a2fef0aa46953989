"""One-off (v5): a block-sparse forward's GPU time (the queue pre-filled by matmuls, so host
time does not count) and its host time per call, under the shipped and the natural order.

    PYTHONPATH=src python3 scripts/experiments/sparse_host.py
"""
import time

import torch

import pyflashattn as pfa
from pyflashattn.block_mask import create_block_mask, local_global_mask, sliding_window_mask
from pyflashattn.kernels import schedule

shipped = schedule.longest_first


def natural(num, full, batch, heads, group, num_rows, rpb):
    return torch.arange(batch * heads // group * num_rows, dtype=torch.int32, device=num.device)


S, H, D = 16384, 16, 128
q, k, v = (torch.randn(1, S, H, D, device="cuda", dtype=torch.bfloat16) for _ in range(3))
a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
w = S // 20
for mname, mod in (("sliding", sliding_window_mask(2 * w, S, S)), ("local+global", local_global_mask(w, 128))):
    bm = create_block_mask(mod, None, None, S, S, device="cuda")
    for oname, fn in (("shipped", shipped), ("natural", natural), ("shipped", shipped)):
        schedule.longest_first = fn

        def f():
            return pfa.block_sparse_attn_func(q, k, v, bm)
        for _ in range(5):
            f()
        torch.cuda.synchronize()
        gpu = []
        for _ in range(20):
            for _ in range(3):
                a @ a  # ~3 ms of queue ahead of the call
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            f()
            e1.record()
            torch.cuda.synchronize()
            gpu.append(e0.elapsed_time(e1))
        for _ in range(3):
            a @ a
        t = time.perf_counter()
        for _ in range(5):
            f()
        host = (time.perf_counter() - t) / 5 * 1e6
        torch.cuda.synchronize()
        gpu.sort()
        print(f"{mname:13s} {oname:8s} fwd GPU median {gpu[10]:.3f} ms min {gpu[0]:.3f}  host {host:.0f} us/call",
              flush=True)
schedule.longest_first = shipped
