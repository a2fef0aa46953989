"""Why the forward plan lost host time at b=1 s=512 d=128 causal (gpu_v16.sh 1: 87 -> 101 us per
forward) while it won at b=16 1k: whether a plan is made and whether it runs, then host time per
forward with the plan off / on alternating in one process (ops.PLAN_FORWARD)."""
import time

import torch

import pyflashattn as pfa
from pyflashattn import ops

for b, n, d in ((1, 512, 128), (2, 512, 128), (1, 1024, 128), (16, 1024, 128), (1, 512, 64)):
    h = 2048 // d
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ops.PLAN_FORWARD = True
    for _ in range(3):
        pfa.flash_attn_func(q, k, v, causal=True)
    plan = ops._cached_fwd_plan(q, k, v, d ** -0.5, -1, 0, 0.0)
    ran = plan.run(q, k, v) is not None if plan is not None else None
    times = {False: [], True: []}
    for rep in range(6):
        for on in (False, True):
            ops.PLAN_FORWARD = on
            for _ in range(10):
                pfa.flash_attn_func(q, k, v, causal=True)
            torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(200):
                pfa.flash_attn_func(q, k, v, causal=True)
            times[on].append((time.perf_counter() - t) / 200 * 1e6)
            torch.cuda.synchronize()
    off, on = min(times[False]), min(times[True])
    print(f"b={b} n={n} d={d} causal: plan {'made' if plan is not None else 'none'}, runs {ran}; "
          f"host per forward (min of 6) off {off:6.1f} us, on {on:6.1f} us ({on / off - 1:+.1%})")
