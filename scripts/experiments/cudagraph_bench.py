"""One-off (ninth session): forward + backward of launch-bound shapes, eager against one CUDA
graph (captured once, replayed), ours and SDPA's flash and cuDNN backends. us per iteration
(CUDA events around 50 iterations, after warm-up; eager includes the host time that graphs
remove).

    PYTHONPATH=src python3 scripts/experiments/cudagraph_bench.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

import pyflashattn as pfa
from pyflashattn.bench.timing import cuda_graphed


def per_iter_us(fn, iters=50):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    for _ in range(iters):
        fn()
    b.record()
    torch.cuda.synchronize()
    return a.elapsed_time(b) / iters * 1e3


def providers(b, s, h, d, causal):
    q, k, v = (torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    g = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)
    qh, kh, vh = (t.detach().transpose(1, 2).requires_grad_() for t in (q, k, v))
    gh = g.transpose(1, 2)

    def ours():
        pfa.flash_attn_func(q, k, v, causal=causal).backward(g)

    def sdpa(backend):
        def step():
            with sdpa_kernel(backend):
                F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal).backward(gh)
        return step
    return {"pyfa": ours, "sdpa flash": sdpa(SDPBackend.FLASH_ATTENTION),
            "sdpa cudnn": sdpa(SDPBackend.CUDNN_ATTENTION)}


def main():
    shapes = [(1, 512, 16, 64, True), (1, 512, 16, 128, True), (1, 512, 16, 128, False), (8, 1024, 12, 64, True),
              (2, 4096, 12, 64, True), (32, 512, 16, 128, True)]
    print(f"{'shape':28s} {'provider':12s} {'eager us':>10s} {'graph us':>10s}", flush=True)
    for b, s, h, d, causal in shapes:
        name = f"b{b} s{s} h{h} d{d}{' causal' if causal else ''}"
        for prov, step in providers(b, s, h, d, causal).items():
            try:
                eager = per_iter_us(step)
                graph = per_iter_us(cuda_graphed(step))
            except Exception as e:   # a backend that refuses the shape or capture
                print(f"{name:28s} {prov:12s} failed: {type(e).__name__}: {str(e)[:80]}", flush=True)
                continue
            print(f"{name:28s} {prov:12s} {eager:10.1f} {graph:10.1f}", flush=True)


if __name__ == "__main__":
    main()
