"""Two host-time questions v16 left open (docs/performance.md v16 items 6 and 7), one process,
~1 minute on the H200:

1. Launches from the autograd engine's device thread. v16's probe launched 50 in-place adds per
   backward, which kept the GPU busier than the host (no reading). Here 0, 5 and 20 launches of
   a one-element add per backward, device thread against calling thread, interleaved 5 times
   (min taken): the slope of the difference per launch.
2. Varlen's forward against dense's: ~30-50 us more host time per call on the H200 (v16 item
   6), ~4 us on a CPU with the launch stood in (host_cpu_profile_v16.py). cProfile of 500 calls
   each, top entries by own time: what the GPU host adds.
    PYTHONPATH=src python3 scripts/experiments/host_probe_v17.py
"""
import cProfile
import pstats

import torch

import pyflashattn as pfa
from host_engine_v16 import host_us


def launch_node(n_launches):
    class Node(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q):
            ctx.one = q.new_zeros(1)
            return q.clone()

        @staticmethod
        def backward(ctx, g):
            for _ in range(n_launches):
                ctx.one.add_(1)
            return g
    return Node


def engine_launches():
    q = torch.randn(4, 1024, 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(q)
    best = {}
    for _ in range(5):
        for n in (0, 5, 20):
            node = launch_node(n)
            step = (lambda node=node: torch.autograd.grad(node.apply(q), (q,), g))
            engine = host_us(step, 200)
            with torch.autograd.set_multithreading_enabled(False):
                calling = host_us(step, 200)
            old = best.get(n, (1e9, 1e9))
            best[n] = (min(old[0], engine), min(old[1], calling))
    for n, (engine, calling) in best.items():
        print(f"launches x{n:2d}: device thread {engine:7.1f} us, calling thread {calling:7.1f} us, "
              f"difference {engine - calling:7.1f} us (min of 5)", flush=True)


def varlen_profile():
    b, n, h, d = 4, 1024, 16, 128
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.arange(0, (b + 1) * n, n, device="cuda", dtype=torch.int32)
    qp, kp, vp = (t.reshape(b * n, h, d) for t in (q, k, v))
    calls = {"dense": lambda: pfa.flash_attn_func(q, k, v, causal=True),
             "varlen": lambda: pfa.flash_attn_varlen_func(qp, kp, vp, cu, cu, n, n, causal=True)}
    for name, fn in calls.items():
        print(f"{name}: {host_us(fn, 500):.1f} us host per forward", flush=True)
    for name, fn in calls.items():
        for _ in range(20):
            fn()
        torch.cuda.synchronize()
        prof = cProfile.Profile()
        prof.enable()
        for _ in range(500):
            fn()
        prof.disable()
        torch.cuda.synchronize()
        print(f"== {name}", flush=True)
        pstats.Stats(prof).sort_stats("tottime").print_stats(16)


if __name__ == "__main__":
    engine_launches()
    varlen_profile()
