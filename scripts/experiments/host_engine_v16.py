"""Where the autograd engine's device thread costs host time (v15: a dense b4 1k forward+backward
took 377 us with the backward on the calling thread and 808 us on the device thread, while the
backward's own Python is ~75 us; performance.md v15 items 5 and 9). Host us per forward +
autograd.grad, the queue never drained (a 4k step keeps the GPU busy), for:
  - a Python autograd.Function whose backward does nothing (the engine's floor for a Python node),
    and ones whose backward runs N cheap Python operations (N = 100, 1000): the slope is the
    device thread's cost per operation, against the calling thread's;
  - the same with sys.setswitchinterval(1e-6): if the hand-off of the GIL between the threads
    is what waits, this moves it;
  - ours (flash_attn_func, causal), each on the device thread and on the calling thread.
    PYTHONPATH=src python3 scripts/experiments/host_engine_v16.py
"""
import sys
import time

import torch

import pyflashattn as pfa


def make(n_ops):
    class Node(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q, k, v):
            return q.clone()

        @staticmethod
        def backward(ctx, g):
            x = 0
            for i in range(n_ops):
                x += i
            return g, g, g
    return Node


def host_us(step, n=100):
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(n):
        step()
    us = (time.perf_counter() - t) / n * 1e6
    torch.cuda.synchronize()
    return us


def main():
    q, k, v = (torch.randn(4, 1024, 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
               for _ in range(3))
    g = torch.randn_like(q)
    steps = {f"noop+{n}": (lambda node=make(n): torch.autograd.grad(node.apply(q, k, v), (q, k, v), g))
             for n in (0, 100, 1000)}
    steps["ours"] = lambda: torch.autograd.grad(pfa.flash_attn_func(q, k, v, causal=True), (q, k, v), g)
    default_interval = sys.getswitchinterval()
    for interval in (default_interval, 1e-6):
        sys.setswitchinterval(interval)
        for name, step in steps.items():
            engine = host_us(step)
            with torch.autograd.set_multithreading_enabled(False):
                calling = host_us(step)
            print(f"switchinterval {interval:g}: {name:9s} device thread {engine:7.1f} us, calling thread "
                  f"{calling:7.1f} us, difference {engine - calling:7.1f} us", flush=True)
    sys.setswitchinterval(default_interval)


if __name__ == "__main__":
    main()
