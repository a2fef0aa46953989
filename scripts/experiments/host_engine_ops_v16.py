"""Where the autograd engine's device thread costs host time, by kind of operation (v16:
host_engine_v16.py found a fixed ~50-90 us for a Python node that does nothing, no slope for
Python operations, but 230-270 us for ours at b4 1k d=128 causal). Host us per forward +
autograd.grad of a Python autograd.Function whose backward runs N of one torch operation, on
the engine's device thread and on the calling thread; the slope of the difference per
operation says what the device thread makes dear: allocations (torch.empty), kernel launches
(an in-place add on a small tensor), or reading a tensor's metadata (stride/data_ptr).
    PYTHONPATH=src python3 scripts/experiments/host_engine_ops_v16.py
"""
import torch

from host_engine_v16 import host_us


def make(kind, n_ops):
    class Node(torch.autograd.Function):
        @staticmethod
        def forward(ctx, q):
            return q.clone()

        @staticmethod
        def backward(ctx, g):
            small = g.new_zeros(256)
            for _ in range(n_ops):
                if kind == "empty":
                    torch.empty(4096, device=g.device)
                elif kind == "launch":
                    small.add_(1)
                else:
                    g.stride(), g.data_ptr(), g.shape
            return g
    return Node


def main():
    q = torch.randn(4, 1024, 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    g = torch.randn_like(q)
    for kind in ("empty", "launch", "meta"):
        for n in (0, 10, 50):
            node = make(kind, n)
            step = (lambda node=node: torch.autograd.grad(node.apply(q), (q,), g))
            engine = host_us(step, 200)
            with torch.autograd.set_multithreading_enabled(False):
                calling = host_us(step, 200)
            print(f"{kind:6s} x{n:3d}: device thread {engine:7.1f} us, calling thread {calling:7.1f} us, "
                  f"difference {engine - calling:7.1f} us", flush=True)


if __name__ == "__main__":
    main()
