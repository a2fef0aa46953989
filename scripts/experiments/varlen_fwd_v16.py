"""Varlen's forward against dense at b=4 h=16 d=128 causal (features-v16: 2.6x at 1k, +15 % at
4k): host time per call (no sync), wall per call, and the kernel's own time by torch.profiler,
dense and varlen in one process, so host and kernel can be told apart."""
import time

import torch
from torch.profiler import ProfilerActivity, profile

import pyflashattn as pfa

b, h, d = 4, 16, 128
for n in (1024, 4096):
    q, k, v = (torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    cu = torch.arange(0, (b + 1) * n, n, device="cuda", dtype=torch.int32)
    qp, kp, vp = (t.reshape(b * n, h, d) for t in (q, k, v))
    calls = {"dense": lambda: pfa.flash_attn_func(q, k, v, causal=True),
             "varlen": lambda: pfa.flash_attn_varlen_func(qp, kp, vp, cu, cu, n, n, causal=True)}
    for name, fn in calls.items():
        for _ in range(30):
            fn()
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(100):
            fn()
        host = (time.perf_counter() - t) * 1e4
        torch.cuda.synchronize()
        wall = (time.perf_counter() - t) * 1e4
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(20):
                fn()
            torch.cuda.synchronize()
        kernels = {e.key: e.device_time_total / 20 for e in prof.key_averages() if e.device_time_total > 0}
        print(f"n={n} {name:6s} host {host:6.1f} us  wall {wall:6.1f} us  kernels "
              + ", ".join(f"{k_[:40]} {t_:.1f} us" for k_, t_ in kernels.items()))
