"""One-off (ninth session): why the GPT-2 step at 4k x 2 got slower with the backward plan on
(gpu_v9 bench: 27.6 -> 39.0 ms). One attention layer of the GPT-2 shape (q, k, v views of a
fused qkv projection, as pyflashattn.nn does), forward + backward with ops.PLAN_BACKWARD off and
on in one process: wall time per iteration, which path the backward took, and the GPU kernels'
time from the profiler.

    PYTHONPATH=src python3 scripts/experiments/plan_train.py
"""
import time

import torch

import pyflashattn as pfa
from pyflashattn import ops
from pyflashattn.kernels import bwd

COUNTS = {"run": 0, "run_none": 0, "build": 0, "build_none": 0}
_run, _build = bwd.BackwardPlan.run, bwd.plan_bwd


def counted_run(self, *a):
    r = _run(self, *a)
    COUNTS["run"] += 1
    COUNTS["run_none"] += r is None
    return r


def counted_build(*a):
    r = _build(*a)
    COUNTS["build"] += 1
    COUNTS["build_none"] += r is None
    return r


bwd.BackwardPlan.run = counted_run
bwd.plan_bwd = counted_build


def layer(b, s, h, d, views):
    x = torch.randn(b, s, 3 * h, d, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    if views:
        q, k, v = x.split([h, h, h], dim=2)
    else:
        q, k, v = (t.contiguous() for t in x.split([h, h, h], dim=2))
    g = torch.randn(b, s, h, d, device="cuda", dtype=torch.bfloat16)

    def step():
        out = pfa.flash_attn_func(q, k, v, causal=True)
        out.backward(g, retain_graph=True)
    return step


def wall(step, iters):
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(iters):
        step()
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / iters * 1e3


def kernels(step):
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        if e.device_type.name == "CUDA" and e.count:
            rows.append((e.key[:60], e.count, e.device_time_total / e.count))
    return sorted(rows, key=lambda r: -r[2])[:8]


def main():
    for b, s, h, d, views in ((2, 4096, 12, 64, True), (2, 4096, 12, 64, False), (1, 512, 16, 128, True)):
        step = layer(b, s, h, d, views)
        print(f"== b{b} s{s} h{h} d{d} {'views of qkv' if views else 'contiguous'}", flush=True)
        for plan in (False, True, False, True):
            ops.PLAN_BACKWARD = plan
            for key in COUNTS:
                COUNTS[key] = 0
            step(); step()
            ms = wall(step, 20)
            print(f"   plan={int(plan)} {ms:8.3f} ms/iter  {COUNTS}", flush=True)
        for plan in (False, True):
            ops.PLAN_BACKWARD = plan
            print(f"   kernels, plan={int(plan)} (us per call):")
            for name, n, us in kernels(step):
                print(f"      {name:60s} x{n:3d} {us:9.1f}")


if __name__ == "__main__":
    main()
